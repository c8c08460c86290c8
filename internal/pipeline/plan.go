package pipeline

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/vms"
)

// Check is one preflight check.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// PlannedOp is an ARM write the pipeline would make.
type PlannedOp struct {
	Stage      string
	Operation  string
	ResourceID string
}

// Plan is the preflight of a remediation: every check Snapshot and RescueAttach make, that the
// identity can read each resource kind involved, and the ARM writes the pipeline would make, or
// each reason it would refuse.
type Plan struct {
	VM         string
	Checks     []Check
	Refusals   []string
	Operations []PlannedOp
}

// Ready reports a VM the pipeline would remediate now.
func (pl Plan) Ready() bool {
	if len(pl.Refusals) > 0 {
		return false
	}
	for _, c := range pl.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// Preflight plans a remediation of vmID without writing anything: it only reads, in Azure and in
// the locks container.
func (p *Pipeline) Preflight(ctx context.Context, vmID string) (Plan, error) {
	id, err := resourceid.ParseVM(vmID)
	if err != nil {
		return Plan{}, err
	}
	pl := Plan{VM: id.String()}
	check := func(name string, err error, ok string) bool {
		c := Check{Name: name, OK: err == nil, Detail: ok}
		if err != nil {
			c.Detail = readError(err)
		}
		pl.Checks = append(pl.Checks, c)
		return err == nil
	}
	if !p.Config.InScope(id) {
		pl.Refusals = append(pl.Refusals, "the VM's subscription or resource group is outside VMRESCUE_ALLOWED_SUBSCRIPTIONS / VMRESCUE_ALLOWED_RESOURCE_GROUPS")
	}
	vm, err := p.getVM(ctx, id, true)
	if armerr.IsNotFound(err) {
		pl.Refusals = append(pl.Refusals, "the VM does not exist")
		return pl, nil
	}
	if !check("read virtual machines", err, fmt.Sprintf("%s in %s%s, %s, %s, %s", vm.Name, vm.Location, zoneText(vm.Zone), vm.Size, orUnknown(vm.OSType), orUnknown(vm.Power))) {
		return pl, nil
	}
	pl.Refusals = append(pl.Refusals, p.refusals(vm)...)
	if vm.OSDiskID != "" {
		d, err := diskName(vm.OSDiskID)
		if err == nil {
			_, _, err = p.getDisk(ctx, d.SubscriptionID, d.ResourceGroup, d.Name)
		}
		check("read managed disks", err, "OS disk "+vm.OSDiskID)
	}
	// A snapshot that does not exist answers 404 to an identity that may read snapshots, 403 to
	// one that may not.
	_, _, err = p.getSnapshot(ctx, id.SubscriptionID, id.ResourceGroup, incident.BackupSnapshotName("inc-00000000-000000-0000"))
	check("read snapshots", err, "resource group "+id.ResourceGroup)

	az, err := p.in(id.SubscriptionID)
	var memory float64
	if err == nil {
		size, serr := az.SKUs.Size(ctx, vm.Location, vm.Size)
		err, memory = serr, size.MemoryGB
	}
	check("read resource SKUs", err, fmt.Sprintf("%s has %g GB of memory: the dump needs as much free space", vm.Size, memory))

	if p.Blobs != nil && p.Blobs.Client != nil {
		// A blob that does not exist answers 404 to an identity that may read the container.
		var serr error
		names := []string{p.Config.AuditContainer, p.Config.DumpsContainer, p.Config.ToolsContainer, p.Config.LocksContainer}
		for _, c := range names {
			if _, _, err := p.Blobs.Exists(ctx, c, "vmrescue-preflight"); err != nil && serr == nil {
				serr = err
			}
		}
		check("read storage containers", serr, strings.Join(names, ", "))
	}
	rescueID, lun := p.planRescue(ctx, &pl, vm)
	if p.Config.Support.Enabled {
		cl, err := p.Azure.Classifier.Classify(ctx)
		check("read support services and problem classifications", err, cl.DisplayName+" "+cl.ClassificationID)
	}
	if len(pl.Refusals) == 0 {
		pl.Operations = p.plannedOps(id, vm, rescueID, lun)
	}
	return pl, nil
}

// planRescue checks the rescue pool as RescueAttach would, without reserving anything.
func (p *Pipeline) planRescue(ctx context.Context, pl *Plan, vm vms.Facts) (string, int32) {
	var best string
	var bestLUN int32 = -1
	bestFree := 0
	inZone, unread := 0, 0
	locksFailed := false
	for _, id := range p.Config.RescueVMs {
		rid, err := resourceid.ParseVM(id)
		if err != nil {
			pl.Checks = append(pl.Checks, Check{Name: "rescue VM " + id, Detail: err.Error()})
			continue
		}
		r, err := p.getVM(ctx, rid, true)
		if err != nil {
			pl.Checks = append(pl.Checks, Check{Name: "read rescue VM " + rid.Name, Detail: readError(err)})
			unread++
			continue
		}
		if !vms.SameLocation(r.Location, vm.Location) || r.Zone != vm.Zone {
			continue
		}
		inZone++
		c := Check{Name: "rescue VM " + r.Name}
		if r.Power != vms.PowerRunning {
			c.Detail = "is " + orUnknown(r.Power) + ": Run Command needs it running"
			pl.Checks = append(pl.Checks, c)
			continue
		}
		az, err := p.in(rid.SubscriptionID)
		if err != nil {
			c.Detail = err.Error()
			pl.Checks = append(pl.Checks, c)
			continue
		}
		size, err := az.SKUs.Size(ctx, r.Location, r.Size)
		if err != nil {
			c.Detail = readError(err)
			pl.Checks = append(pl.Checks, c)
			continue
		}
		used := map[int32]bool{}
		for _, d := range r.DataDisks {
			used[d.LUN] = true
		}
		reserved := "LUN reservations not read"
		if p.Locks != nil {
			holders, err := p.Locks.LUNHolders(ctx, r.ID)
			if err == nil {
				for l := range holders {
					used[l] = true
				}
				reserved = fmt.Sprintf("%d LUNs reserved", len(holders))
			} else if !locksFailed {
				pl.Checks = append(pl.Checks, Check{Name: "read LUN reservations", Detail: readError(err)})
				locksFailed = true // once, not per rescue VM
			}
		}
		free := size.MaxDataDiskCount - len(used)
		_, _, rerr := p.getRun(ctx, rid, incident.RunCommandName("inc-00000000-000000-0000", "patch"))
		rc := Check{Name: "read run commands on " + r.Name, OK: rerr == nil, Detail: "managed Run Commands of the rescue VM"}
		if rerr != nil {
			rc.Detail = readError(rerr)
		}
		pl.Checks = append(pl.Checks, rc)
		c.OK = free > 0
		c.Detail = fmt.Sprintf("%d of %d data disk slots free (%d attached, %s)", max(free, 0), size.MaxDataDiskCount, len(r.DataDisks), reserved)
		pl.Checks = append(pl.Checks, c)
		if free > bestFree {
			best, bestFree, bestLUN = r.ID, free, lowestFree(used)
		}
	}
	switch {
	case inZone == 0 && unread > 0:
		// Not a refusal: an unreadable rescue VM may well be in the zone.
		pl.Checks = append(pl.Checks, Check{Name: "rescue capacity", Detail: fmt.Sprintf(
			"no readable rescue VM is in %s%s, and %d of the pool could not be read", vm.Location, zoneText(vm.Zone), unread)})
	case inZone == 0:
		pl.Refusals = append(pl.Refusals, fmt.Sprintf("no rescue VM of the pool is in %s%s", vm.Location, zoneText(vm.Zone)))
	case best == "":
		pl.Checks = append(pl.Checks, Check{Name: "rescue capacity", Detail: "no free LUN now: RescueAttach would wait for one"})
	}
	return best, bestLUN
}

func lowestFree(used map[int32]bool) int32 {
	for l := int32(0); l < 64; l++ {
		if !used[l] {
			return l
		}
	}
	return -1
}

// plannedOps lists the ARM writes of the whole pipeline for this VM, on its main path.
func (p *Pipeline) plannedOps(id resourceid.ID, vm vms.Facts, rescueID string, lun int32) []PlannedOp {
	const inc = "<incidentId>"
	snap := snapshotID(id, incident.BackupSnapshotName(inc))
	disk := diskID(id, incident.RescueDiskName(inc))
	if rescueID == "" {
		rescueID = "<rescue VM with a free LUN>"
	}
	runs := rescueID + "/runCommands/" + incident.RunCommandName(inc, "")
	at := fmt.Sprintf("attach at LUN %d", lun)
	if lun < 0 { // no free LUN now: RescueAttach waits for one
		at = "attach at the first LUN freed"
	}
	var out []PlannedOp
	add := func(stage, op, rid string) { out = append(out, PlannedOp{stage, op, rid}) }
	if vm.Power != vms.PowerDeallocated {
		add("Snapshot", "VirtualMachines.BeginDeallocate", id.String())
	}
	add("Snapshot", "Snapshots.BeginCreateOrUpdate", snap+" (incremental, source "+vm.OSDiskID+")")
	add("RescueAttach", "Disks.BeginCreateOrUpdate", disk+" (from the snapshot"+zoneText(vm.Zone)+")")
	add("RescueAttach", "VirtualMachines.BeginAttachDetachDataDisks", rescueID+" ("+at+")")
	add("OfflinePatch", "VirtualMachineRunCommands.BeginCreateOrUpdate", runs+"patch (patches unless a memory dump is there)")
	add("OfflinePatch", "VirtualMachineRunCommands.BeginDelete", runs+"patch (patches unless a memory dump is there)")
	add("ReattachReboot", "VirtualMachines.BeginAttachDetachDataDisks", rescueID+" (detach)")
	add("ReattachReboot", "VirtualMachines.BeginUpdate", id.String()+" (OS disk -> "+disk+")")
	add("ReattachReboot", "VirtualMachines.BeginStart", id.String())
	add("HarvestDump", "VirtualMachines.RetrieveBootDiagnosticsData", id.String())
	add("HarvestDump", "VirtualMachines.BeginDeallocate", id.String())
	add("HarvestDump", "Snapshots.BeginCreateOrUpdate", snapshotID(id, incident.HarvestSnapshotName(inc)))
	add("HarvestDump", "Disks.BeginCreateOrUpdate", diskID(id, incident.HarvestDiskName(inc)))
	add("HarvestDump", "VirtualMachines.BeginAttachDetachDataDisks", rescueID+" (attach, then detach)")
	add("HarvestDump", "VirtualMachineRunCommands.BeginCreateOrUpdate", runs+"harvest")
	add("HarvestDump", "VirtualMachineRunCommands.BeginDelete", runs+"harvest")
	add("HarvestDump", "Disks.BeginDelete", diskID(id, incident.HarvestDiskName(inc)))
	add("HarvestDump", "Snapshots.BeginDelete", snapshotID(id, incident.HarvestSnapshotName(inc)))
	if p.Config.Support.Enabled {
		add("SupportTicket", "Tickets.BeginCreate", "/subscriptions/"+id.SubscriptionID+"/providers/Microsoft.Support/supportTickets/"+incident.TicketName(inc))
	}
	if !p.Config.LeaveDeallocated {
		add("SupportTicket", "VirtualMachines.BeginStart", id.String())
	}
	return out
}

// WriteText prints the plan for people.
func (pl Plan) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "vmrescue plan for %s\n\nchecks:\n", pl.VM)
	for _, c := range pl.Checks {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s  %s: %s\n", mark, c.Name, c.Detail)
	}
	if len(pl.Refusals) > 0 {
		fmt.Fprintf(&b, "\nvmrescue would refuse this VM:\n")
		for _, r := range pl.Refusals {
			fmt.Fprintf(&b, "  - %s\n", r)
		}
	} else {
		fmt.Fprintf(&b, "\nARM writes the pipeline would make (main path):\n")
		for _, o := range pl.Operations {
			fmt.Fprintf(&b, "  %-15s %-46s %s\n", o.Stage, o.Operation, o.ResourceID)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func zoneText(z string) string {
	if z == "" {
		return ""
	}
	return " zone " + z
}

func diskName(id string) (resourceid.ID, error) { return resourceid.ParseDisk(id) }

// readError says why a read failed, naming a missing permission plainly.
func readError(err error) string {
	switch armerr.Status(err) {
	case http.StatusForbidden:
		return "the identity may not read it (" + armerr.Code(err) + "): grant the vmrescue role"
	case http.StatusUnauthorized:
		return "not authenticated (" + armerr.Code(err) + ")"
	}
	var msg string
	if err != nil {
		msg = err.Error()
		if i := strings.IndexByte(msg, '\n'); i > 0 {
			msg = msg[:i]
		}
	}
	return clip(msg, 300)
}
