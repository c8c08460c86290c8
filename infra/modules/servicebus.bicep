// The Service Bus namespace and the seven queues of the contract: one per stage, and "failed",
// where every other queue forwards its dead letters. Local (SAS) authentication is off; the app
// sends and receives with its identity.
//
// Each queue:
//  - detects duplicates by MessageId over duplicateDetectionWindow, which main.bicep makes longer
//    than the longest scheduled wait (the reproduction wait), so a resent or re-scheduled stage
//    message is absorbed;
//  - has a lock duration that fits its stage, at most PT5M (the service maximum); the Functions
//    host renews the lock while a stage runs (host.json maxAutoLockRenewalDuration), so the lock
//    only bounds how soon a crashed instance's message comes back;
//  - dead-letters after maxDeliveryCount attempts, and on expiry.
//
// requiresDuplicateDetection cannot be changed on an existing queue: a queue made without it must
// be deleted and made again.

@description('Namespace name.')
param name string

param location string
param tags object

@description('Duplicate detection window, ISO 8601 duration (at most P7D).')
param duplicateDetectionWindow string

@description('Deliveries before a message is dead-lettered (and so forwarded to "failed").')
@minValue(1)
@maxValue(2000)
param maxDeliveryCount int = 10

@description('Time to live of a message that nobody takes; it is then dead-lettered.')
param messageTimeToLive string = 'P14D'

// The dead-letter sink. Its own dead letters stay in its dead-letter queue.
var failedQueueName = 'failed'

// The six stage queues, in pipeline order; each name is the stage's name (incident.Stages).
var stageQueues = [
  {
    // Deallocate the VM, snapshot its OS disk, wait for the snapshot to complete.
    name: 'snapshot'
    lockDuration: 'PT5M'
  }
  {
    // Reserve a LUN, create the rescue disk, attach it.
    name: 'rescue-attach'
    lockDuration: 'PT5M'
  }
  {
    // Run Command on the rescue VM: inspect, then patch (the longest stage).
    name: 'offline-patch'
    lockDuration: 'PT5M'
  }
  {
    // Detach, swap the OS disk, start the VM, schedule the harvest.
    name: 'reattach-reboot'
    lockDuration: 'PT5M'
  }
  {
    // Deallocate, snapshot, disk, attach, Run Command upload, clean up.
    name: 'harvest-dump'
    lockDuration: 'PT5M'
  }
  {
    // Two support API calls and a lifecycle event.
    name: 'support-ticket'
    lockDuration: 'PT2M'
  }
]

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource failedQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: failedQueueName
  properties: {
    // Rollback: put the original OS disk back, detach the rescue disk.
    lockDuration: 'PT5M'
    maxDeliveryCount: maxDeliveryCount
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: messageTimeToLive
    requiresSession: false
    enablePartitioning: false
    enableBatchedOperations: true
    maxSizeInMegabytes: 1024
  }
}

resource stageQueue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [
  for q in stageQueues: {
    parent: namespace
    name: q.name
    properties: {
      lockDuration: q.lockDuration
      maxDeliveryCount: maxDeliveryCount
      requiresDuplicateDetection: true
      duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
      deadLetteringOnMessageExpiration: true
      defaultMessageTimeToLive: messageTimeToLive
      forwardDeadLetteredMessagesTo: failedQueue.name
      requiresSession: false
      enablePartitioning: false
      enableBatchedOperations: true
      maxSizeInMegabytes: 1024
    }
  }
]

output id string = namespace.id
output name string = namespace.name
// Host name only (name.servicebus.windows.net in the public cloud), taken from the endpoint so that
// other clouds get their own suffix.
output fullyQualifiedNamespace string = split(split(namespace.properties.serviceBusEndpoint, '//')[1], ':')[0]
