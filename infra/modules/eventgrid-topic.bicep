// Optional Event Grid custom topic for vmrescue's lifecycle CloudEvents (incident opened, closed,
// failed). Local (key) authentication is off: the app publishes with its identity (EventGrid Data
// Sender, see app-access.bicep).

param name string
param location string
param tags object

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    minimumTlsVersionAllowed: '1.2'
  }
}

output id string = topic.id
output name string = topic.name
// https://<topic>.<region>-1.eventgrid.azure.net/api/events: what VMRESCUE_EVENTGRID_TOPIC_ENDPOINT takes.
output endpoint string = topic.properties.endpoint
