package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lock"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// A rescue VM serves many incidents but does some things one at a time: it runs one Run Command
// at a time, and takes one VM-level operation (a data disk attach or detach, the submission of a
// Run Command) at a time. ARM refuses a second one with 409 Conflict, and every refused request is
// a write counted against the subscription's write budget (1,200 an hour): finding out by trying
// spends the budget the incidents need. So incidents take turns through two blob reservations per
// rescue VM (lock.SlotAgent, lock.SlotUpdate), as they reserve LUNs, and an incident that finds a
// turn taken waits without sending ARM anything: in line in its invocation first (wake.go), then
// by a scheduled message.
//
// A turn whose holder can no longer use it is taken over: its incident is over (closed, failed)
// or has no trail, or it has been held longer than any use of it lasts (a crashed holder that no
// redelivery brought back). A redelivered message of the holder finds its own turn and resumes.
const (
	// agentSlotWait is the pause before an incident looks at a taken agent slot again once it
	// has waited in line (wake.go) for Pipeline.LineWait: a fraction of an agent run (the Run
	// Command's own overhead is about 30 seconds).
	agentSlotWait = 20 * time.Second
	// agentSlotHold: an agent slot held longer than this is stale whoever holds it: the holder's
	// Run Command has ended by its own timeout.
	agentSlotHold = runTimeout + 10*time.Minute
	// updateSlotHold: an update slot held longer than this is stale: an attach, a detach or the
	// submission of a Run Command ends well within it.
	updateSlotHold = 5 * time.Minute
	// updateSlotGrace: an update slot taken longer ago than this while the rescue VM shows no
	// operation in progress (it is not Updating) is stale: its holder died after taking it, or
	// its retry found the work done and never came back to give it back.
	updateSlotGrace = 10 * time.Second
	// slotReleaseTimeout bounds giving a turn back, which is done even when the invocation's
	// context has ended.
	slotReleaseTimeout = 30 * time.Second
)

// provisioningUpdating is a VM's provisioning state while an operation on it is in progress.
const provisioningUpdating = "Updating"

// reserveSlot takes a slot of a rescue VM for the run's incident, or takes it over from a stale
// holder (hold is the slot's longest use; idle, when set, tells whether the rescue VM shows none
// of the holder's work, asked once the holder has had the slot for updateSlotGrace). It reports
// the holder when another incident has it.
func (p *Pipeline) reserveSlot(ctx context.Context, r *run, s lock.Slot, rescueVMID string, hold time.Duration, idle func(context.Context) (bool, error)) (bool, lock.Holder, error) {
	ok, h, err := p.Locks.ReserveSlot(ctx, s, rescueVMID, r.msg.IncidentID)
	if err != nil || ok {
		return ok, h, err
	}
	why, stale := p.staleHolder(ctx, h, hold)
	if !stale && idle != nil && p.now().Sub(h.Since) > updateSlotGrace {
		if stale, err = idle(ctx); err != nil {
			return false, h, err
		}
		why = fmt.Sprintf("held for %s and the rescue VM shows no operation in progress", p.now().Sub(h.Since).Round(time.Second))
	}
	if !stale {
		return false, h, nil
	}
	ok, now, err := p.Locks.TakeOverSlot(ctx, s, rescueVMID, h, r.msg.IncidentID)
	if err != nil || !ok {
		return ok, now, err
	}
	return true, now, r.note(ctx, fmt.Sprintf("%s slot of %s taken over from incident %s: %s", s, lastSegment(rescueVMID), h.IncidentID, why))
}

// staleHolder reports a holder that can no longer use its turn, and why.
func (p *Pipeline) staleHolder(ctx context.Context, h lock.Holder, hold time.Duration) (string, bool) {
	if age := p.now().Sub(h.Since); age > hold {
		return fmt.Sprintf("held for %s, longer than any use of it (%s)", age.Round(time.Second), hold), true
	}
	state, err := p.Trail.State(ctx, h.IncidentID)
	switch {
	case errors.Is(err, audit.ErrNotFound):
		return "the incident has no audit trail", true
	case err != nil:
		return "", false // unknown: keep waiting
	case state != incident.StateActive:
		return "the incident is " + state, true
	}
	return "", false
}

