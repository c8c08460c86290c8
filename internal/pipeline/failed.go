package pipeline

import (
	"context"
	"fmt"
	"strings"

	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lifecycle"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/vms"
)

// rollback is the Failed stage. It takes the dead letters of every queue, the rollbacks queued
// after a terminal failure or a stall, and RemediationRollback's requests. It records the failure,
// puts the VM's original OS disk back if it was swapped, detaches the incident's disks from the
// rescue VMs, gives back its LUNs and the VM lock, and publishes the event.
//
// It only ever undoes the incident's own work: it swaps back only when the VM's OS disk is the
// incident's patched disk, and detaches only the incident's disks. Disks and snapshots are left
// for the Janitor, which removes them once the incident is over (the backup snapshot only after
// the retention period).
func (p *Pipeline) rollback(ctx context.Context, r *run) error {
	if r.state == incident.StateRejected {
		return r.note(ctx, "the incident was rejected at intake: nothing to roll back")
	}
	deadLetter := r.msg.Stage != incident.StageFailed
	if deadLetter && !r.deadLetterRecorded() {
		reason := fmt.Sprintf("the %s stage's message %s was dead-lettered: it failed on every delivery", r.msg.Stage, r.d.MessageID)
		if r.d.DeadLetterReason != "" {
			reason = fmt.Sprintf("the %s stage's message %s was dead-lettered by Service Bus: %s", r.msg.Stage, r.d.MessageID,
				clip(strings.TrimSuffix(r.d.DeadLetterReason+": "+r.d.DeadLetterErrorDescription, ": "), 500))
		}
		if err := r.append(ctx, incident.EventFailed, detail{Reason: reason, RollbackQueued: true, MessageID: r.d.MessageID}, ""); err != nil {
			return err
		}
	}
	// A stage delivery that started before this one may still be making something: wait for it,
	// so that what it makes is undone here (overlap.go).
	if err := r.awaitStages(ctx); err != nil {
		return err
	}
	// The disk to put back is what the incident recorded, or the tag the swap set on the VM in
	// the same request; never the message's word alone, which would let a message name any disk
	// of the subscription.
	original := summarize(r.msg.IncidentID, r.recs).Artifacts.OriginalOSDiskID
	patched := diskID(r.vm, incident.RescueDiskName(r.msg.IncidentID))

	vm, err := p.getVM(ctx, r.vm, true)
	vmGone := armerr.IsNotFound(err)
	if err != nil && !vmGone {
		return fmt.Errorf("read VM: %w", err)
	}
	swappedBack := false
	if !vmGone && original == "" {
		original, _ = vm.Tag(incident.TagOriginalOSDisk)
	}
	if m := r.msg.Artifacts.OriginalOSDiskID; m != "" && !strings.EqualFold(m, original) {
		if err := r.note(ctx, fmt.Sprintf("the message names %s as the original OS disk, which is not what the incident recorded: it is ignored", m)); err != nil {
			return err
		}
	}
	if !vmGone && strings.EqualFold(vm.OSDiskID, patched) {
		if _, perr := resourceid.ParseDisk(original); perr != nil || strings.EqualFold(original, patched) {
			return r.note(ctx, "the VM runs on the patched disk but the original OS disk is unknown: the OS disk is left as it is")
		}
		if vm.Power != vms.PowerDeallocated {
			if err := r.deallocate(ctx, r.vm); err != nil {
				return fmt.Errorf("deallocate VM: %w", err)
			}
		}
		tags := vm.Tags
		for k := range tags {
			if strings.EqualFold(k, incident.TagOriginalOSDisk) {
				delete(tags, k)
			}
		}
		if err := r.swapOSDisk(ctx, r.vm, original, tags); err != nil {
			return fmt.Errorf("put the original OS disk back: %w", err)
		}
		r.made.Swapped, swappedBack = false, true
		vm.OSDiskID, vm.Power = original, vms.PowerDeallocated
	}
	if swappedBack || (!vmGone && original != "" && strings.EqualFold(vm.OSDiskID, original) && swappedIn(r.recs)) {
		// The Janitor keeps a patched disk that is, or was last, the VM's OS disk; now that the
		// original is back it is temporary again.
		if err := r.checkpoint(ctx, checkpointSwappedBack, detail{Reason: "the original OS disk is back: " + original}); err != nil {
			return err
		}
	}
	for _, name := range []string{incident.RescueDiskName(r.msg.IncidentID), incident.HarvestDiskName(r.msg.IncidentID)} {
		d, ok, err := p.getDisk(ctx, r.vm.SubscriptionID, r.vm.ResourceGroup, name)
		if err != nil {
			return fmt.Errorf("read disk %s: %w", name, err)
		}
		if ok && d.ManagedBy != "" && p.isRescueVM(d.ManagedBy) {
			if err := r.detach(ctx, mustVM(d.ManagedBy), d.ID); err != nil {
				return fmt.Errorf("detach %s: %w", name, err)
			}
		}
	}
	if !r.dry {
		if err := p.releaseLUNs(ctx, r.msg.IncidentID); err != nil {
			return err
		}
	}
	if !vmGone && !p.Config.LeaveDeallocated && vm.Power != vms.PowerRunning && vm.Power != vms.PowerStarting {
		if err := r.start(ctx, r.vm); err != nil {
			return fmt.Errorf("start VM: %w", err)
		}
	}
	reason := "rollback requested"
	state, typ := incident.StateClosed, lifecycle.TypeRolledBack
	if r.state == incident.StateFailed || deadLetter || r.rollbackQueued() {
		state, typ, reason = incident.StateFailed, lifecycle.TypeFailed, "rolled back after a failure"
	}
	if swappedBack {
		reason += "; the original OS disk is back"
	}
	return r.end(ctx, state, incident.EventRolledBack, incident.OutcomeRolledBack, reason, typ)
}

