// Package server is the custom handler's HTTP surface: the host's readiness probe, one route per
// function (POST /<FunctionName> with the host's invocation payload), and the forwarded HTTP API.
// It decodes, validates and dispatches; the work is done by intake, the pipeline stages and the
// janitor, behind small interfaces.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/vmrescue/vmrescue/internal/api"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/functions"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/intake"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// Delivery is what the host told about a Service Bus delivery.
type Delivery struct {
	MessageID     string
	DeliveryCount int
	EnqueuedTime  time.Time
	// DeadLetterReason and DeadLetterErrorDescription are what Service Bus set on a message it
	// dead-lettered (and forwarded to the failed queue); "" otherwise.
	DeadLetterReason, DeadLetterErrorDescription string
}

// StageRunner runs one pipeline stage for a validated message. A returned error is transient
// unless marked with fault.Terminal.
type StageRunner interface {
	Run(ctx context.Context, msg incident.Message, d Delivery) error
}

// TimerRunner runs the Janitor.
type TimerRunner interface {
	Run(ctx context.Context, t hostproto.Timer) error
}

// Trail is the part of the audit trail the server uses.
type Trail interface {
	Append(ctx context.Context, incidentID string, e audit.Entry) (audit.Record, error)
	State(ctx context.Context, incidentID string) (string, error)
}

// Intake opens incidents from alerts.
type Intake interface {
	Open(ctx context.Context, req intake.Request) (intake.Result, error)
	Reject(ctx context.Context, d intake.Decision, eventTime time.Time) (string, error)
}

// Server routes invocations.
type Server struct {
	Trail   Trail
	Intake  Intake
	API     *api.API
	Stages  map[incident.Stage]StageRunner
	Janitor TimerRunner
	Log     *slog.Logger
}

// Handler returns the routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	})
	if s.API != nil {
		s.API.Register(mux)
	}
	mux.HandleFunc("POST /{function}", s.invoke)
	return mux
}

// invoke handles POST /<FunctionName>.
func (s *Server) invoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("function")
	def, ok := functions.Lookup(name)
	if !ok || def.Trigger == functions.HTTP {
		inv := newInvocation(s.log(), name)
		inv.logf("unknown function %q", clip(name))
		inv.write(w, http.StatusNotFound, fmt.Errorf("%w: %q", hostproto.ErrUnknownFunction, clip(name)))
		return
	}
	inv := newInvocation(s.log(), name)
	req, err := hostproto.DecodeRequest(r.Body)
	if err != nil {
		// A body the host would never send: acknowledge so that nothing loops, and say why.
		inv.logf("rejected invocation: %v", err)
		inv.write(w, http.StatusOK, nil)
		return
	}
	switch def.Trigger {
	case functions.EventGrid:
		err = s.healthAlert(r.Context(), inv, req, def)
	case functions.ServiceBus:
		err = s.stage(r.Context(), inv, req, def)
	case functions.Timer:
		err = s.timer(r.Context(), inv, req, def)
	}
	if err != nil && !fault.IsTerminal(err) {
		inv.logf("transient failure, the host will retry: %v", err)
		inv.write(w, http.StatusInternalServerError, err)
		return
	}
	if err != nil {
		inv.logf("terminal failure, acknowledged: %v", err)
	}
	inv.write(w, http.StatusOK, nil)
}

func (s *Server) healthAlert(ctx context.Context, inv *invocation, req *hostproto.Request, def functions.Def) error {
	events, err := req.Events(def.Binding)
	if err != nil {
		inv.logf("rejected event: %v", err)
		if _, rerr := s.Intake.Reject(ctx, intake.Decision{Reason: "undecodable event: " + err.Error(),
			Trigger: incident.Trigger{Kind: incident.TriggerAlert}}, time.Now()); rerr != nil {
			return rerr
		}
		return nil
	}
	var errs []error
	for _, ev := range events {
		d := intake.Classify(ev.ID, ev.Type, ev.Time, ev.Data)
		if d.Act {
			res, err := s.Intake.Open(ctx, intake.Request{
				VM: d.VM, Trigger: d.Trigger, Signal: true,
				IncidentID: intake.AlertIncidentID(ev.ID, eventTime(ev)),
			})
			switch {
			case err == nil && res.Opened:
				inv.logf("event %s opened incident %s for %s", ev.ID, res.IncidentID, d.VMResourceID)
				continue
			case err == nil:
				inv.logf("event %s recorded as a signal on active incident %s", ev.ID, res.IncidentID)
				continue
			case errors.Is(err, intake.ErrOutOfScope):
				d.Act, d.Reason = false, "VM is outside the configured subscriptions and resource groups"
			default:
				errs = append(errs, fmt.Errorf("event %s: %w", ev.ID, err))
				continue
			}
		}
		id, err := s.Intake.Reject(ctx, d, eventTime(ev))
		if err != nil {
			errs = append(errs, fmt.Errorf("event %s: %w", ev.ID, err))
			continue
		}
		inv.logf("event %s ignored (%s), recorded as %s", ev.ID, d.Reason, id)
	}
	return errors.Join(errs...)
}

func eventTime(ev hostproto.Event) time.Time {
	if ev.Time.IsZero() {
		return time.Now()
	}
	return ev.Time
}

