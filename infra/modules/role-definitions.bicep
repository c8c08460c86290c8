// The two custom roles of vmrescue.
//
// "vmrescue operator": exactly the Azure Resource Manager actions the code performs, no more. The
// list is kept in one place in the code, internal/permissions (ARMActions), and
// internal/infratest fails when operatorActions below grants one action less or one more.
//
// "vmrescue blob index tags": the blob index tag data actions (permissions.BlobDataActions) that
// Storage Blob Data Contributor lacks; assigned on the app's storage account only.

targetScope = 'subscription'

@description('With the subscription, distinguishes the role names of several deployments in one tenant (role names are unique per tenant).')
param environmentName string

@description('Subscriptions where the operator role may be assigned: this one and every monitored subscription.')
param assignableSubscriptionIds array

var operatorActions = [
  'Microsoft.Compute/virtualMachines/read'
  'Microsoft.Compute/virtualMachines/write'
  'Microsoft.Compute/virtualMachines/deallocate/action'
  'Microsoft.Compute/virtualMachines/start/action'
  'Microsoft.Compute/virtualMachines/attachDetachDataDisks/action'
  'Microsoft.Compute/virtualMachines/retrieveBootDiagnosticsData/action'
  'Microsoft.Compute/virtualMachines/runCommands/read'
  'Microsoft.Compute/virtualMachines/runCommands/write'
  'Microsoft.Compute/virtualMachines/runCommands/delete'
  'Microsoft.Compute/disks/read'
  'Microsoft.Compute/disks/write'
  'Microsoft.Compute/disks/delete'
  'Microsoft.Compute/disks/beginGetAccess/action'
  'Microsoft.Compute/snapshots/read'
  'Microsoft.Compute/snapshots/write'
  'Microsoft.Compute/snapshots/delete'
  'Microsoft.Compute/diskEncryptionSets/read'
  'Microsoft.Compute/locations/operations/read'
  'Microsoft.Compute/locations/diskOperations/read'
  'Microsoft.Compute/skus/read'
]

var blobTagDataActions = [
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write'
  'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/filter/action'
]

resource operatorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'vmrescue-operator')
  properties: {
    roleName: 'vmrescue operator (${environmentName} ${take(subscription().subscriptionId, 8)})'
    description: 'Snapshots, copies, attaches and swaps the OS disks of crashed Windows VMs, runs the rescue agent on rescue VMs, and reads boot diagnostics.'
    type: 'CustomRole'
    assignableScopes: [
      for subscriptionId in assignableSubscriptionIds: '/subscriptions/${subscriptionId}'
    ]
    permissions: [
      {
        actions: operatorActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

resource blobTagsRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'vmrescue-blob-index-tags')
  properties: {
    roleName: 'vmrescue blob index tags (${environmentName} ${take(subscription().subscriptionId, 8)})'
    description: 'Reads, writes and queries blob index tags (the audit trail finds incidents by them).'
    type: 'CustomRole'
    assignableScopes: [
      subscription().id
    ]
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: blobTagDataActions
        notDataActions: []
      }
    ]
  }
}

// Role definition names (GUIDs), for role assignments in any assignable subscription.
output operatorRoleName string = operatorRole.name
output blobTagsRoleName string = blobTagsRole.name