// nothingToRollBack handles, before the Failed stage starts, a delivery with nothing to undo, and
// makes nothing, so it records no "started" (overlap.go):
//   - The incident is over and no rollback was requested since it ended: another Failed
//     delivery rolled it back (a dead letter and an escalation, or a rollback's retry, arriving
//     after it), or it closed. A late dead letter of a closed incident would otherwise undo a
//     repair. RemediationRollback's request records itself first, so a rollback asked for after
//     the end still runs.
//   - A dead letter of a stage that completed and went on. A dead letter says that one message
//     failed on every delivery (in chaos, its deliveries died with the handler), not that the
//     incident failed: the stage's next message is sent again, as a redelivery would have
//     (duplicate detection absorbs it when it went out), and nothing is rolled back.
func (r *run) nothingToRollBack(ctx context.Context) (bool, error) {
	if r.state != incident.StateActive && !rollbackRequestedSinceEnd(r.recs) {
		return true, r.append(ctx, incident.EventSkipped, detail{MessageID: r.d.MessageID, Reason: fmt.Sprintf(
			"the incident is %s and no rollback was requested since it ended (message from the %s stage): nothing to roll back", r.state, r.msg.Stage)}, "")
	}
	if r.msg.Stage == incident.StageFailed || r.state != incident.StateActive {
		return false, nil
	}
	done, ok := completion(r.recs, r.msg.Stage)
	if !ok {
		return false, nil
	}
	r.log.Info("dead letter of a stage that completed: no rollback", "deadLetterStage", string(r.msg.Stage))
	if err := r.note(ctx, fmt.Sprintf("the %s stage's message %s was dead-lettered after the stage completed: no rollback",
		r.msg.Stage, r.d.MessageID)); err != nil {
		return true, err
	}
	return true, r.resend(ctx, done)
}

// rollbackRequestedSinceEnd reports a RemediationRollback request recorded after the incident's
// last closing or rolled-back record.
func rollbackRequestedSinceEnd(recs []audit.Record) bool {
	end, req := -1, -1
	for i, rec := range recs {
		switch {
		case rec.Event == incident.EventClosed || rec.Event == incident.EventRolledBack:
			end = i
		case rec.Stage == rollbackRequestStage && rec.Event == incident.EventStarted:
			req = i
		}
	}
	return req > end
}

// deadLetterRecorded reports that an earlier delivery of this dead letter recorded it.
func (r *run) deadLetterRecorded() bool {
	for _, rec := range r.recs {
		if rec.Stage == string(incident.StageFailed) && rec.Event == incident.EventFailed && detailOf(rec).MessageID == r.d.MessageID {
			return true
		}
	}
	return false
}

// rollbackQueued reports a failure record after which a rollback was queued.
func (r *run) rollbackQueued() bool {
	for _, rec := range r.recs {
		if rec.Event == incident.EventFailed && detailOf(rec).RollbackQueued {
			return true
		}
	}
	return false
}

// releaseLUNs gives back every LUN the incident holds on any rescue VM of the pool.
func (p *Pipeline) releaseLUNs(ctx context.Context, incidentID string) error {
	for _, id := range p.Config.RescueVMs {
		holders, err := p.Locks.LUNHolders(ctx, id)
		if err != nil {
			return fmt.Errorf("LUN reservations of %s: %w", id, err)
		}
		for lun, h := range holders {
			if h != incidentID {
				continue
			}
			if err := p.releaseLUN(ctx, id, lun, incidentID); err != nil && !isNotHolder(err) {
				return fmt.Errorf("release LUN %d of %s: %w", lun, id, err)
			}
		}
	}
	return nil
}
