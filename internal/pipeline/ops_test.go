package pipeline_test

import (
	"flag"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vmrescue/vmrescue/internal/permissions"
	"github.com/vmrescue/vmrescue/internal/pipeline"
)

var update = flag.Bool("update", false, "rewrite the README's table of ARM operations from pipeline.Operations")

const (
	docPath    = "../../README.md"
	tableBegin = "<!-- operations table: generated from internal/pipeline/ops.go; go test ./internal/pipeline -run TestOperationsDoc -update -->\n"
	tableEnd   = "<!-- end of operations table -->\n"
)

// TestOperationsDoc keeps the table in README.md equal to pipeline.Operations, which the
// stage tests count requests against.
func TestOperationsDoc(t *testing.T) {
	data, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i, j := strings.Index(doc, tableBegin), strings.Index(doc, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the table markers", docPath)
	}
	want := pipeline.OperationsMarkdown()
	got := doc[i+len(tableBegin) : j]
	if got == want {
		return
	}
	if !*update {
		t.Fatalf("%s's table differs from pipeline.Operations; run go test ./internal/pipeline -run TestOperationsDoc -update", docPath)
	}
	if err := os.WriteFile(docPath, []byte(doc[:i+len(tableBegin)]+want+doc[j:]), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestOperationsTable checks the table itself: known stages, ARM operation names, no duplicate
// row, and every write in permissions' terms.
func TestOperationsTable(t *testing.T) {
	t.Parallel()
	stages := map[string]bool{"Snapshot": true, "RescueAttach": true, "OfflinePatch": true, "ReattachReboot": true,
		"HarvestDump": true, "SupportTicket": true, "Failed": true, "Janitor": true}
	seen := map[string]bool{}
	for _, o := range pipeline.Operations {
		if !stages[o.Stage] {
			t.Errorf("unknown stage %q", o.Stage)
		}
		k := o.Stage + "|" + o.Path + "|" + o.Op
		if seen[k] {
			t.Errorf("duplicate row %s", k)
		}
		seen[k] = true
		if client, method, ok := strings.Cut(o.Op, "."); !ok || client == "" || method == "" {
			t.Errorf("operation %q is not Client.Method", o.Op)
		}
	}
}

// actionOf is the ARM action each operation of the table needs.
var actionOf = map[string]string{
	"VirtualMachines.Get":                         "Microsoft.Compute/virtualMachines/read",
	"VirtualMachines.BeginDeallocate":             "Microsoft.Compute/virtualMachines/deallocate/action",
	"VirtualMachines.BeginStart":                  "Microsoft.Compute/virtualMachines/start/action",
	"VirtualMachines.BeginUpdate":                 "Microsoft.Compute/virtualMachines/write",
	"VirtualMachines.BeginAttachDetachDataDisks":  "Microsoft.Compute/virtualMachines/attachDetachDataDisks/action",
	"VirtualMachines.RetrieveBootDiagnosticsData": "Microsoft.Compute/virtualMachines/retrieveBootDiagnosticsData/action",
	"Disks.Get":                                              "Microsoft.Compute/disks/read",
	"Disks.NewListPager":                                     "Microsoft.Compute/disks/read",
	"Disks.BeginCreateOrUpdate":                              "Microsoft.Compute/disks/write",
	"Disks.BeginDelete":                                      "Microsoft.Compute/disks/delete",
	"Snapshots.Get":                                          "Microsoft.Compute/snapshots/read",
	"Snapshots.NewListPager":                                 "Microsoft.Compute/snapshots/read",
	"Snapshots.BeginCreateOrUpdate":                          "Microsoft.Compute/snapshots/write",
	"Snapshots.BeginDelete":                                  "Microsoft.Compute/snapshots/delete",
	"ResourceSKUs.NewListPager":                              "Microsoft.Compute/skus/read",
	"VirtualMachineRunCommands.GetByVirtualMachine":          "Microsoft.Compute/virtualMachines/runCommands/read",
	"VirtualMachineRunCommands.NewListByVirtualMachinePager": "Microsoft.Compute/virtualMachines/runCommands/read",
	"VirtualMachineRunCommands.BeginCreateOrUpdate":          "Microsoft.Compute/virtualMachines/runCommands/write",
	"VirtualMachineRunCommands.BeginDelete":                  "Microsoft.Compute/virtualMachines/runCommands/delete",
}

// linkedActions are checked by ARM on behalf of the operations above (linked access checks and
// the pollers' status reads), not called by name.
var linkedActions = map[string]bool{
	"Microsoft.Compute/disks/beginGetAccess/action":   true,
	"Microsoft.Compute/diskEncryptionSets/read":       true,
	"Microsoft.Compute/locations/operations/read":     true,
	"Microsoft.Compute/locations/diskOperations/read": true,
}

// TestPermissionsInSync: every compute operation of the table has its action in the custom role's
// list, and the list holds no action the pipeline does not need. Support operations are granted
// by the built-in Support Request Contributor role.
func TestPermissionsInSync(t *testing.T) {
	t.Parallel()
	granted := map[string]bool{}
	for _, a := range permissions.ARMActions {
		granted[a] = true
	}
	used := map[string]bool{}
	for _, o := range pipeline.Operations {
		client, _, _ := strings.Cut(o.Op, ".")
		if client == "Tickets" || client == "Services" || client == "ProblemClassifications" {
			continue
		}
		a, ok := actionOf[o.Op]
		if !ok {
			t.Errorf("no ARM action known for %s", o.Op)
			continue
		}
		used[a] = true
		if !granted[a] {
			t.Errorf("%s needs %s, which permissions.ARMActions lacks", o.Op, a)
		}
	}
	for a := range granted {
		if !used[a] && !linkedActions[a] {
			t.Errorf("permissions.ARMActions grants %s, which no operation needs", a)
		}
	}
	if !slices.Contains(permissions.DataRoles, "Support Request Contributor") {
		t.Error("support tickets need the Support Request Contributor role")
	}
}
