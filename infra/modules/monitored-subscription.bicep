// Everything vmrescue needs in one subscription it watches and acts in: the Resource Health system
// topic with its event subscriptions to HealthAlert, and the app identity's subscription roles.
//
// main.bicep deploys this once per subscription: the app's own subscription and each entry of
// monitoredSubscriptionIds (multi-subscription setup, docs/deploy.md). The "vmrescue operator"
// role must list every such subscription in its assignableScopes (role-definitions.bicep).

targetScope = 'subscription'

@description('Resource group of the system topic in this subscription.')
param resourceGroupName string

@description('Create the resource group (other subscriptions), or use an existing one (the app\'s own group).')
param createResourceGroup bool

param location string
param tags object

@description('Name of the Health Resources system topic of this subscription.')
param systemTopicName string

@description('Principal (object) id of the Function App identity.')
param appPrincipalId string

@description('Name (GUID) of the "vmrescue operator" custom role.')
param operatorRoleName string

@description('See subscription-access.bicep.')
param pipelinePrincipalId string = ''

@description('Resource id of the Function App.')
param functionAppId string

@description('See health-alerts.bicep.')
param subscribeHealthAlerts bool

param deadLetterStorageAccountId string
param deadLetterContainerName string

@description('Suffix that keeps nested deployment names of several vmrescue environments apart.')
param deploymentSuffix string

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = if (createResourceGroup) {
  name: resourceGroupName
  location: location
  tags: tags
}

module access 'subscription-access.bicep' = {
  name: 'vmrescue-access-${deploymentSuffix}'
  params: {
    appPrincipalId: appPrincipalId
    operatorRoleName: operatorRoleName
    pipelinePrincipalId: pipelinePrincipalId
  }
}

module health 'health-alerts.bicep' = {
  name: 'vmrescue-health-${deploymentSuffix}'
  scope: resourceGroup(resourceGroupName)
  dependsOn: [
    group
  ]
  params: {
    systemTopicName: systemTopicName
    tags: tags
    functionAppId: functionAppId
    subscribe: subscribeHealthAlerts
    deadLetterStorageAccountId: deadLetterStorageAccountId
    deadLetterContainerName: deadLetterContainerName
  }
}

output systemTopicPrincipalId string = health.outputs.principalId
