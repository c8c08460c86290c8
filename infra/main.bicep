// vmrescue on Azure: `azd up`, or `make deploy` (infra/deploy.sh) with the az CLI.
//
// Deployed at subscription scope: the resource group with the app and its resources, the custom
// roles, and for this subscription and every monitored one the Resource Health system topic and the
// app identity's subscription roles. docs/deploy.md walks through it.

targetScope = 'subscription'

// ---------------------------------------------------------------- environment

@description('Name of the environment (azd: AZURE_ENV_NAME); part of the resource names.')
@minLength(1)
@maxLength(24)
param environmentName string

@description('Region of the app and its resources.')
param location string

@description('Resource group of the app. Empty: rg-<environmentName>.')
param resourceGroupName string = ''

// ---------------------------------------------------------------- hosting

@description('FlexConsumption (default), or ElasticPremium for a classic VNet-integrated plan.')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param planType string = 'FlexConsumption'

@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param premiumSku string = 'EP1'

@description('Optional subnet for the app\'s outbound VNet integration (see function-app.bicep for the delegation each plan needs).')
param appSubnetId string = ''

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// ---------------------------------------------------------------- scope

@description('Other subscriptions whose VMs vmrescue watches and repairs (the app\'s own subscription is always included). Each gets a Health Resources system topic and the app identity\'s roles.')
param monitoredSubscriptionIds array = []

@description('Resource group of the system topic in each monitored subscription (created).')
param monitoredResourceGroupName string = 'rg-vmrescue-health'

@description('Optional resource groups (name, or subscriptionId/name) that narrow the scope further. Empty: every group.')
param allowedResourceGroups array = []

@description('A VM carrying this tag (any value) is never remediated.')
param optOutTag string = 'vmrescue-optout'

// ---------------------------------------------------------------- rescue VMs

@description('Resource ids of rescue VMs that already exist (any subscription vmrescue acts in).')
param existingRescueVmIds array = []

@description('Rescue VMs to create in the app\'s resource group, one per region (and zone) where VMs may crash: objects { name, location, subnetId, zone?, vmSize? }.')
param rescueVms array = []

@description('Incidents one rescue VM must serve at once; picks a size with that many data disks unless a VM gives vmSize.')
@minValue(1)
@maxValue(32)
param rescueParallelIncidents int = 4

param rescueAdminUsername string = 'vmrescueadmin'

@description('Local administrator password of the rescue VMs created here. Required when rescueVms is not empty.')
@secure()
param rescueAdminPassword string = ''

param rescueImageSku string = '2022-datacenter-azure-edition'

// ---------------------------------------------------------------- pipeline

@description('Minutes between restarting the patched VM and harvesting the dump (VMRESCUE_REPRO_WAIT). Also sets the Service Bus duplicate detection window, which must be longer.')
@minValue(1)
@maxValue(1440)
param reproWaitMinutes int = 10

@description('ARM write budget per subscription of the app identity, which the pipeline paces its writes to (VMRESCUE_ARM_WRITES_PER_HOUR; ARM default 1200). 0 turns pacing off.')
@minValue(0)
param armWritesPerHour int = 1200

@description('How long backup snapshots are kept after an incident closes (Go duration).')
param snapshotRetention string = '168h'

@description('An incident with no progress for this long is failed and rolled back (Go duration).')
param stallTimeout string = '2h'

param leaveDeallocated bool = true

@minValue(1)
@maxValue(100)
param maxDeliveryCount int = 10

@allowed([
  'debug'
  'info'
  'warn'
  'error'
])
param logLevel string = 'info'

// ---------------------------------------------------------------- support tickets

param supportTickets bool = true

@allowed([
  'minimal'
  'moderate'
  'critical'
  'highestcriticalimpact'
])
param supportSeverity string = 'moderate'

@description('Optional problem classification id; empty looks it up at runtime.')
param supportProblemClassification string = ''

param supportContactFirstName string = ''
param supportContactLastName string = ''
param supportContactEmail string = ''
param supportContactCountry string = 'usa'
param supportContactLanguage string = 'en-us'
param supportContactTimeZone string = 'UTC'

// ---------------------------------------------------------------- storage and events

@description('Days each audit record version stays immutable.')
@minValue(1)
param auditRetentionDays int = 365

@minValue(1)
param dumpsCoolAfterDays int = 30

@minValue(2)
param dumpsDeleteAfterDays int = 180

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('Deploy an Event Grid custom topic for lifecycle CloudEvents.')
param deployLifecycleTopic bool = false

@description('Create the Health Resources event subscriptions. They need the HealthAlert function deployed first, so the first provisioning passes false; infra/deploy.sh and the azd postdeploy hook provision again with true.')
param subscribeHealthAlerts bool = false

// ---------------------------------------------------------------- who deploys

