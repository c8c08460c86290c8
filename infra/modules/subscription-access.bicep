// Subscription-level role assignments of one subscription vmrescue acts in.

targetScope = 'subscription'

@description('Principal (object) id of the Function App identity.')
param appPrincipalId string

@description('Name (GUID) of the "vmrescue operator" custom role.')
param operatorRoleName string

@description('Optional principal that deploys the Health Resources event subscriptions without being Owner or Contributor (a CI pipeline). Empty: none.')
param pipelinePrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param pipelinePrincipalType string = 'ServicePrincipal'

// Built-in roles.
var supportRequestContributor = 'cfd33db0-3dd1-45e3-aa9d-cdbdf3b6f24e'
var systemTopicsSubscriber = '0b962ed2-6d56-471c-bd5f-3477d83a7ba4' // Azure Resource Notifications System Topics Subscriber

// The ARM operations of the pipeline, on every VM, disk and snapshot of the subscription.
resource operator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, appPrincipalId, operatorRoleName)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', operatorRoleName)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// SupportTicket: problem classifications, name availability, ticket creation. Tickets are
// subscription resources, so this is the narrowest scope.
resource support 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, appPrincipalId, supportRequestContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', supportRequestContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Microsoft.ResourceNotifications/systemTopics/subscribeToHealthResources/action for a pipeline
// principal that is not Owner or Contributor of the subscription.
resource pipelineSubscriber 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(pipelinePrincipalId)) {
  name: guid(subscription().id, pipelinePrincipalId, systemTopicsSubscriber)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', systemTopicsSubscriber)
    principalId: pipelinePrincipalId
    principalType: pipelinePrincipalType
  }
}
