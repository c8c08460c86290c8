// One rescue VM: Windows Server, no public IP, a NIC in a given subnet, tagged. vmrescue attaches
// copies of crashed OS disks to it as data disks and runs the rescue agent on it with managed Run
// Command, so its size's data-disk limit is the number of incidents it can serve at once (one LUN
// each). It needs the VM agent and outbound access to Azure Storage (the agent downloads itself and
// uploads dumps over HTTPS), nothing inbound.

param name string
param location string

@description('Availability zone, or empty for a regional VM. A zonal VM can only take disks from its own zone.')
param zone string = ''

@description('Subnet of the NIC.')
param subnetId string

@description('VM size; its data-disk limit bounds the parallel incidents.')
param vmSize string

param adminUsername string

@secure()
param adminPassword string

@description('Windows Server image SKU. Prefer one that differs from the fleet\'s images: a disk copied from the same image collides with the rescue VM\'s own disk signature.')
param imageSku string = '2022-datacenter-azure-edition'

param tags object

resource nic 'Microsoft.Network/networkInterfaces@2023-11-01' = {
  name: '${name}-nic'
  location: location
  tags: tags
  properties: {
    ipConfigurations: [
      {
        name: 'ipconfig1'
        properties: {
          privateIPAllocationMethod: 'Dynamic'
          subnet: {
            id: subnetId
          }
        }
      }
    ]
  }
}

resource vm 'Microsoft.Compute/virtualMachines@2024-07-01' = {
  name: name
  location: location
  tags: tags
  zones: empty(zone) ? null : array(zone)
  properties: {
    hardwareProfile: {
      vmSize: vmSize
    }
    osProfile: {
      computerName: take(name, 15)
      adminUsername: adminUsername
      adminPassword: adminPassword
      windowsConfiguration: {
        provisionVMAgent: true
        enableAutomaticUpdates: true
      }
    }
    storageProfile: {
      imageReference: {
        publisher: 'MicrosoftWindowsServer'
        offer: 'WindowsServer'
        sku: imageSku
        version: 'latest'
      }
      osDisk: {
        name: '${name}-osdisk'
        createOption: 'FromImage'
        caching: 'ReadWrite'
        deleteOption: 'Delete'
        managedDisk: {
          storageAccountType: 'Premium_LRS'
        }
      }
    }
    networkProfile: {
      networkInterfaces: [
        {
          id: nic.id
          properties: {
            deleteOption: 'Delete'
          }
        }
      ]
    }
    securityProfile: {
      securityType: 'TrustedLaunch'
      uefiSettings: {
        secureBootEnabled: true
        vTpmEnabled: true
      }
    }
    diagnosticsProfile: {
      bootDiagnostics: {
        enabled: true
      }
    }
  }
}

output id string = vm.id