@description('Principal id of the deployer (azd: AZURE_PRINCIPAL_ID). It may upload the app package. Empty: none.')
param deployerPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param deployerPrincipalType string = 'User'

@description('Optional CI principal that is not Owner or Contributor: gets "Azure Resource Notifications System Topics Subscriber" (subscribeToHealthResources) in every subscription.')
param pipelinePrincipalId string = ''

// ================================================================ names

var token = toLower(uniqueString(subscription().id, environmentName, location))
var groupName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
var tags = {
  'azd-env-name': environmentName
  application: 'vmrescue'
}
var deploymentContainerName = 'app-package'
var systemTopicName = 'evgst-vmrescue-health'

var allSubscriptionIds = union([
  subscription().subscriptionId
], monitoredSubscriptionIds)

// A size with enough data disks for the parallel incidents (one LUN each).
// Dsv5 data-disk limits: D2s 4, D4s 8, D8s 16, D16s 32.
var rescueDefaultSize = rescueParallelIncidents <= 4 ? 'Standard_D2s_v5' : (rescueParallelIncidents <= 8 ? 'Standard_D4s_v5' : (rescueParallelIncidents <= 16 ? 'Standard_D8s_v5' : 'Standard_D16s_v5'))

var createdRescueVmIds = [
  for v in rescueVms: resourceId(subscription().subscriptionId, groupName, 'Microsoft.Compute/virtualMachines', v.name)
]

// Longer than the longest scheduled wait: a resent HarvestDump message scheduled reproWait ahead
// must still be recognised as a duplicate. At least a day, at most the service's seven days.
var duplicateDetectionMinutes = min(max(reproWaitMinutes * 2, 1440), 10080)

