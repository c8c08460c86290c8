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
	// Backup and harvest snapshots.
	"Microsoft.Compute/snapshots/read",
	"Microsoft.Compute/snapshots/write",
	"Microsoft.Compute/snapshots/delete",
	// RescueAttach and OfflinePatch: VM sizes (data-disk limit, memory).
	"Microsoft.Compute/skus/read",
}

// DataRoles are the data-plane and built-in roles the app's identity needs, by built-in role name.
var DataRoles = []string{
	"Storage Blob Data Contributor", // audit, locks, dumps, agent binary, user delegation SAS
	"Azure Service Bus Data Sender",
	"Azure Service Bus Data Receiver",
	"EventGrid Data Sender",
	"Support Request Contributor",
}
