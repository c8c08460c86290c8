// Resource Health alerts of one subscription, delivered to the HealthAlert function.
//
// The Microsoft.ResourceNotifications.HealthResources system topic exists only at subscription
// scope: its source is the subscription, it is a global resource, and it lives in a resource group
// of that subscription. One topic per subscription; this module is deployed once per monitored
// subscription (monitored-subscription.bicep).
//
// Whoever deploys the event subscriptions needs
// Microsoft.ResourceNotifications/systemTopics/subscribeToHealthResources/action on the
// subscription (Owner and Contributor have it; so does the built-in role "Azure Resource
// Notifications System Topics Subscriber", see subscription-access.bicep).

@description('Name of the system topic.')
param systemTopicName string

param tags object

@description('Resource id of the Function App that receives the alerts.')
param functionAppId string

@description('Name of the Event Grid-triggered function (the contract: HealthAlert).')
param functionName string = 'HealthAlert'

@description('Create the event subscriptions. Event Grid checks that the function exists, so the first deployment, before the code is deployed, leaves them out; infra/deploy.sh and the azd postdeploy hook deploy again with true.')
param subscribe bool

@description('Storage account that receives undeliverable events.')
param deadLetterStorageAccountId string

param deadLetterContainerName string

@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  location: 'global'
  tags: tags
  // Dead-lettering uses this identity: the storage account has no shared keys.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: subscription().id
    topicType: 'Microsoft.ResourceNotifications.HealthResources'
  }
}

// Both subscriptions take only virtual machines.
var vmFilter = {
  operatorType: 'StringIn'
  key: 'data.resourceInfo.properties.targetResourceType'
  values: [
    'Microsoft.Compute/virtualMachines'
  ]
}

// The filters of one event subscription are ANDed, so "annotationName in [VirtualMachineCrashed]
// OR availabilityState = Unavailable" is two event subscriptions to the same function.
var healthSubscriptions = [
  {
    name: 'vmrescue-vm-crashed'
    eventType: 'Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated'
    filter: {
      operatorType: 'StringIn'
      key: 'data.resourceInfo.properties.annotationName'
      values: [
        'VirtualMachineCrashed'
      ]
    }
  }
  {
    name: 'vmrescue-vm-unavailable'
    eventType: 'Microsoft.ResourceNotifications.HealthResources.AvailabilityStatusChanged'
    filter: {
      operatorType: 'StringIn'
      key: 'data.resourceInfo.properties.availabilityState'
      values: [
        'Unavailable'
      ]
    }
  }
]

resource eventSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = [
  for s in healthSubscriptions: if (subscribe) {
    parent: topic
    name: s.name
    properties: {
      eventDeliverySchema: 'EventGridSchema'
      destination: {
        endpointType: 'AzureFunction'
        properties: {
          resourceId: '${functionAppId}/functions/${functionName}'
          maxEventsPerBatch: 1
          preferredBatchSizeInKilobytes: 64
        }
      }
      filter: {
        includedEventTypes: [
          s.eventType
        ]
        advancedFilters: [
          vmFilter
          s.filter
        ]
      }
      retryPolicy: {
        maxDeliveryAttempts: maxDeliveryAttempts
        eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
      }
      deadLetterWithResourceIdentity: {
        identity: {
          type: 'SystemAssigned'
        }
        deadLetterDestination: {
          endpointType: 'StorageBlob'
          properties: {
            resourceId: deadLetterStorageAccountId
            blobContainerName: deadLetterContainerName
          }
        }
      }
    }
  }
]

output systemTopicId string = topic.id
output principalId string = topic.identity.principalId
