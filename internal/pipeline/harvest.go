package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/vms"
)

// harvestDump is the HarvestDump stage: note whether the VM came back healthy, store its boot
// diagnostics, deallocate it, snapshot its OS disk, make a temporary disk from the snapshot and
// attach it to a rescue VM, where the agent uploads MEMORY.DMP and the minidumps; then detach and
// delete the temporary disk and snapshot. With a dump, or without one when the VM still crashes,
// the pipeline goes on to SupportTicket; a VM that came back healthy without a dump is started
// again and the incident closes as recovered.
func (p *Pipeline) harvestDump(ctx context.Context, r *run) error {
	a := r.msg.Artifacts
	vm, err := p.getVM(ctx, r.vm, true)
	if err != nil {
		return fmt.Errorf("read VM: %w", err)
	}
	if vm.OSDiskID == "" {
		return fault.Terminal(errors.New("the VM has no managed OS disk"))
	}
	var healthy bool
	if seen, ok := r.resume(checkpointObserved); ok && seen.Healthy != nil {
		healthy = *seen.Healthy // what the VM was before an earlier delivery deallocated it
	} else {
		healthy = r.healthy(vm)
		if err := r.checkpoint(ctx, checkpointObserved, detail{Healthy: &healthy,
			Reason: fmt.Sprintf("VM is %s (agent ready: %v)", orUnknown(vm.Power), vm.AgentReady)}); err != nil {
			return err
		}
	}
	snapName, diskName := incident.HarvestSnapshotName(r.msg.IncidentID), incident.HarvestDiskName(r.msg.IncidentID)
	if _, ok := r.resume(checkpointHarvested); !ok {
		if err := p.harvestInto(ctx, r, vm, snapName, diskName); err != nil {
			return err
		}
	}
	if a := r.art(); a.RescueVMID != "" {
		if err := p.dropDisk(ctx, r, a.RescueVMID, a.LUN, diskName); err != nil {
			return err
		}
	}
	if err := r.deleteSnapshot(ctx, r.vm.ResourceGroup, snapName); err != nil {
		return fmt.Errorf("delete harvest snapshot: %w", err)
	}

	dumped := r.made.DumpLocation != "" || a.DumpLocation != ""
	switch {
	case dumped || r.dry:
		return r.complete(ctx, incident.StageSupportTicket, time.Time{}, 0)
	case healthy:
		if err := r.start(ctx, r.vm); err != nil {
			return fmt.Errorf("start VM: %w", err)
		}
		return r.close(ctx, incident.OutcomeRecovered, "no dump was written and the VM came back healthy after the patch")
	default:
		if err := r.note(ctx, "no dump was written and the VM did not come back healthy: opening the ticket with what there is"); err != nil {
			return err
		}
		return r.complete(ctx, incident.StageSupportTicket, time.Time{}, 0)
	}
}

// harvestInto stores the boot diagnostics, deallocates the VM, snapshots its OS disk, makes the
// temporary disk, attaches it to a rescue VM and has the agent upload the dumps.
func (p *Pipeline) harvestInto(ctx context.Context, r *run, vm vms.Facts, snapName, diskName string) error {
	p.storeBootDiagnostics(ctx, r)
	if vm.Power != vms.PowerDeallocated {
		if err := r.deallocate(ctx, r.vm); err != nil {
			return fmt.Errorf("deallocate VM: %w", err)
		}
	}
	snap, err := r.ensureSnapshot(ctx, snapName, vm, incident.RoleHarvestSnapshot, false)
	if err != nil {
		return err
	}
	r.made.HarvestSnapID = snapshotID(r.vm, snapName)
	did := diskID(r.vm, diskName)
	pick, err := p.awaitRescue(ctx, r, vm.Location, vm.Zone, did)
	if err != nil {
		return err
	}
	if _, err := r.ensureDisk(ctx, diskName, r.made.HarvestSnapID, pick.vm.Location, pick.vm.Zone, cmp.Or(snap.OSType, vm.OSType), cmp.Or(snap.HyperVGeneration, vm.HyperVGeneration), "", incident.RoleHarvestDisk); err != nil {
		return err
	}
	r.made.HarvestDiskID, r.made.RescueVMID, r.made.LUN = did, pick.vm.ID, ptr(pick.lun)
	if !pick.attached {
		if err := r.attach(ctx, mustVM(pick.vm.ID), did, pick.lun); err != nil {
			return fmt.Errorf("attach %s to %s: %w", diskName, pick.vm.Name, err)
		}
	}
	if err := p.harvestFrom(ctx, r, pick.vm.ID, int(pick.lun)); err != nil {
		return err
	}
	return r.checkpoint(ctx, checkpointHarvested, detail{Reason: "dumps harvested from the temporary disk"})
}

// healthy reports a VM that came back after the patch: running, its agent ready, and no crash
// alert since it was started.
func (r *run) healthy(vm vms.Facts) bool {
	if vm.Power != vms.PowerRunning || !vm.AgentReady {
		return false
	}
	var started time.Time
	for _, rec := range r.recs {
		if rec.Stage == string(incident.StageReattachReboot) && rec.Event == incident.EventStarted {
			started = rec.Time
		}
	}
	_, crashed := crashSignalAfter(r.recs, started)
	return !crashed
}