// ================================================================ resources

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: groupName
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'vmrescue-identity-${token}'
  scope: group
  params: {
    name: 'id-vmrescue-${token}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'vmrescue-monitoring-${token}'
  scope: group
  params: {
    logAnalyticsName: 'log-vmrescue-${token}'
    appInsightsName: 'appi-vmrescue-${token}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'vmrescue-storage-${token}'
  scope: group
  params: {
    name: 'stvmr${token}'
    location: location
    tags: tags
    skuName: storageSku
    auditRetentionDays: auditRetentionDays
    dumpsCoolAfterDays: dumpsCoolAfterDays
    dumpsDeleteAfterDays: dumpsDeleteAfterDays
    deploymentContainerName: deploymentContainerName
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'vmrescue-servicebus-${token}'
  scope: group
  params: {
    name: 'sb-vmrescue-${token}'
    location: location
    tags: tags
    duplicateDetectionWindow: 'PT${duplicateDetectionMinutes}M'
    maxDeliveryCount: maxDeliveryCount
  }
}

module lifecycleTopic 'modules/eventgrid-topic.bicep' = if (deployLifecycleTopic) {
  name: 'vmrescue-topic-${token}'
  scope: group
  params: {
    name: 'evgt-vmrescue-${token}'
    location: location
    tags: tags
  }
}

module roles 'modules/role-definitions.bicep' = {
  name: 'vmrescue-roles-${token}'
  params: {
    environmentName: environmentName
    assignableSubscriptionIds: allSubscriptionIds
  }
}

module appAccess 'modules/app-access.bicep' = {
  name: 'vmrescue-app-access-${token}'
  scope: group
  params: {
    appPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    serviceBusName: serviceBus.outputs.name
    topicName: deployLifecycleTopic ? lifecycleTopic.outputs.name : ''
    appInsightsName: monitoring.outputs.appInsightsName
    blobTagsRoleName: roles.outputs.blobTagsRoleName
    deploymentContainerName: storage.outputs.deploymentContainerName
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
  }
}

// Every setting the handler reads, by the names internal/config gives them.
var handlerSettings = {
  'AZURE_CLIENT_ID': identity.outputs.clientId
  'VMRESCUE_STORAGE_BLOB_URL': storage.outputs.blobEndpoint
  'VMRESCUE_ALLOWED_SUBSCRIPTIONS': join(allSubscriptionIds, ',')
  'VMRESCUE_ALLOWED_RESOURCE_GROUPS': join(allowedResourceGroups, ',')
  'VMRESCUE_RESCUE_VMS': join(concat(existingRescueVmIds, createdRescueVmIds), ',')
  'VMRESCUE_REPRO_WAIT': '${reproWaitMinutes}m'
  'VMRESCUE_ARM_WRITES_PER_HOUR': string(armWritesPerHour)
  'VMRESCUE_OPTOUT_TAG': optOutTag
  'VMRESCUE_RETENTION': snapshotRetention
  'VMRESCUE_STALL_TIMEOUT': stallTimeout
  'VMRESCUE_LEAVE_DEALLOCATED': leaveDeallocated ? 'true' : 'false'
  'VMRESCUE_SUPPORT_TICKETS': supportTickets ? 'true' : 'false'
  'VMRESCUE_SUPPORT_SEVERITY': supportSeverity
  'VMRESCUE_SUPPORT_PROBLEM_CLASSIFICATION': supportProblemClassification
  'VMRESCUE_SUPPORT_CONTACT_FIRST_NAME': supportContactFirstName
  'VMRESCUE_SUPPORT_CONTACT_LAST_NAME': supportContactLastName
  'VMRESCUE_SUPPORT_CONTACT_EMAIL': supportContactEmail
  'VMRESCUE_SUPPORT_CONTACT_COUNTRY': supportContactCountry
  'VMRESCUE_SUPPORT_CONTACT_LANGUAGE': supportContactLanguage
  'VMRESCUE_SUPPORT_CONTACT_TIMEZONE': supportContactTimeZone
  'VMRESCUE_EVENTGRID_TOPIC_ENDPOINT': deployLifecycleTopic ? lifecycleTopic.outputs.endpoint : ''
  // The containers storage.bicep made.
  'VMRESCUE_AUDIT_CONTAINER': storage.outputs.auditContainerName
  'VMRESCUE_DUMPS_CONTAINER': storage.outputs.dumpsContainerName
  'VMRESCUE_LOCKS_CONTAINER': storage.outputs.locksContainerName
  'VMRESCUE_TOOLS_CONTAINER': storage.outputs.toolsContainerName
  'VMRESCUE_LOG_LEVEL': logLevel
}

module functionApp 'modules/function-app.bicep' = {
  name: 'vmrescue-app-${token}'
  scope: group
  dependsOn: [
    // Roles first, so that the host starts with access to its storage and queues.
    appAccess
  ]
  params: {
    name: 'func-vmrescue-${token}'
    planName: 'plan-vmrescue-${token}'
    location: location
    tags: tags
    planType: planType
    premiumSku: premiumSku
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    serviceBusNamespace: serviceBus.outputs.fullyQualifiedNamespace
    subnetId: appSubnetId
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    handlerSettings: handlerSettings
  }
}

module rescueVm 'modules/rescue-vm.bicep' = [
  for v in rescueVms: {
    name: 'vmrescue-rescue-${v.name}'
    scope: group
    params: {
      name: v.name
      location: v.location
      zone: contains(v, 'zone') ? v.zone : ''
      subnetId: v.subnetId
      vmSize: contains(v, 'vmSize') ? v.vmSize : rescueDefaultSize
      adminUsername: rescueAdminUsername
      adminPassword: rescueAdminPassword
      imageSku: rescueImageSku
      tags: union(tags, {
        'vmrescue-role': 'rescue-vm'
      })
    }
  }
]

// This subscription and every monitored one: system topic, event subscriptions, roles.
module subscriptions 'modules/monitored-subscription.bicep' = [
  for (subscriptionId, i) in allSubscriptionIds: {
    name: 'vmrescue-subscription-${token}-${i}'
    scope: subscription(subscriptionId)
    params: {
      resourceGroupName: subscriptionId == subscription().subscriptionId ? group.name : monitoredResourceGroupName
      createResourceGroup: subscriptionId != subscription().subscriptionId
      location: location
      tags: tags
      systemTopicName: systemTopicName
      appPrincipalId: identity.outputs.principalId
      operatorRoleName: roles.outputs.operatorRoleName
      pipelinePrincipalId: pipelinePrincipalId
      functionAppId: functionApp.outputs.id
      subscribeHealthAlerts: subscribeHealthAlerts
      deadLetterStorageAccountId: storage.outputs.id
      deadLetterContainerName: storage.outputs.deadLetterContainerName
      deploymentSuffix: token
    }
  }
]

module deadLetterAccess 'modules/deadletter-access.bicep' = {
  name: 'vmrescue-deadletter-access-${token}'
  scope: group
  params: {
    storageAccountName: storage.outputs.name
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    principalIds: [
      for (subscriptionId, i) in allSubscriptionIds: subscriptions[i].outputs.systemTopicPrincipalId
    ]
  }
}

// ================================================================ outputs (azd keeps them in the environment)

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = group.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output VMRESCUE_FUNCTION_APP_ID string = functionApp.outputs.id
output VMRESCUE_PLAN_TYPE string = planType
output VMRESCUE_STORAGE_ACCOUNT string = storage.outputs.name
output VMRESCUE_DEPLOYMENT_CONTAINER string = storage.outputs.deploymentContainerName
output VMRESCUE_SERVICEBUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output VMRESCUE_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output VMRESCUE_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output VMRESCUE_EVENTGRID_TOPIC_ENDPOINT string = deployLifecycleTopic ? lifecycleTopic.outputs.endpoint : ''
output VMRESCUE_RESCUE_VMS string = join(concat(existingRescueVmIds, createdRescueVmIds), ',')
output VMRESCUE_SUBSCRIBED_HEALTH_ALERTS bool = subscribeHealthAlerts