// releaseSlot gives a turn back, also after the invocation's context ended. A turn already given
// back or taken over is no error.
func (p *Pipeline) releaseSlot(ctx context.Context, r *run, s lock.Slot, rescueVMID string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), slotReleaseTimeout)
	defer cancel()
	if err := p.Locks.ReleaseSlot(ctx, s, rescueVMID, r.msg.IncidentID); err != nil && !isNotHolder(err) {
		return fmt.Errorf("give back the %s slot of %s: %w", s, lastSegment(rescueVMID), err)
	}
	p.lines.wakeFirst(slotLine(s, rescueVMID))
	return nil
}

// slotLine is the line of invocations waiting for a slot of a rescue VM.
func slotLine(s lock.Slot, rescueVMID string) string {
	return string(s) + " " + strings.ToLower(rescueVMID)
}

// awaitSlot takes a slot of a rescue VM (reserveSlot), waiting in this process's line for it
// within what is left of the invocation's time in line (Pipeline.LineWait), at its head when
// first is set; got is false, with the holder, when it is still taken after that.
func (p *Pipeline) awaitSlot(ctx context.Context, r *run, s lock.Slot, rescueVMID string, first bool, hold time.Duration, idle func(context.Context) (bool, error)) (got bool, holder lock.Holder, err error) {
	again := agentSlotWait
	if s == lock.SlotUpdate {
		again = updateSlotGrace
	}
	waiting := false
	got, err = waitInLine(ctx, r.exit, &p.lines, slotLine(s, rescueVMID), first, p.linePoll(again), r.lineLeft(),
		func(ctx context.Context) (bool, error) {
			ok, h, err := p.reserveSlot(ctx, r, s, rescueVMID, hold, idle)
			holder = h
			if err != nil || ok || waiting {
				return ok, err
			}
			waiting = true
			return false, r.note(ctx, fmt.Sprintf("the %s slot of %s is held by incident %s: waiting in line", s, lastSegment(rescueVMID), h.IncidentID))
		})
	return got, holder, err
}

// updateSlot takes the update slot of a rescue VM for one VM-level operation (what), waiting for it
// in line (wake.go) within what is left of the invocation's time in line; after that it asks
// for the stage to run again later. first puts the operation ahead of the others in line: the
// submission of a Run Command, which sets the rescue VM's agent to work, goes before attaches and
// detaches, which only prepare or end work. The returned release gives the slot back; calling it
// more than once is harmless. In a dry run nothing is reserved.
func (r *run) updateSlot(ctx context.Context, rescue resourceid.ID, what string, first bool) (release func(), err error) {
	if r.dry {
		return func() {}, nil
	}
	ok, h, err := r.p.awaitSlot(ctx, r, lock.SlotUpdate, rescue.String(), first, updateSlotHold, func(ctx context.Context) (bool, error) {
		vm, err := r.p.getVM(ctx, rescue, false)
		if err != nil {
			return false, fmt.Errorf("read rescue VM %s: %w", rescue.Name, err)
		}
		return !strings.EqualFold(vm.Provisioning, provisioningUpdating), nil
	})
	if err != nil {
		return nil, fmt.Errorf("update slot of %s: %w", rescue.Name, err)
	}
	if !ok {
		return nil, &waitError{reason: fmt.Sprintf("rescue VM %s is busy with an operation of incident %s (%s waits)", rescue.Name, h.IncidentID, what),
			delay: armerr.ConflictDelay, unbounded: true}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			if err := r.p.releaseSlot(ctx, r, lock.SlotUpdate, rescue.String()); err != nil {
				r.log.Warn("update slot not given back: it is taken over once stale", "rescueVm", rescue.Name, "err", err)
			}
		})
	}, nil
}

// lastSegment is the name at the end of a resource id.
func lastSegment(id string) string {
	if rid, err := resourceid.ParseVM(id); err == nil {
		return rid.Name
	}
	return id
}
