package intake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// Trail is the part of the audit trail intake uses.
type Trail interface {
	Append(ctx context.Context, incidentID string, e audit.Entry) (audit.Record, error)
	Read(ctx context.Context, incidentID string) ([]audit.Record, error)
	State(ctx context.Context, incidentID string) (string, error)
}

// Locks is the part of the VM locks intake uses.
type Locks interface {
	AcquireVM(ctx context.Context, vmResourceID, incidentID string) (holder string, acquired bool, err error)
	TakeOverVM(ctx context.Context, vmResourceID, staleIncidentID, newIncidentID string) (holder string, acquired bool, err error)
}

// Scope is the policy of which VMs may be remediated.
type Scope interface {
	InScope(id resourceid.ID) bool
}

// Errors for errors.Is.
var (
	// ErrOutOfScope: the VM is outside the allowed subscriptions or resource groups (terminal).
	ErrOutOfScope = errors.New("VM is outside the configured scope")
	// ErrBusy: another intake is opening an incident for the VM right now (transient: retry).
	ErrBusy = errors.New("another incident is being opened for this VM")
)

// Intake opens incidents.
type Intake struct {
	Trail Trail
	Locks Locks
	Bus   bus.Sender
	Scope Scope
	Now   func() time.Time
	Log   *slog.Logger
	// OnSignal, when set, is told of each further alert recorded as a signal on an active
	// incident (the pipeline uses a crash alert to end the reproduction wait early). Its error is
	// returned, so that the alert is delivered again.
	OnSignal func(ctx context.Context, incidentID, vmResourceID string, trigger incident.Trigger) error
}

// Request asks for an incident on a VM.
type Request struct {
	VM      resourceid.ID
	Trigger incident.Trigger
	DryRun  bool
	// IncidentID, when set, is used as the new incident's id. Alerts derive it from the event, so
	// that a redelivered event resumes its own incident instead of opening another.
	IncidentID string
	// Signal records the request on the VM's active incident, if it has one, instead of refusing.
	Signal bool
}

// Result is what Open did.
type Result struct {
	IncidentID string
	// Opened is true when the request opened (or resumed opening) its own incident; false when the
	// VM already had an active incident, which IncidentID then names.
	Opened bool
}

// AlertIncidentID derives an incident id from an alert: its time and a hash of its event id.
func AlertIncidentID(eventID string, eventTime time.Time) string {
	sum := sha256.Sum256([]byte(eventID))
	return "inc-" + eventTime.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(sum[:3])
}

