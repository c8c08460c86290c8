package pipeline

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lock"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// checkArtifacts refuses artifacts that point outside the incident's own resources: every disk
// and snapshot the pipeline makes is named from the incident and lives in the VM's resource
// group, the rescue VM is one of the pool, and the dump lives under the incident's prefix. A
// message that says otherwise was not written by vmrescue, and acting on it could touch a
// resource that is not the incident's.
func (p *Pipeline) checkArtifacts(vm resourceid.ID, msg incident.Message) error {
	a, id := msg.Artifacts, msg.IncidentID
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	own := func(field, value string, parse func(string) (resourceid.ID, error), name string) {
		if value == "" {
			return
		}
		rid, err := parse(value)
		switch {
		case err != nil:
			bad("%s: %v", field, err)
		case !strings.EqualFold(rid.SubscriptionID, vm.SubscriptionID) || !strings.EqualFold(rid.ResourceGroup, vm.ResourceGroup):
			bad("%s %s is not in the VM's resource group", field, value)
		case !strings.EqualFold(rid.Name, name):
			bad("%s %s is not named %s", field, value, name)
		}
	}
	own("snapshotId", a.SnapshotID, resourceid.ParseSnapshot, incident.BackupSnapshotName(id))
	own("rescueDiskId", a.RescueDiskID, resourceid.ParseDisk, incident.RescueDiskName(id))
	own("patchedOsDiskId", a.PatchedOSDiskID, resourceid.ParseDisk, incident.RescueDiskName(id))
	own("harvestSnapshotId", a.HarvestSnapID, resourceid.ParseSnapshot, incident.HarvestSnapshotName(id))
	own("harvestDiskId", a.HarvestDiskID, resourceid.ParseDisk, incident.HarvestDiskName(id))
	if a.OriginalOSDiskID != "" {
		rid, err := resourceid.ParseDisk(a.OriginalOSDiskID)
		if err != nil {
			bad("originalOsDiskId: %v", err)
		} else if !strings.EqualFold(rid.SubscriptionID, vm.SubscriptionID) {
			bad("originalOsDiskId %s is not in the VM's subscription", a.OriginalOSDiskID)
		}
	}
	if a.RescueVMID != "" && !p.isRescueVM(a.RescueVMID) {
		bad("rescueVmId %s is not a rescue VM of the pool", a.RescueVMID)
	}
	if a.LUN != nil && (*a.LUN < 0 || *a.LUN >= lock.MaxLUN) {
		bad("lun %d is outside 0..%d", *a.LUN, lock.MaxLUN-1)
	}
	if a.DumpLocation != "" && !strings.HasPrefix(a.DumpLocation, p.Config.DumpsContainer+"/"+id+"/") {
		bad("dumpLocation %q is not under %s/%s/", a.DumpLocation, p.Config.DumpsContainer, id)
	}
	if a.BootDiagnostics != "" && !strings.HasPrefix(a.BootDiagnostics, p.Config.DumpsContainer+"/"+id+"/") {
		bad("bootDiagnostics %q is not under %s/%s/", a.BootDiagnostics, p.Config.DumpsContainer, id)
	}
	if a.TicketID != "" && !strings.EqualFold(a.TicketID, ticketID(vm.SubscriptionID, id)) {
		bad("ticketId %s is not the incident's ticket", a.TicketID)
	}
	if a.MemoryGB < 0 || a.MemoryGB > 32*1024 {
		bad("memoryGB %v is out of range", a.MemoryGB)
	}
	return errors.Join(errs...)
}

func (p *Pipeline) isRescueVM(id string) bool {
	for _, r := range p.Config.RescueVMs {
		if strings.EqualFold(r, id) {
			return true
		}
	}
	return false
}

func ticketID(subscription, incidentID string) string {
	return "/subscriptions/" + subscription + "/providers/Microsoft.Support/supportTickets/" + incident.TicketName(incidentID)
}

// derived ids of what the incident makes, in the VM's resource group.

func diskID(vm resourceid.ID, name string) string {
	return resourceid.ID{SubscriptionID: vm.SubscriptionID, ResourceGroup: vm.ResourceGroup, Provider: "Microsoft.Compute", Type: "disks", Name: name}.String()
}

func snapshotID(vm resourceid.ID, name string) string {
	return resourceid.ID{SubscriptionID: vm.SubscriptionID, ResourceGroup: vm.ResourceGroup, Provider: "Microsoft.Compute", Type: "snapshots", Name: name}.String()
}

func isNotHolder(err error) bool { return errors.Is(err, lock.ErrNotHolder) }
