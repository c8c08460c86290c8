// Package permissions lists, in one place, every Azure Resource Manager action vmrescue's code
// performs. The custom role in infra/ is tested against this list: it must grant each action and
// nothing more. A stage that adds an ARM call adds its action here.
package permissions

// ARMActions are the control-plane actions of the custom role "vmrescue operator".
var ARMActions = []string{
	// Snapshot, ReattachReboot, HarvestDump, rollback: read the VM and its instance view.
	"Microsoft.Compute/virtualMachines/read",
	// ReattachReboot and rollback: swap the OS disk; attaching a disk is a VM write too.
	"Microsoft.Compute/virtualMachines/write",
	"Microsoft.Compute/virtualMachines/deallocate/action",
	"Microsoft.Compute/virtualMachines/start/action",
	"Microsoft.Compute/virtualMachines/attachDetachDataDisks/action",
	"Microsoft.Compute/virtualMachines/retrieveBootDiagnosticsData/action",
	// OfflinePatch and HarvestDump: managed Run Command on the rescue VM.
	"Microsoft.Compute/virtualMachines/runCommands/read",
	"Microsoft.Compute/virtualMachines/runCommands/write",
	"Microsoft.Compute/virtualMachines/runCommands/delete",
	// Rescue and harvest disks.
	"Microsoft.Compute/disks/read",
	"Microsoft.Compute/disks/write",
	"Microsoft.Compute/disks/delete",
	// Snapshot and HarvestDump: a snapshot of a disk is a linked access check on the source disk
	// (LinkedAuthorizationFailed on snapshots/write without it).
	"Microsoft.Compute/disks/beginGetAccess/action",
	// Backup and harvest snapshots.
	"Microsoft.Compute/snapshots/read",
	"Microsoft.Compute/snapshots/write",
	"Microsoft.Compute/snapshots/delete",
	// Disks and snapshots of VMs whose disks are encrypted with customer-managed keys carry a disk
	// encryption set: creating them is a linked read of that set.
	"Microsoft.Compute/diskEncryptionSets/read",
	// Polling of long-running operations: the SDK's pollers read the Azure-AsyncOperation URLs,
	// .../locations/{region}/operations/{id} (VMs, Run Command) and .../diskOperations/{id} (disks,
	// snapshots).
	"Microsoft.Compute/locations/operations/read",
	"Microsoft.Compute/locations/diskOperations/read",
	// RescueAttach and OfflinePatch: VM sizes (data-disk limit, memory).
	"Microsoft.Compute/skus/read",
}

// BlobDataActions are the data-plane actions of the custom role "vmrescue blob index tags",
// assigned on the app's storage account next to Storage Blob Data Contributor, which does not
// include them: the audit trail sets and updates blob index tags (vm, state) and finds incidents
// by them.
var BlobDataActions = []string{
	"Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/read",     // Get Blob Tags
	"Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags/write",    // Set Blob Tags
	"Microsoft.Storage/storageAccounts/blobServices/containers/blobs/filter/action", // Find Blobs by Tags
}

// DataRoles are the data-plane and built-in roles the app's identity needs, by built-in role name.
var DataRoles = []string{
	"Storage Blob Data Contributor", // audit, locks, dumps, agent binary, user delegation SAS
	"Azure Service Bus Data Sender",
	"Azure Service Bus Data Receiver",
	"EventGrid Data Sender",
	"Support Request Contributor",
}