func (s *Server) stage(ctx context.Context, inv *invocation, req *hostproto.Request, def functions.Def) error {
	sbm, err := req.ServiceBus(def.Binding)
	if err != nil {
		return s.rejectMessage(ctx, inv, def, "", "", fmt.Errorf("undecodable message: %w", err))
	}
	var msg incident.Message
	if err := json.Unmarshal(sbm.Body, &msg); err != nil {
		return s.rejectMessage(ctx, inv, def, "", "", fmt.Errorf("message body is not a stage message: %w", err))
	}
	inv.with("incidentId", msg.IncidentID, "stage", string(def.Stage), "vm", msg.VMResourceID, "deliveryCount", sbm.DeliveryCount)
	if err := validateMessage(msg, def); err != nil {
		return s.rejectMessage(ctx, inv, def, msg.IncidentID, msg.VMResourceID, err)
	}
	if _, err := s.Trail.State(ctx, msg.IncidentID); errors.Is(err, audit.ErrNotFound) {
		return s.rejectMessage(ctx, inv, def, "", msg.VMResourceID, fmt.Errorf("unknown incident %s", msg.IncidentID))
	} else if err != nil {
		return fmt.Errorf("read incident state: %w", err)
	}
	runner := s.Stages[def.Stage]
	if runner == nil {
		return fmt.Errorf("stage %s is not available in this build", def.Stage)
	}
	err = runner.Run(ctx, msg, Delivery{MessageID: sbm.MessageID, DeliveryCount: sbm.DeliveryCount, EnqueuedTime: sbm.EnqueuedTime,
		DeadLetterReason:           sbm.ApplicationProperties["DeadLetterReason"],
		DeadLetterErrorDescription: sbm.ApplicationProperties["DeadLetterErrorDescription"]})
	if err != nil && fault.IsTerminal(err) && !fault.IsRecorded(err) {
		if _, aerr := s.Trail.Append(ctx, msg.IncidentID, audit.Entry{
			VMResourceID: msg.VMResourceID, Stage: string(def.Stage), Event: incident.EventFailed,
			Detail: map[string]any{"reason": err.Error(), "terminal": true},
		}); aerr != nil {
			return fmt.Errorf("record terminal failure: %w", aerr)
		}
	}
	return err
}

// validateMessage checks a stage message against the queue it came from.
func validateMessage(msg incident.Message, def functions.Def) error {
	var errs []error
	if msg.Version != incident.MessageVersion {
		errs = append(errs, fmt.Errorf("version %d is not %d", msg.Version, incident.MessageVersion))
	}
	if !incident.ValidID(msg.IncidentID) {
		errs = append(errs, fmt.Errorf("incidentId %q is not an incident id", clip(msg.IncidentID)))
	}
	if err := resourceid.CheckVM(msg.VMResourceID); err != nil {
		errs = append(errs, fmt.Errorf("vmResourceId: %w", err))
	}
	// Dead letters of every queue are forwarded to "failed" with their original body, so Failed
	// takes any stage; every other queue takes only its own.
	if def.Stage == incident.StageFailed {
		if !msg.Stage.Valid() {
			errs = append(errs, fmt.Errorf("stage %q is unknown", clip(string(msg.Stage))))
		}
	} else if msg.Stage != def.Stage {
		errs = append(errs, fmt.Errorf("stage %q does not match queue %q", clip(string(msg.Stage)), def.Queue))
	}
	if k := msg.Trigger.Kind; k != incident.TriggerAlert && k != incident.TriggerManual {
		errs = append(errs, fmt.Errorf("trigger kind %q is not alert or manual", clip(k)))
	}
	return errors.Join(errs...)
}

// rejectMessage records a poison message and acknowledges it. The rejection goes on the incident's
// own trail when the message names a known incident, else on a rejected incident of its own.
func (s *Server) rejectMessage(ctx context.Context, inv *invocation, def functions.Def, id, vm string, cause error) error {
	target := id
	state := ""
	if target != "" && incident.ValidID(target) {
		if _, err := s.Trail.State(ctx, target); err != nil {
			target = ""
		}
	} else {
		target = ""
	}
	if target == "" {
		target, state = incident.NewID(time.Now()), incident.StateRejected
	}
	if _, err := s.Trail.Append(ctx, target, audit.Entry{
		VMResourceID: clip(vm), Stage: string(def.Stage), Event: incident.EventRejected, State: state,
		Detail: map[string]any{"reason": cause.Error(), "queue": def.Queue},
	}); err != nil {
		return fmt.Errorf("record rejected message: %w", err)
	}
	inv.logf("message rejected on %s, recorded as %s: %v", def.Queue, target, cause)
	return fault.Terminal(cause)
}

func (s *Server) timer(ctx context.Context, inv *invocation, req *hostproto.Request, def functions.Def) error {
	t, err := req.Timer(def.Binding)
	if err != nil {
		return fault.Terminal(fmt.Errorf("undecodable timer: %w", err))
	}
	if s.Janitor == nil {
		return fmt.Errorf("janitor is not available in this build")
	}
	if t.IsPastDue {
		inv.logf("timer is past due; running now")
	}
	return s.Janitor.Run(ctx, t)
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
