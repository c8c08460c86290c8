package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// offlinePatch is the OfflinePatch stage: the agent looks at the attached copy of the OS disk and,
// in the same run, patches it (serial console and EMS in the BCD store, crash dumps in the SYSTEM
// hive) unless MEMORY.DMP is already there; the pipeline goes on to ReattachReboot. With a dump
// there, a second run harvests it at once and the pipeline skips ahead to SupportTicket.
func (p *Pipeline) offlinePatch(ctx context.Context, r *run) error {
	a := r.msg.Artifacts
	if a.RescueVMID == "" || a.LUN == nil || a.RescueDiskID == "" || a.MemoryGB <= 0 {
		return fault.Terminal(errors.New("the artifacts name no attached rescue disk (rescueVmId, lun, rescueDiskId, memoryGB)"))
	}
	lun := int(*a.LUN)
	if _, ok := r.resume(checkpointHarvested); ok {
		return p.afterFirstLookHarvest(ctx, r)
	}
	if _, ok := r.resume(checkpointPatched); ok {
		return r.complete(ctx, incident.StageReattachReboot, time.Time{}, 0)
	}
	// One agent run looks at the disk and patches it unless MEMORY.DMP is already there: a
	// rescue VM runs one Run Command at a time, and each run is two writes (its PUT and its
	// deletion). A dump found is a checkpoint: a retry of the harvest does not run it again.
	_, dumpFound := r.resume(checkpointDumpFound)
	if !dumpFound {
		res, err := p.runAgent(ctx, r, a.RescueVMID, "patch", agent.Request{
			Command: agent.CommandPatch, IncidentID: r.msg.IncidentID, LUN: lun, MemoryGB: a.MemoryGB, UnlessDump: true,
		})
		if err != nil {
			return err
		}
		if err := verdict(res); err != nil {
			return err
		}
		if res.HasMemoryDump() {
			if err := r.checkpoint(ctx, checkpointDumpFound, detail{
				Reason: "MEMORY.DMP is already on the disk: harvesting it now and skipping ahead to the support ticket"}); err != nil {
				return err
			}
			dumpFound = true
		} else if err := p.patched(ctx, r, res); err != nil {
			return err
		}
	}
	if dumpFound {
		if err := p.harvestFrom(ctx, r, a.RescueVMID, lun); err != nil {
			return err
		}
		p.storeBootDiagnostics(ctx, r)
		if err := r.checkpoint(ctx, checkpointHarvested, detail{Reason: "dumps harvested from the rescue disk"}); err != nil {
			return err
		}
		return p.afterFirstLookHarvest(ctx, r)
	}
	return r.complete(ctx, incident.StageReattachReboot, time.Time{}, 0)
}

// patched checks a patch the agent reports, and records it as a checkpoint.
func (p *Pipeline) patched(ctx context.Context, r *run, res agent.Result) error {
	a := r.msg.Artifacts
	if !r.dry && (res.Patch == nil || !res.Patch.Verified) {
		return wait(agentWait, "the agent patched the disk but could not verify it")
	}
	if res.Patch != nil {
		if err := r.note(ctx, fmt.Sprintf("disk patched: %s dump to %s (%s)", res.Patch.DumpType, res.Patch.DumpFile, res.Patch.Reason)); err != nil {
			return err
		}
	}
	r.made.PatchedOSDiskID = a.RescueDiskID
	return r.checkpoint(ctx, checkpointPatched, detail{Reason: "disk patched and verified"})
}

// Checkpoints inside OfflinePatch and HarvestDump.
const (
	checkpointHarvested = "harvested"
	checkpointPatched   = "patched"
	checkpointObserved  = "observed"
	checkpointDumpFound = "dump-found"
	// checkpointSwappedBack: the Failed stage put the original OS disk back after a swap.
	checkpointSwappedBack = "swapped-back"
)

// afterFirstLookHarvest drops the rescue disk, whose dump is now in the dumps container, and goes
// on to SupportTicket.
func (p *Pipeline) afterFirstLookHarvest(ctx context.Context, r *run) error {
	a := r.msg.Artifacts
	if err := p.dropDisk(ctx, r, a.RescueVMID, a.LUN, incident.RescueDiskName(r.msg.IncidentID)); err != nil {
		return err
	}
	return r.complete(ctx, incident.StageSupportTicket, time.Time{}, 0)
}

// verdict turns an agent result that is not OK into an error: terminal when the agent refused
// the disk, a later retry otherwise.
func verdict(res agent.Result) error {
	if res.OK {
		return nil
	}
	msg := strings.TrimSpace(res.Error)
	if msg == "" {
		msg = "no reason given"
	}
	if res.Refused {
		return fault.Terminal(fmt.Errorf("the agent refused the disk (%s): %s", res.Command, msg))
	}
	return wait(agentWait, "agent %s failed: %s", res.Command, msg)
}

// dropDisk detaches one of the incident's disks from a rescue VM, gives back its LUN and deletes
// it. A disk attached anywhere else is left alone.
func (p *Pipeline) dropDisk(ctx context.Context, r *run, rescueVMID string, lun *int32, name string) error {
	rescue, err := resourceid.ParseVM(rescueVMID)
	if err != nil {
		return fault.Terminal(fmt.Errorf("rescue VM: %w", err))
	}
	did := diskID(r.vm, name)
	d, exists, err := p.getDisk(ctx, r.vm.SubscriptionID, r.vm.ResourceGroup, name)
	if err != nil {
		return fmt.Errorf("read disk %s: %w", name, err)
	}
	if !exists && r.dry {
		// The disk was only planned: so are its detach and delete.
		exists, d.ManagedBy = true, rescue.String()
	}
	if exists && strings.EqualFold(d.ManagedBy, rescue.String()) {
		if err := r.detach(ctx, rescue, did); err != nil {
			return fmt.Errorf("detach %s: %w", name, err)
		}
		d.ManagedBy = ""
	}
	if lun != nil && !r.dry {
		if err := p.releaseLUN(ctx, rescue.String(), *lun, r.msg.IncidentID); err != nil && !isNotHolder(err) {
			return fmt.Errorf("release LUN %d of %s: %w", *lun, rescue.Name, err)
		}
	}
	if !exists {
		return nil
	}
	if d.ManagedBy != "" && !r.dry {
		return r.note(ctx, fmt.Sprintf("disk %s is attached to %s: not deleted", name, d.ManagedBy))
	}
	if err := r.deleteDisk(ctx, r.vm.ResourceGroup, name); err != nil {
		return fmt.Errorf("delete disk %s: %w", name, err)
	}
	return nil
}
