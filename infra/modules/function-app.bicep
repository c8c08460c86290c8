// The Function App: Linux, custom handler (the Go binary "handler"), on Flex Consumption by
// default, or on Elastic Premium for teams that want a classic VNet-integrated plan.
//
// App settings come in three groups, each an object whose keys are the setting names:
//  - hostSettings: the Functions host's own identity-based connections (AzureWebJobsStorage,
//    the "ServiceBus" connection of the queue triggers) and telemetry;
//  - premiumSettings: what only Elastic Premium takes (Flex Consumption sets the runtime in
//    functionAppConfig.runtime and refuses FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION
//    and WEBSITE_RUN_FROM_PACKAGE as app settings);
//  - handlerSettings (a parameter, built in main.bicep): every setting the handler reads.
// internal/infratest checks that together they set every setting of internal/config marked Infra.

param name string
param planName string
param location string
param tags object

@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param planType string

@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param premiumSku string = 'EP1'

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

param storageAccountName string

@description('Container of the app package.')
param deploymentContainerName string

@description('Elastic Premium: name of the package blob in the deployment container.')
param packageBlobName string = 'vmrescue.zip'

param appInsightsName string

@description('Service Bus host name, such as name.servicebus.windows.net.')
param serviceBusNamespace string

@description('Optional subnet for outbound VNet integration. Flex Consumption: delegated to Microsoft.App/environments. Elastic Premium: delegated to Microsoft.Web/serverFarms. Empty: none.')
param subnetId string = ''

@description('Flex Consumption: most instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Flex Consumption: memory of an instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Elastic Premium: most workers.')
@minValue(1)
@maxValue(100)
param premiumMaximumWorkers int = 20

@description('Every app setting the handler reads (VMRESCUE_*, AZURE_CLIENT_ID), by name.')
param handlerSettings object

var isFlex = planType == 'FlexConsumption'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

var blobEndpoint = storage.properties.primaryEndpoints.blob

var hostSettings = {
  // Host storage with the user-assigned identity: no connection string, shared keys are off.
  'AzureWebJobsStorage__blobServiceUri': blobEndpoint
  'AzureWebJobsStorage__credential': 'managedidentity'
  'AzureWebJobsStorage__clientId': identityClientId
  // The "ServiceBus" connection of the queue triggers (function.json connection), also read by the
  // handler to send the next stage's message.
  'ServiceBus__fullyQualifiedNamespace': serviceBusNamespace
  'ServiceBus__credential': 'managedidentity'
  'ServiceBus__clientId': identityClientId
  // Telemetry with Entra ID authentication; the connection string only names the resource.
  'APPLICATIONINSIGHTS_CONNECTION_STRING': appInsights.properties.ConnectionString
  'APPLICATIONINSIGHTS_AUTHENTICATION_STRING': 'ClientId=${identityClientId};Authorization=AAD'
}

var premiumSettings = {
  'FUNCTIONS_EXTENSION_VERSION': '~4'
  'FUNCTIONS_WORKER_RUNTIME': 'custom'
  // Runs the package from blob storage with the identity; no Azure Files content share (it would
  // need a shared key).
  'WEBSITE_RUN_FROM_PACKAGE': '${blobEndpoint}${deploymentContainerName}/${packageBlobName}'
  'WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID': identityId
}

var flexAppConfig = {
  deployment: {
    storage: {
      type: 'blobContainer'
      value: '${blobEndpoint}${deploymentContainerName}'
      authentication: {
        type: 'UserAssignedIdentity'
        userAssignedIdentityResourceId: identityId
      }
    }
  }
  scaleAndConcurrency: {
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
  runtime: {
    name: 'custom'
    version: '1.0'
  }
}

var flexSiteConfig = {
  minTlsVersion: '1.2'
  ftpsState: 'Disabled'
  http20Enabled: true
}

var premiumSiteConfig = {
  // The custom handler stack on Linux: no language image.
  linuxFxVersion: ''
  minTlsVersion: '1.2'
  ftpsState: 'Disabled'
  http20Enabled: true
  use32BitWorkerProcess: false
  minimumElasticInstanceCount: 1
  vnetRouteAllEnabled: !empty(subnetId)
  // Scale on the Service Bus queues from inside the VNet when the app is integrated.
  functionsRuntimeScaleMonitoringEnabled: !empty(subnetId)
}

var flexPlanSku = {
  name: 'FC1'
  tier: 'FlexConsumption'
}

var premiumPlanSku = {
  name: premiumSku
  tier: 'ElasticPremium'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: isFlex ? 'functionapp' : 'elastic'
  sku: isFlex ? flexPlanSku : premiumPlanSku
  properties: {
    reserved: true
    maximumElasticWorkerCount: isFlex ? null : premiumMaximumWorkers
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the app to deploy to by this tag (azure.yaml service "vmrescue").
  tags: union(tags, {
    'azd-service-name': 'vmrescue'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    reserved: true
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
    siteConfig: isFlex ? flexSiteConfig : premiumSiteConfig
    functionAppConfig: isFlex ? flexAppConfig : null
  }
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(hostSettings, isFlex ? {} : premiumSettings, handlerSettings)
}

// No basic (publishing profile) credentials: deployments sign in with Entra ID.
resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
