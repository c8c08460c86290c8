// The storage account of vmrescue: the audit trail, VM locks and LUN reservations, harvested dumps,
// the rescue agent binary, Event Grid dead letters and the app package. Shared key access is off:
// everything (the Functions host, the handler, Event Grid, the deploy script) signs in with Entra
// ID, and the SAS the agent gets are user delegation SAS.

@description('Storage account name (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Days each version of an audit blob stays immutable (write once, read many). Appends stay allowed.')
@minValue(1)
@maxValue(146000)
param auditRetentionDays int

@description('Days after its last change a dump moves to the cool tier.')
@minValue(1)
param dumpsCoolAfterDays int

@description('Days after its last change a dump is deleted. Must be more than dumpsCoolAfterDays.')
@minValue(2)
param dumpsDeleteAfterDays int

@description('Days Event Grid dead letters are kept.')
@minValue(1)
param deadLetterRetentionDays int = 30

@description('Container of the app package (Flex Consumption deployment storage, or the Elastic Premium run-from-package blob).')
param deploymentContainerName string

// Container names are the handler's defaults (VMRESCUE_*_CONTAINER); main.bicep passes the outputs
// below to the app settings, so the two cannot differ.
var auditContainerName = 'audit'
var dumpsContainerName = 'dumps'
var locksContainerName = 'locks'
var toolsContainerName = 'tools'
var deadLetterContainerName = 'deadletters'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    // Blob index tags (the audit trail finds incidents by vm and state) need a flat namespace.
    isHnsEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // Version-level immutability of the audit container needs versioning.
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

// The audit trail: one append blob per incident. Every version is immutable for auditRetentionDays;
// protected append writes let the handler append records to a locked blob, never change or delete
// one. The policy starts unlocked; docs/deploy.md tells how to lock it (irreversible).
resource auditContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: auditContainerName
  properties: {
    publicAccess: 'None'
    immutableStorageWithVersioning: {
      enabled: true
    }
  }
}

resource auditPolicy 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = {
  parent: auditContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: auditRetentionDays
    allowProtectedAppendWrites: true
  }
}

resource dumpsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: dumpsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource locksContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: locksContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource toolsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: toolsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Lifecycle: dumps go cool after N days and are deleted after M; old versions that locks, tools and
// dumps accumulate (versioning is on for the whole account) and dead letters are removed. The audit
// container has no rule: its immutability policy governs it.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  dependsOn: [
    blobService
  ]
  properties: {
    policy: {
      rules: [
        {
          name: 'dumps-cool-then-delete'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${dumpsContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                tierToCool: {
                  daysAfterModificationGreaterThan: dumpsCoolAfterDays
                }
                delete: {
                  daysAfterModificationGreaterThan: dumpsDeleteAfterDays
                }
              }
              version: {
                delete: {
                  daysAfterCreationGreaterThan: dumpsDeleteAfterDays
                }
              }
            }
          }
        }
        {
          name: 'locks-old-versions'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${locksContainerName}/'
              ]
            }
            actions: {
              version: {
                delete: {
                  daysAfterCreationGreaterThan: 1
                }
              }
            }
          }
        }
        {
          name: 'tools-old-versions'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${toolsContainerName}/'
              ]
            }
            actions: {
              version: {
                delete: {
                  daysAfterCreationGreaterThan: 7
                }
              }
            }
          }
        }
        {
          name: 'deadletters-expire'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${deadLetterContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: deadLetterRetentionDays
                }
              }
              version: {
                delete: {
                  daysAfterCreationGreaterThan: deadLetterRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output auditContainerName string = auditContainer.name
output dumpsContainerName string = dumpsContainer.name
output locksContainerName string = locksContainer.name
output toolsContainerName string = toolsContainer.name
output deadLetterContainerName string = deadLetterContainer.name
output deploymentContainerName string = deploymentContainer.name
