package pipeline

import (
	"fmt"
	"strings"
)

// Operation is one row of the table of ARM operations each stage makes. The table is the
// contract between the code, the documentation (README.md is generated from it and a test
// keeps them equal) and the tests, which count every request the simulator answers: a stage that
// makes more calls than its rows allow fails.
type Operation struct {
	Stage string // the function name
	Path  string // the branch of the stage this row belongs to; "" for every branch
	Op    string // the SDK client and method, without "Client"
	Count int    // requests on the path, cold caches, first delivery
	// PerRescueVM adds one request per rescue VM of the pool.
	PerRescueVM bool
	Write       bool
	Note        string
	// PerPoll: one more request per poll while work of an earlier attempt (a Run Command, a
	// snapshot's background copy) is still running; Count is without polls.
	PerPoll bool
}

// Operations is the table, stage by stage.
var Operations = []Operation{
	{"Snapshot", "", "VirtualMachines.Get", 1, false, false, "with instance view: OS, disks, encryption, tags, power state", false},
	{"Snapshot", "", "VirtualMachines.BeginDeallocate", 1, false, true, "unless already deallocated", false},
	{"Snapshot", "", "Snapshots.Get", 1, false, false, "before the create; while CompletionPercent < 100 (background copy), one more just after the end when the progress rate says it comes within 10 s; a longer copy is read again by a scheduled retry of the stage at its predicted end", true},
	{"Snapshot", "", "Snapshots.BeginCreateOrUpdate", 1, false, true, "incremental backup snapshot of the OS disk, tagged", false},

	{"RescueAttach", "", "VirtualMachines.Get", 1, true, false, "the VM with instance view (size, OS disk type, hyperVGeneration when the snapshot has none), then each rescue VM of the pool", false},
	{"RescueAttach", "", "Snapshots.Get", 1, false, false, "the backup snapshot: OS type, hyperVGeneration, copy complete", false},
	{"RescueAttach", "", "ResourceSKUs.NewListPager", 1, false, false, "the region's VM sizes (MemoryGB, MaxDataDiskCount), once per region and process", false},
	{"RescueAttach", "", "Disks.Get", 1, false, false, "before the create", false},
	{"RescueAttach", "", "Disks.BeginCreateOrUpdate", 1, false, true, "from the snapshot, in the rescue VM's zone, same OS type and hyperVGeneration, tagged", false},
	{"RescueAttach", "", "VirtualMachines.BeginAttachDetachDataDisks", 1, false, true, "attach at the reserved LUN", false},

	{"OfflinePatch", "no dump", "VirtualMachineRunCommands.GetByVirtualMachine", 1, false, false, "before the run; one more per 10 s while an earlier run still executes", true},
	{"OfflinePatch", "no dump", "VirtualMachineRunCommands.NewListByVirtualMachinePager", 1, false, false, "with instance view, before the run: no other Run Command executes on the rescue VM", false},
	{"OfflinePatch", "no dump", "VirtualMachineRunCommands.BeginCreateOrUpdate", 1, false, true, "patch unless a memory dump is there: inspect and patch in one run", false},
	{"OfflinePatch", "no dump", "VirtualMachineRunCommands.BeginDelete", 1, false, true, "once its result is read", false},
	{"OfflinePatch", "dump found", "VirtualMachineRunCommands.GetByVirtualMachine", 2, false, false, "patch (finds the dump, changes nothing), harvest: before each run; one more per 10 s while an earlier run still executes", true},
	{"OfflinePatch", "dump found", "VirtualMachineRunCommands.NewListByVirtualMachinePager", 2, false, false, "with instance view, before each run: no other Run Command executes on the rescue VM", false},
	{"OfflinePatch", "dump found", "VirtualMachineRunCommands.BeginCreateOrUpdate", 2, false, true, "patch unless a dump (there is one), then harvest", false},
	{"OfflinePatch", "dump found", "VirtualMachineRunCommands.BeginDelete", 2, false, true, "each run once its result is read", false},
	{"OfflinePatch", "dump found", "VirtualMachines.RetrieveBootDiagnosticsData", 1, false, true, "boot screenshot and serial log, copied to the dumps container", false},
	{"OfflinePatch", "dump found", "Disks.Get", 1, false, false, "the rescue disk, before detaching it", false},
	{"OfflinePatch", "dump found", "VirtualMachines.BeginAttachDetachDataDisks", 1, false, true, "detach the rescue disk", false},
	{"OfflinePatch", "dump found", "Disks.BeginDelete", 1, false, true, "delete the rescue disk", false},

	{"ReattachReboot", "", "Disks.Get", 1, false, false, "the patched disk: where it is attached", false},
	{"ReattachReboot", "", "VirtualMachines.BeginAttachDetachDataDisks", 1, false, true, "detach it from the rescue VM", false},
	{"ReattachReboot", "", "VirtualMachines.Get", 1, false, false, "with instance view: current OS disk, power state", false},
	{"ReattachReboot", "", "VirtualMachines.BeginUpdate", 1, false, true, "OS disk swap to the patched disk, vmrescue-original-osdisk tag", false},
	{"ReattachReboot", "", "VirtualMachines.BeginStart", 1, false, true, "start to reproduce the crash", false},

	{"HarvestDump", "dump", "VirtualMachines.Get", 1, true, false, "the VM with instance view (health), then each rescue VM of the pool", false},
	{"HarvestDump", "dump", "VirtualMachines.RetrieveBootDiagnosticsData", 1, false, true, "boot screenshot and serial log", false},
	{"HarvestDump", "dump", "VirtualMachines.BeginDeallocate", 1, false, true, "unless already deallocated", false},
	{"HarvestDump", "dump", "Snapshots.Get", 1, false, false, "before the create", false},
	{"HarvestDump", "dump", "Snapshots.BeginCreateOrUpdate", 1, false, true, "full snapshot of the patched OS disk, tagged", false},
	{"HarvestDump", "dump", "ResourceSKUs.NewListPager", 1, false, false, "once per region and process", false},
	{"HarvestDump", "dump", "Disks.Get", 2, false, false, "before the create, before the detach", false},
	{"HarvestDump", "dump", "Disks.BeginCreateOrUpdate", 1, false, true, "temporary disk from the harvest snapshot, tagged", false},
	{"HarvestDump", "dump", "VirtualMachines.BeginAttachDetachDataDisks", 2, false, true, "attach, then detach", false},
	{"HarvestDump", "dump", "VirtualMachineRunCommands.GetByVirtualMachine", 1, false, false, "before the run; one more per 10 s while an earlier run still executes", true},
	{"HarvestDump", "dump", "VirtualMachineRunCommands.NewListByVirtualMachinePager", 1, false, false, "with instance view, before the run: no other Run Command executes on the rescue VM", false},
	{"HarvestDump", "dump", "VirtualMachineRunCommands.BeginCreateOrUpdate", 1, false, true, "harvest: the agent uploads the dumps", false},
	{"HarvestDump", "dump", "VirtualMachineRunCommands.BeginDelete", 1, false, true, "once its result is read", false},
	{"HarvestDump", "dump", "Disks.BeginDelete", 1, false, true, "the temporary disk", false},
	{"HarvestDump", "dump", "Snapshots.BeginDelete", 1, false, true, "the harvest snapshot (the backup snapshot stays)", false},
	{"HarvestDump", "recovered", "VirtualMachines.Get", 1, true, false, "as above", false},
	{"HarvestDump", "recovered", "VirtualMachines.RetrieveBootDiagnosticsData", 1, false, true, "as above", false},
	{"HarvestDump", "recovered", "VirtualMachines.BeginDeallocate", 1, false, true, "as above", false},
	{"HarvestDump", "recovered", "Snapshots.Get", 1, false, false, "as above", false},
	{"HarvestDump", "recovered", "Snapshots.BeginCreateOrUpdate", 1, false, true, "as above", false},
	{"HarvestDump", "recovered", "ResourceSKUs.NewListPager", 1, false, false, "as above", false},
	{"HarvestDump", "recovered", "Disks.Get", 2, false, false, "as above", false},
	{"HarvestDump", "recovered", "Disks.BeginCreateOrUpdate", 1, false, true, "as above", false},
	{"HarvestDump", "recovered", "VirtualMachines.BeginAttachDetachDataDisks", 2, false, true, "as above", false},
	{"HarvestDump", "recovered", "VirtualMachineRunCommands.GetByVirtualMachine", 1, false, false, "as above; one more per 10 s while an earlier run still executes", true},
	{"HarvestDump", "recovered", "VirtualMachineRunCommands.NewListByVirtualMachinePager", 1, false, false, "as above", false},
	{"HarvestDump", "recovered", "VirtualMachineRunCommands.BeginCreateOrUpdate", 1, false, true, "as above", false},
	{"HarvestDump", "recovered", "VirtualMachineRunCommands.BeginDelete", 1, false, true, "as above", false},
	{"HarvestDump", "recovered", "Disks.BeginDelete", 1, false, true, "as above", false},
	{"HarvestDump", "recovered", "Snapshots.BeginDelete", 1, false, true, "as above", false},
	{"HarvestDump", "recovered", "VirtualMachines.BeginStart", 1, false, true, "no dump and the VM came back healthy: start it again", false},

	{"SupportTicket", "", "Services.NewListPager", 1, false, false, "find \"Virtual Machine running Windows\", once per process; none when the classification is configured", false},
	{"SupportTicket", "", "ProblemClassifications.NewListPager", 1, false, false, "pick the boot/stop error classification, once per process; none when configured", false},
	{"SupportTicket", "", "Tickets.CheckNameAvailability", 1, false, false, "the ticket name derives from the incident", false},
	{"SupportTicket", "new ticket", "Tickets.BeginCreate", 1, false, true, "the name is free", false},
	{"SupportTicket", "ticket exists", "Tickets.Get", 1, false, false, "the name is taken by the incident's own ticket (an earlier attempt made it)", false},
	{"SupportTicket", "new ticket, VM started", "Tickets.BeginCreate", 1, false, true, "as above", false},
	{"SupportTicket", "new ticket, VM started", "VirtualMachines.Get", 1, false, false, "VMRESCUE_LEAVE_DEALLOCATED=false: the power state", false},
	{"SupportTicket", "new ticket, VM started", "VirtualMachines.BeginStart", 1, false, true, "start the VM again", false},

	{"Failed", "after the swap", "VirtualMachines.Get", 1, false, false, "with instance view: current OS disk, power state", false},
	{"Failed", "after the swap", "VirtualMachines.BeginDeallocate", 1, false, true, "when running", false},
	{"Failed", "after the swap", "VirtualMachines.BeginUpdate", 1, false, true, "swap back to the original OS disk, remove the tag", false},
	{"Failed", "after the swap", "Disks.Get", 2, false, false, "the rescue and harvest disks: attached to a rescue VM?", false},
	{"Failed", "before the swap", "VirtualMachines.Get", 1, false, false, "with instance view: still on its original OS disk", false},
	{"Failed", "before the swap", "Disks.Get", 2, false, false, "the rescue and harvest disks: attached to a rescue VM?", false},
	{"Failed", "before the swap", "VirtualMachines.BeginAttachDetachDataDisks", 1, false, true, "detach the rescue disk from the rescue VM", false},
	{"Failed", "before the swap, VM started", "VirtualMachines.Get", 1, false, false, "as above", false},
	{"Failed", "before the swap, VM started", "Disks.Get", 2, false, false, "as above", false},
	{"Failed", "before the swap, VM started", "VirtualMachines.BeginAttachDetachDataDisks", 1, false, true, "as above", false},
	{"Failed", "before the swap, VM started", "VirtualMachines.BeginStart", 1, false, true, "VMRESCUE_LEAVE_DEALLOCATED=false: start the VM again", false},

	{"Janitor", "", "Disks.NewListPager", 1, false, false, "tagged disks of the subscription", false},
	{"Janitor", "", "Snapshots.NewListPager", 1, false, false, "tagged snapshots of the subscription", false},
	{"Janitor", "", "VirtualMachineRunCommands.NewListByVirtualMachinePager", 0, true, false, "agent runs left on each rescue VM", false},
	{"Janitor", "", "Disks.BeginDelete", 0, false, true, "one per leftover disk of an incident that is over", false},
	{"Janitor", "", "Snapshots.BeginDelete", 0, false, true, "one per leftover snapshot (backup snapshots after the retention period)", false},
	{"Janitor", "", "VirtualMachineRunCommands.BeginDelete", 0, false, true, "one per leftover agent run", false},
}