// Open opens an incident for req.VM, or finds the active one.
//
// The steps are ordered so that a crash anywhere is repaired by a redelivery: lock the VM (a
// conditional blob write, so exactly one incident wins), record "opened", then send the first stage
// message, whose MessageID makes a resend harmless.
func (in *Intake) Open(ctx context.Context, req Request) (Result, error) {
	if !in.Scope.InScope(req.VM) {
		return Result{}, fmt.Errorf("%s: %w", req.VM, ErrOutOfScope)
	}
	id := req.IncidentID
	if id == "" {
		id = incident.NewID(in.now())
	}
	if !incident.ValidID(id) {
		return Result{}, fmt.Errorf("open: invalid incident id %q", id)
	}
	vm := req.VM.String()
	holder, acquired, err := in.Locks.AcquireVM(ctx, vm, id)
	if err != nil {
		return Result{}, fmt.Errorf("lock VM: %w", err)
	}
	if !acquired && holder != id {
		state, err := in.Trail.State(ctx, holder)
		switch {
		case errors.Is(err, audit.ErrNotFound):
			// The holder has locked but not yet recorded: it is being opened right now.
			return Result{}, fmt.Errorf("VM locked by %s: %w", holder, ErrBusy)
		case err != nil:
			return Result{}, fmt.Errorf("state of %s: %w", holder, err)
		case state == incident.StateActive:
			if req.Signal {
				if _, err := in.Trail.Append(ctx, holder, audit.Entry{
					VMResourceID: vm, Stage: "intake", Event: incident.EventSignal,
					Detail: map[string]any{"trigger": req.Trigger},
				}); err != nil {
					return Result{}, fmt.Errorf("record signal on %s: %w", holder, err)
				}
				if in.OnSignal != nil {
					if err := in.OnSignal(ctx, holder, vm, req.Trigger); err != nil {
						return Result{}, fmt.Errorf("act on signal for %s: %w", holder, err)
					}
				}
			}
			return Result{IncidentID: holder}, nil
		}
		// The holder is closed or failed but kept its lock: take it over.
		_, ok, err := in.Locks.TakeOverVM(ctx, vm, holder, id)
		if err != nil {
			return Result{}, fmt.Errorf("take over lock from %s: %w", holder, err)
		}
		if !ok {
			return Result{}, fmt.Errorf("VM lock changed hands during takeover: %w", ErrBusy)
		}
	}
	state, err := in.Trail.State(ctx, id)
	if err == nil && state == incident.StateActive {
		// A handler that died between creating the incident's blob and writing its first record
		// left the blob empty: the redelivery writes "opened" now.
		if _, rerr := in.Trail.Read(ctx, id); errors.Is(rerr, audit.ErrNotFound) {
			err = rerr
		}
	}
	if errors.Is(err, audit.ErrNotFound) {
		_, err = in.Trail.Append(ctx, id, audit.Entry{
			VMResourceID: vm, Stage: "intake", Event: incident.EventOpened, State: incident.StateActive,
			Detail: map[string]any{"trigger": req.Trigger, "dryRun": req.DryRun},
		})
	} else if err == nil && state != incident.StateActive {
		// A late redelivery of the alert that opened an incident which has since ended.
		in.log().Info("alert redelivered after its incident ended", "incidentId", id, "state", state)
		return Result{IncidentID: id}, nil
	}
	if err != nil {
		return Result{}, fmt.Errorf("record opening of %s: %w", id, err)
	}
	msg := incident.Message{
		Version: incident.MessageVersion, IncidentID: id, VMResourceID: vm,
		Stage: incident.StageSnapshot, Trigger: req.Trigger, DryRun: req.DryRun,
	}
	if err := in.Bus.Send(ctx, msg, bus.SendOptions{}); err != nil {
		return Result{}, fmt.Errorf("send first stage of %s: %w", id, err)
	}
	in.log().Info("incident opened", "incidentId", id, "vm", vm, "trigger", req.Trigger.Kind, "dryRun", req.DryRun)
	return Result{IncidentID: id, Opened: true}, nil
}

// Reject records an alert that calls for no remediation, as an incident of its own in state
// rejected, so that operators can see why a VM was not remediated.
func (in *Intake) Reject(ctx context.Context, d Decision, eventTime time.Time) (string, error) {
	id := AlertIncidentID(d.Trigger.EventID+"/rejected", eventTime)
	if d.Trigger.EventID == "" {
		id = incident.NewID(in.now())
	} else if _, err := in.Trail.State(ctx, id); err == nil {
		return id, nil // a redelivered event, already recorded
	}
	_, err := in.Trail.Append(ctx, id, audit.Entry{
		VMResourceID: d.VMResourceID, Stage: "intake", Event: incident.EventRejected, State: incident.StateRejected,
		Detail: map[string]any{"reason": d.Reason, "trigger": d.Trigger},
	})
	if err != nil {
		return "", fmt.Errorf("record rejection: %w", err)
	}
	in.log().Info("alert rejected", "incidentId", id, "vm", d.VMResourceID, "reason", d.Reason)
	return id, nil
}

func (in *Intake) now() time.Time {
	if in.Now != nil {
		return in.Now()
	}
	return time.Now()
}

func (in *Intake) log() *slog.Logger {
	if in.Log != nil {
		return in.Log
	}
	return slog.Default()
}
