package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/intake"
	"github.com/vmrescue/vmrescue/internal/vms"
)

// reattachReboot is the ReattachReboot stage: detach the patched disk from the rescue VM and give
// back its LUN, swap the VM's OS disk to it (the original disk's id kept in the artifacts and in a
// tag on the VM), start the VM, and schedule HarvestDump after the reproduction wait. A crash
// alert during the wait brings the harvest forward (Signal).
func (p *Pipeline) reattachReboot(ctx context.Context, r *run) error {
	a := r.msg.Artifacts
	if a.RescueDiskID == "" || a.OriginalOSDiskID == "" {
		return fault.Terminal(errors.New("the artifacts name no patched disk or original OS disk"))
	}
	name := incident.RescueDiskName(r.msg.IncidentID)
	did := diskID(r.vm, name)

	d, exists, err := p.getDisk(ctx, r.vm.SubscriptionID, r.vm.ResourceGroup, name)
	switch {
	case err != nil:
		return fmt.Errorf("read patched disk: %w", err)
	case !exists && !r.dry:
		return fault.Terminal(fmt.Errorf("patched disk %s does not exist", name))
	}
	if exists && d.ManagedBy != "" && p.isRescueVM(d.ManagedBy) {
		if err := r.detach(ctx, mustVM(d.ManagedBy), did); err != nil {
			return fmt.Errorf("detach patched disk: %w", err)
		}
	}
	if a.RescueVMID != "" && a.LUN != nil && !r.dry {
		if err := p.releaseLUN(ctx, a.RescueVMID, *a.LUN, r.msg.IncidentID); err != nil && !isNotHolder(err) {
			return fmt.Errorf("release LUN: %w", err)
		}
	}

	vm, err := p.getVM(ctx, r.vm, true)
	if err != nil {
		return fmt.Errorf("read VM: %w", err)
	}
	if !strings.EqualFold(vm.OSDiskID, did) {
		if !strings.EqualFold(vm.OSDiskID, a.OriginalOSDiskID) {
			return fault.Terminal(fmt.Errorf("the VM's OS disk changed since the backup: it is %s, not %s", vm.OSDiskID, a.OriginalOSDiskID))
		}
		if vm.Power != vms.PowerDeallocated {
			if err := r.deallocate(ctx, r.vm); err != nil {
				return fmt.Errorf("deallocate VM: %w", err)
			}
		}
		tags := vm.Tags
		tags[incident.TagOriginalOSDisk] = tagValue(a.OriginalOSDiskID)
		if err := r.swapOSDisk(ctx, r.vm, did, tags); err != nil {
			return fmt.Errorf("swap the OS disk: %w", err)
		}
		vm.Power = vms.PowerDeallocated
	} else if err := r.found(ctx, "VirtualMachines.BeginUpdate", r.vm.String()); err != nil {
		return err
	}
	r.made.Swapped, r.made.PatchedOSDiskID = true, did

	if vm.Power != vms.PowerRunning && vm.Power != vms.PowerStarting {
		if err := r.start(ctx, r.vm); err != nil {
			return fmt.Errorf("start VM: %w", err)
		}
	}
	at := r.p.now().Add(p.Config.ReproWait)
	if r.dry {
		at = time.Time{}
	}
	if err := r.complete(ctx, incident.StageHarvestDump, at, 0); err != nil {
		return err
	}
	// A crash alert that arrived while this stage ran found no completed stage to act on.
	if sig, ok := r.crashSignalSince(ctx, r.began); ok {
		return p.bringForward(ctx, r.msg.IncidentID, r.nextMessage(incident.StageHarvestDump, r.art()), sig)
	}
	return nil
}

// crashSignalSince finds a VirtualMachineCrashed alert recorded on the incident after t, reading
// the trail again.
func (r *run) crashSignalSince(ctx context.Context, t time.Time) (time.Time, bool) {
	recs, err := r.p.Trail.Read(ctx, r.msg.IncidentID)
	if err != nil {
		return time.Time{}, false
	}
	return crashSignalAfter(recs, t)
}

// Signal is intake's hook for a further alert on an active incident: a VirtualMachineCrashed
// alert while the incident waits in ReattachReboot's reproduction wait sends HarvestDump at once.
// The scheduled HarvestDump then finds the work done and is absorbed.
func (p *Pipeline) Signal(ctx context.Context, incidentID, vmResourceID string, trig incident.Trigger) error {
	if trig.Annotation != intake.AnnotationCrashed {
		return nil
	}
	recs, err := p.Trail.Read(ctx, incidentID)
	if err != nil {
		return fmt.Errorf("read audit trail: %w", err)
	}
	var done *time.Time
	for _, rec := range recs {
		if rec.Stage == string(incident.StageReattachReboot) && rec.Event == incident.EventSucceeded && detailOf(rec).Completed {
			t := rec.Time
			done = &t
		}
	}
	if done == nil {
		return nil // ReattachReboot looks for the alert itself when it completes
	}
	for _, rec := range recs {
		if rec.Stage == string(incident.StageHarvestDump) && rec.Time.After(*done) {
			return nil // the harvest is under way
		}
	}
	v := summarize(incidentID, recs)
	if v.DryRun {
		return nil
	}
	msg := incident.Message{Version: incident.MessageVersion, IncidentID: incidentID, VMResourceID: v.VMResourceID,
		Stage: incident.StageHarvestDump, Trigger: trigOf(v.Trigger), Artifacts: v.Artifacts}
	if msg.VMResourceID == "" {
		msg.VMResourceID = vmResourceID
	}
	return p.bringForward(ctx, incidentID, msg, p.now())
}

// bringForward sends HarvestDump now. Its MessageID (signalAttempt) differs from the scheduled
// one, and duplicate detection absorbs a second bring-forward.
func (p *Pipeline) bringForward(ctx context.Context, incidentID string, msg incident.Message, at time.Time) error {
	if _, err := p.Trail.Append(ctx, incidentID, auditEntry(msg.VMResourceID, incident.StageReattachReboot, incident.EventSkipped,
		detail{Reason: "crash alert during the reproduction wait at " + at.Format(time.RFC3339) + ": harvest brought forward"})); err != nil {
		return err
	}
	if err := p.Bus.Send(ctx, msg, bus.SendOptions{Attempt: signalAttempt}); err != nil {
		return fmt.Errorf("bring harvest forward: %w", err)
	}
	p.log().Info("harvest brought forward by a crash alert", "incidentId", incidentID)
	return nil
}

func trigOf(t *incident.Trigger) incident.Trigger {
	if t == nil {
		return incident.Trigger{Kind: incident.TriggerAlert}
	}
	return *t
}