// IsDelete reports an operation of the table that is a DELETE request: ARM counts it against the
// subscription's delete budget, not its write budget.
func IsDelete(op string) bool { return strings.HasSuffix(op, ".BeginDelete") }

// Budget is the number of requests per operation a stage makes on a path, with rescueVMs VMs in
// the pool. Rows with no path belong to every path of the stage.
func Budget(stage, path string, rescueVMs int) map[string]int {
	out := map[string]int{}
	for _, o := range Operations {
		if o.Stage != stage || (o.Path != "" && o.Path != path) {
			continue
		}
		n := o.Count
		if o.PerRescueVM {
			n += rescueVMs
		}
		if n > 0 {
			out[o.Op] += n
		}
	}
	return out
}

// MaxBudget is, per operation, the most any path of the stage makes.
func MaxBudget(stage string, rescueVMs int) map[string]int {
	out := map[string]int{}
	paths := map[string]bool{}
	for _, o := range Operations {
		if o.Stage == stage {
			paths[o.Path] = true
		}
	}
	for path := range paths {
		for op, n := range Budget(stage, path, rescueVMs) {
			out[op] = max(out[op], n)
		}
	}
	return out
}

// OperationsMarkdown renders the table for README.md.
func OperationsMarkdown() string {
	var b strings.Builder
	b.WriteString("| Stage | Path | ARM operation | Requests | Kind | When, why |\n|---|---|---|---|---|---|\n")
	for _, o := range Operations {
		n := fmt.Sprint(o.Count)
		switch {
		case o.PerRescueVM && o.Count == 0:
			n = "1 per rescue VM"
		case o.PerRescueVM:
			n += " + 1 per rescue VM"
		case o.Count == 0:
			n = "as needed"
		}
		if o.PerPoll {
			n += " + 1 per poll"
		}
		kind := "read"
		if o.Write {
			kind = "write"
		}
		path := o.Path
		if path == "" {
			path = "all"
		}
		fmt.Fprintf(&b, "| %s | %s | `%s` | %s | %s | %s |\n", o.Stage, path, o.Op, n, kind, o.Note)
	}
	return b.String()
}
