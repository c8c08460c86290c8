// The user-assigned managed identity of the Function App. Every Azure call vmrescue makes (ARM,
// Blob Storage, Service Bus, Event Grid, the support API) and the Functions host's own storage and
// Service Bus connections use it; the app has no secret.

@description('Name of the identity.')
param name string

param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
