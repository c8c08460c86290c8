package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lifecycle"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/server"
)

// stageRunner adapts one stage function to server.StageRunner.
type stageRunner struct {
	p     *Pipeline
	stage incident.Stage
	fn    func(ctx context.Context, r *run) error
}

// Run implements server.StageRunner.
func (s *stageRunner) Run(ctx context.Context, msg incident.Message, d server.Delivery) error {
	ctx = armclient.WithCorrelation(ctx, msg.IncidentID)
	r, proceed, err := s.p.begin(ctx, s.stage, msg, d)
	if err != nil || !proceed {
		if r != nil && err != nil {
			return r.finish(ctx, err)
		}
		return err
	}
	if s.stage != incident.StageFailed {
		var unwatch func()
		r.exit, unwatch = s.p.exits.watch(msg.IncidentID)
		defer unwatch()
	}
	return r.finish(ctx, s.fn(ctx, r))
}

// run is one invocation of a stage.
type run struct {
	p     *Pipeline
	stage incident.Stage
	msg   incident.Message
	d     server.Delivery
	vm    resourceid.ID
	recs  []audit.Record // the trail as read when the invocation began
	state string         // the incident's state when the invocation began
	made  incident.Artifacts
	dry   bool
	log   *slog.Logger
	began time.Time
	// lineEnd ends the invocation's waits in line (wake.go): Pipeline.LineWait in all, however
	// many reservations it waits for.
	lineEnd time.Time
	// exit is closed when the incident's rollback begins in this process, which ends the
	// delivery's waits in line (wake.go). Nil for the Failed stage: it is the rollback.
	exit <-chan struct{}
}

// lineLeft is what is left of the invocation's time in line.
func (r *run) lineLeft() time.Duration {
	if r.lineEnd.IsZero() {
		r.lineEnd = time.Now().Add(r.p.lineWait())
	}
	return time.Until(r.lineEnd)
}

// detail is what the pipeline reads back from the details of its own records.
type detail struct {
	Completed   bool                `json:"completed,omitempty"`
	Next        incident.Stage      `json:"next,omitempty"`
	ScheduledAt *time.Time          `json:"scheduledAt,omitempty"`
	Attempt     int                 `json:"attempt,omitempty"`
	RetryAt     *time.Time          `json:"retryAt,omitempty"`
	NotBefore   *time.Time          `json:"notBefore,omitempty"`
	Artifacts   *incident.Artifacts `json:"artifacts,omitempty"`
	MessageID   string              `json:"messageId,omitempty"`
	Operation   string              `json:"operation,omitempty"`
	ResourceID  string              `json:"resourceId,omitempty"`
	DurationMS  *int64              `json:"durationMs,omitempty"` // set on every ARM write, 0 included
	DryRun      bool                `json:"dryRun,omitempty"`
	Reason      string              `json:"reason,omitempty"`
	Error       string              `json:"error,omitempty"`
	Outcome     string              `json:"outcome,omitempty"`
	Trigger     *incident.Trigger   `json:"trigger,omitempty"`
	// Checkpoint names progress inside a stage that a redelivery resumes from.
	Checkpoint string `json:"checkpoint,omitempty"`
	// Healthy is what HarvestDump saw of the VM before it touched it.
	Healthy *bool `json:"healthy,omitempty"`
	// RollbackQueued marks the failure record of a terminal failure or a stall, after which a
	// rollback was queued: the incident ends failed rather than closed.
	RollbackQueued bool `json:"rollbackQueued,omitempty"`
	// Unbounded marks a scheduled retry that waits for shared capacity (a LUN, a rescue VM's
	// turn, the write budget) or for another delivery of the incident (bounded by
	// inFlightWindow): it does not count against maxScheduledRetries.
	Unbounded bool `json:"unbounded,omitempty"`
}

func detailOf(rec audit.Record) detail {
	var d detail
	if len(rec.Detail) > 0 {
		_ = json.Unmarshal(rec.Detail, &d)
	}
	return d
}

// waitError asks for the stage to run again later, by a scheduled message.
type waitError struct {
	reason string
	delay  time.Duration
	// unbounded: waiting for rescue capacity never gives up, and waiting for another delivery
	// gives up only after inFlightWindow, whatever the number of retries.
	unbounded bool
}

func (w *waitError) Error() string { return "wait: " + w.reason }

func wait(delay time.Duration, format string, args ...any) error {
	return &waitError{reason: fmt.Sprintf(format, args...), delay: delay}
}

// refusal is a terminal refusal of the VM, recorded as the incident's outcome.
type refusal struct{ reasons []string }

func (r *refusal) Error() string { return "refused: " + strings.Join(r.reasons, "; ") }

// begin validates the message against the trail and records "started". It reports proceed=false
// when the message needs no work: the incident is no longer active, or the stage already
// completed (its next message is re-sent).
func (p *Pipeline) begin(ctx context.Context, stage incident.Stage, msg incident.Message, d server.Delivery) (*run, bool, error) {
	vm, err := resourceid.ParseVM(msg.VMResourceID)
	if err != nil {
		return nil, false, fault.Terminal(fmt.Errorf("vmResourceId: %w", err))
	}
	if err := p.checkArtifacts(vm, msg); err != nil {
		err = fmt.Errorf("artifacts point outside the incident's resources: %w", err)
		// Recorded on the incident when it has a trail; the message is never acted on.
		if _, serr := p.Trail.State(ctx, msg.IncidentID); serr == nil {
			if _, aerr := p.Trail.Append(ctx, msg.IncidentID, audit.Entry{VMResourceID: msg.VMResourceID, Stage: string(stage),
				Event: incident.EventRejected, Detail: detail{Reason: clip(err.Error(), 1000), MessageID: d.MessageID}}); aerr == nil {
				return nil, false, fault.Recorded(fault.Terminal(err))
			}
		}
		return nil, false, fault.Terminal(err)
	}
	state, err := p.Trail.State(ctx, msg.IncidentID)
	if err != nil {
		return nil, false, fmt.Errorf("read incident state: %w", err)
	}
	recs, err := p.Trail.Read(ctx, msg.IncidentID)
	if err != nil {
		return nil, false, fmt.Errorf("read audit trail: %w", err)
	}
	r := &run{
		p: p, stage: stage, msg: msg, d: d, vm: vm, recs: recs, state: state, dry: msg.DryRun, began: p.now(),
		log: p.log().With("incidentId", msg.IncidentID, "stage", string(stage), "vm", msg.VMResourceID, "dryRun", msg.DryRun),
	}
	if stage != incident.StageFailed {
		if state != incident.StateActive {
			r.log.Info("message absorbed: incident no longer active", "state", state)
			return r, false, r.append(ctx, incident.EventSkipped, detail{Reason: "incident is " + state + ": message absorbed", MessageID: d.MessageID}, "")
		}
		if mark, ok := rollbackMark(recs); ok {
			return r, false, r.yieldToRollback(ctx, mark, recs)
		}
		if done, ok := r.completed(); ok {
			r.log.Info("stage already completed: re-sending the next stage's message")
			return r, false, r.resend(ctx, done)
		}
		if fwd, ok := r.broughtForward(); ok {
			r.log.Info("message absorbed: the harvest was brought forward", "delivery", fwd)
			return r, false, r.append(ctx, incident.EventSkipped, detail{Reason: "the harvest was brought forward by a crash alert and runs as " + fwd +
				": the scheduled harvest is absorbed", MessageID: d.MessageID}, "")
		}
		if other, ok := r.inFlight(); ok {
			return r, false, p.awaitDelivery("delivery %s of this stage is still running", other)
		}
	} else if none, err := r.nothingToRollBack(ctx); none || err != nil {
		return r, false, err
	}
	if err := r.append(ctx, incident.EventStarted, map[string]any{
		"messageId": d.MessageID, "deliveryCount": d.DeliveryCount, "dryRun": msg.DryRun,
	}, ""); err != nil {
		return nil, false, err
	}
	if stage != incident.StageFailed {
		// The checks above and the "started" record are not one step: two deliveries that read
		// the trail at the same moment (the scheduled HarvestDump and the one a crash alert
		// brought forward, or a duplicate message) both pass them, and so does a delivery that
		// read the trail just before a rollback began. The trail orders the "started" records:
		// read it back; a rollback marked before this delivery started wins (see overlap.go),
		// and of two deliveries of this stage the later one yields to the earlier.
		recs, err := p.Trail.Read(ctx, msg.IncidentID)
		if err != nil {
			return r, false, fmt.Errorf("read audit trail: %w", err)
		}
		before := recs[:r.ownStart(recs)]
		if mark, ok := rollbackMark(before); ok {
			return r, false, r.yieldToRollback(ctx, mark, recs)
		}
		if other, ok := r.startedBefore(before); ok {
			return r, false, p.awaitDelivery("delivery %s of this stage started first", other)
		}
	}
	return r, true, nil
}

// startedBefore reports another delivery of this stage, among the records before this one's
// "started" record, that has not ended.
func (r *run) startedBefore(before []audit.Record) (string, bool) {
	other := &run{stage: r.stage, d: r.d, began: r.began, recs: before}
	return other.inFlight()
}

// broughtForward reports, for the HarvestDump message ReattachReboot scheduled after the
// reproduction wait, that a crash alert brought the harvest forward and its message was
// delivered: the MessageID of that delivery. The scheduled message then has nothing to do. The
// harvest goes on under the brought-forward message, which Service Bus redelivers until it is
// settled, and under the stage's own scheduled retries; without this, the scheduled message would
// wait for them, asking again every few seconds until the harvest ends. A redelivery of a
// scheduled message that had started itself (and so held the harvest then) is not absorbed.
func (r *run) broughtForward() (string, bool) {
	if r.stage != incident.StageHarvestDump || r.d.MessageID != incident.MessageID(r.msg.IncidentID, r.stage, 0) {
		return "", false
	}
	fwd := incident.MessageID(r.msg.IncidentID, r.stage, signalAttempt)
	found := false
	for _, rec := range r.recs {
		if rec.Stage != string(r.stage) || rec.Event != incident.EventStarted {
			continue
		}
		switch detailOf(rec).MessageID {
		case r.d.MessageID:
			return "", false // a redelivery of this message, which carried the harvest: it goes on
		case fwd:
			found = true
		}
	}
	return fwd, found
}

// completed returns this stage's completion record, if the trail has one.
func (r *run) completed() (detail, bool) { return completion(r.recs, r.stage) }

// completion returns a stage's completion record in recs.
func completion(recs []audit.Record, stage incident.Stage) (detail, bool) {
	for i := len(recs) - 1; i >= 0; i-- {
		rec := recs[i]
		if rec.Stage == string(stage) && rec.Event == incident.EventSucceeded {
			if d := detailOf(rec); d.Completed {
				return d, true
			}
		}
	}
	return detail{}, false
}

// inFlight reports another delivery of this stage that started recently and has not ended.
//
// A "retrying" record that names its message ends only that message's delivery: a delivery that
// yielded to another one started before it must not hide the other one.
func (r *run) inFlight() (string, bool) {
	ended := map[string]bool{}
	for i := len(r.recs) - 1; i >= 0; i-- {
		rec := r.recs[i]
		if rec.Stage != string(r.stage) {
			continue
		}
		d := detailOf(rec)
		switch rec.Event {
		case incident.EventStarted:
			if ended[d.MessageID] {
				continue
			}
			if d.MessageID != "" && d.MessageID != r.d.MessageID && r.began.Sub(rec.Time) < inFlightWindow {
				return d.MessageID, true
			}
			return "", false
		case incident.EventRetrying, incident.EventFailed:
			if d.Operation == "" {
				if rec.Event == incident.EventRetrying && d.MessageID != "" {
					ended[d.MessageID] = true
					continue
				}
				return "", false
			}
		}
	}
	return "", false
}

// resend re-sends the message a completed stage sent, as it sent it.
func (r *run) resend(ctx context.Context, done detail) error {
	if done.Next == "" {
		return r.append(ctx, incident.EventSkipped, detail{Reason: "stage already completed", MessageID: r.d.MessageID}, "")
	}
	art := r.msg.Artifacts
	if done.Artifacts != nil {
		art = merge(art, *done.Artifacts)
	}
	opts := bus.SendOptions{Attempt: done.Attempt}
	if done.ScheduledAt != nil {
		opts.ScheduledAt = *done.ScheduledAt
	}
	if err := r.p.Bus.Send(ctx, r.nextMessage(done.Next, art), opts); err != nil {
		return fmt.Errorf("re-send %s: %w", done.Next, err)
	}
	return r.append(ctx, incident.EventSkipped, detail{Reason: "stage already completed; next stage's message re-sent", Next: done.Next, MessageID: r.d.MessageID}, "")
}

// finish turns the stage's error into the server's answer: nil, a scheduled retry, a terminal
// failure (with a rollback queued) or a transient error for redelivery.
func (r *run) finish(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var ref *refusal
	if errors.As(err, &ref) {
		return r.refuse(ctx, ref)
	}
	if ctx.Err() != nil {
		return err // the invocation ended: let the host redeliver
	}
	if errors.Is(err, errRollbackBegun) {
		// The record ends this delivery on the trail: the rollback goes on, and undoes what the
		// delivery made.
		r.log.Info("message absorbed: the rollback began while the delivery waited in line")
		return r.append(ctx, incident.EventSkipped, detail{Reason: "the rollback began while this delivery waited in line: message absorbed",
			Artifacts: nonEmpty(r.made), MessageID: r.d.MessageID}, "")
	}
	err = armerr.Classify(err)
	var w *waitError
	if errors.As(err, &w) {
		return r.retryLater(ctx, w.reason, w.delay, w.unbounded, err)
	}
	if fault.IsTerminal(err) {
		r.log.Error("stage failed terminally", "err", err)
		if eerr := r.escalate(ctx, err); eerr != nil {
			// Not acknowledged: the redelivery finds the failure record and sends the rollback
			// (yieldToRollback), or fails again and records it.
			r.log.Error("could not queue the rollback", "err", eerr)
			return fmt.Errorf("queue the rollback: %w (after: %s)", eerr, err.Error())
		}
		if r.stage != incident.StageFailed {
			return fault.Recorded(err) // escalate wrote the failed record
		}
		return err
	}
	if d, ok := fault.Delay(err); ok {
		if _, asked := armerr.RetryAfter(err); asked {
			d = r.p.clockWait(d) // ARM's Retry-After, not one of vmrescue's own waits
		}
		// ARM's throttling is the subscription's write budget, shared by every incident: an
		// incident may meet it any number of times, and waits for it as for rescue capacity.
		return r.retryLater(ctx, err.Error(), d, armerr.IsThrottled(err), err)
	}
	r.log.Warn("transient failure: the message will be redelivered", "err", err)
	// The record ends this delivery on the trail: a rollback waiting for it goes on.
	if aerr := r.append(ctx, incident.EventRetrying, detail{Reason: "transient failure: the message will be redelivered",
		Error: clip(err.Error(), 500), MessageID: r.d.MessageID}, ""); aerr != nil {
		r.log.Warn("transient failure not recorded", "err", aerr)
	}
	return err
}

// retryLater schedules this stage again after delay and acknowledges the current message. The
// attempt number (and so the MessageID) counts every scheduled retry of the stage; the bound
// maxScheduledRetries counts only those that were not unbounded waits for shared capacity.
func (r *run) retryLater(ctx context.Context, reason string, delay time.Duration, unbounded bool, cause error) error {
	n, bounded := 1, 0
	for _, rec := range r.recs {
		if rec.Stage == string(r.stage) && rec.Event == incident.EventRetrying {
			if d := detailOf(rec); d.Attempt > 0 && d.RetryAt != nil {
				n = max(n, d.Attempt+1)
				if !d.Unbounded {
					bounded++
				}
			}
		}
	}
	if !unbounded && bounded >= maxScheduledRetries {
		r.log.Warn("scheduled retries exhausted: the message will be redelivered", "attempts", bounded, "reason", reason)
		return fmt.Errorf("%s (after %d scheduled retries): %w", reason, bounded, cause)
	}
	at := r.p.now().Add(delay)
	if err := r.append(ctx, incident.EventRetrying, detail{Reason: clip(reason, 500), Attempt: n, RetryAt: &at, NotBefore: &at,
		Unbounded: unbounded, Artifacts: nonEmpty(r.made), MessageID: r.d.MessageID}, ""); err != nil {
		return err
	}
	msg, attempt := r.msg, n
	msg.Artifacts = merge(r.msg.Artifacts, r.made)
	if r.stage == incident.StageFailed {
		// A dead letter carries the stage it came from; its retry is the Failed stage's own.
		msg.Stage, attempt = incident.StageFailed, rollbackRetryBase+n
	}
	if err := r.p.Bus.Send(ctx, msg, bus.SendOptions{Attempt: attempt, ScheduledAt: at}); err != nil {
		return fmt.Errorf("schedule retry %d of %s: %w", n, r.stage, err)
	}
	r.log.Info("stage scheduled again", "attempt", n, "at", at, "reason", reason)
	return nil
}

// escalate records a terminal failure and queues the rollback.
func (r *run) escalate(ctx context.Context, cause error) error {
	if r.stage == incident.StageFailed {
		return nil
	}
	if err := r.append(ctx, incident.EventFailed, detail{Reason: clip(cause.Error(), 1000), Artifacts: nonEmpty(r.made), RollbackQueued: true,
		MessageID: r.d.MessageID, Attempt: escalateAttempt}, ""); err != nil {
		return err
	}
	msg := r.nextMessage(incident.StageFailed, merge(r.msg.Artifacts, r.made))
	return r.p.Bus.Send(ctx, msg, bus.SendOptions{Attempt: escalateAttempt})
}

// refuse records a refusal as the incident's outcome: nothing was made, nothing to roll back.
func (r *run) refuse(ctx context.Context, ref *refusal) error {
	r.log.Info("VM refused", "reasons", ref.reasons)
	return r.close(ctx, incident.OutcomeRefused, strings.Join(ref.reasons, "; "))
}

// complete records the stage's completion and sends the next stage's message, scheduled at at
// when it is not zero.
func (r *run) complete(ctx context.Context, next incident.Stage, at time.Time, attempt int) error {
	d := detail{Completed: true, Next: next, Artifacts: nonEmpty(r.made), Attempt: attempt, MessageID: r.d.MessageID}
	if !at.IsZero() {
		d.ScheduledAt, d.NotBefore = &at, &at
	}
	if err := r.append(ctx, incident.EventSucceeded, d, ""); err != nil {
		return err
	}
	opts := bus.SendOptions{Attempt: attempt, ScheduledAt: at}
	if err := r.p.Bus.Send(ctx, r.nextMessage(next, merge(r.msg.Artifacts, r.made)), opts); err != nil {
		return fmt.Errorf("send %s: %w", next, err)
	}
	r.log.Info("stage completed", "next", string(next), "scheduledAt", at)
	return nil
}

func (r *run) nextMessage(stage incident.Stage, art incident.Artifacts) incident.Message {
	return incident.Message{
		Version: incident.MessageVersion, IncidentID: r.msg.IncidentID, VMResourceID: r.msg.VMResourceID,
		Stage: stage, Trigger: r.msg.Trigger, DryRun: r.msg.DryRun, Artifacts: art,
	}
}

// close ends the incident: the VM lock is released, the closing record written, and the
// lifecycle event published.
func (r *run) close(ctx context.Context, outcome, reason string) error {
	return r.end(ctx, incident.StateClosed, incident.EventClosed, outcome, reason, lifecycle.TypeClosed)
}

// end releases the VM lock, writes the record that sets the final state, and publishes the
// lifecycle event. The lock goes first: a redelivery after a failed record finds the stage to
// redo, and releasing a lock already gone (or taken since by a new incident) is success.
func (r *run) end(ctx context.Context, state, event, outcome, reason, eventType string) error {
	if err := r.p.Locks.ReleaseVM(ctx, r.msg.VMResourceID, r.msg.IncidentID); err != nil && !isNotHolder(err) {
		return fmt.Errorf("release VM lock: %w", err)
	}
	r.made.Outcome = outcome
	if err := r.append(ctx, event, detail{Completed: true, Outcome: outcome, Reason: clip(reason, 1000), Artifacts: nonEmpty(r.made),
		MessageID: r.d.MessageID}, state); err != nil {
		return err
	}
	r.log.Info("incident ended", "state", state, "outcome", outcome)
	r.p.leaveBacklog(r.msg.IncidentID)
	data := lifecycle.Data{IncidentID: r.msg.IncidentID, VMResourceID: r.msg.VMResourceID, State: state, Outcome: outcome,
		Reason: reason, Artifacts: merge(r.msg.Artifacts, r.made), Time: r.p.now()}
	if err := r.p.Events.Publish(ctx, eventType, data); err != nil {
		// The incident is over either way; the record says the event is missing.
		r.log.Warn("lifecycle event not published", "err", err)
		_ = r.append(ctx, incident.EventSkipped, detail{Reason: "lifecycle event not published: " + clip(err.Error(), 300)}, "")
	}
	return nil
}

// append writes one record for this stage.
func (r *run) append(ctx context.Context, event string, d any, state string) error {
	_, err := r.p.Trail.Append(ctx, r.msg.IncidentID, audit.Entry{
		VMResourceID: r.msg.VMResourceID, Stage: string(r.stage), Event: event, Detail: d, State: state,
	})
	if err != nil {
		return fmt.Errorf("audit %s: %w", event, err)
	}
	return nil
}

// write makes one ARM write through fn and records it: operation, resource id, duration and,
// when it failed, the error. In a dry run it only records the write as planned.
func (r *run) write(ctx context.Context, op, resourceID string, fn func(ctx context.Context) error) error {
	if r.dry {
		return r.append(ctx, incident.EventSkipped, detail{Operation: op, ResourceID: resourceID, DryRun: true, Reason: "dry run: planned, not made"}, "")
	}
	if err := r.p.paceWrite(ctx, subscriptionOf(resourceID), op, r.stage); err != nil {
		return err
	}
	start := time.Now()
	err := fn(ctx)
	d := detail{Operation: op, ResourceID: resourceID, DurationMS: msSince(start)}
	event := incident.EventSucceeded
	if err != nil {
		d.Error = clip(err.Error(), 500)
		event = incident.EventRetrying
		if armerr.ClassOf(err) == armerr.Terminal {
			event = incident.EventFailed
		}
		if ctx.Err() != nil {
			return err // the invocation ended; nothing more can be recorded
		}
	}
	if aerr := r.append(ctx, event, d, ""); aerr != nil && err == nil {
		return aerr
	}
	return err
}

// checkpoint records progress inside the stage, with what the stage made so far, so that a
// redelivery after a crash resumes from it instead of redoing work whose inputs are gone.
func (r *run) checkpoint(ctx context.Context, name string, d detail) error {
	d.Checkpoint, d.Artifacts = name, nonEmpty(r.made)
	return r.append(ctx, incident.EventSucceeded, d, "")
}

// resume finds a checkpoint an earlier delivery of this stage recorded, and takes back what that
// delivery made.
func (r *run) resume(name string) (detail, bool) {
	for i := len(r.recs) - 1; i >= 0; i-- {
		rec := r.recs[i]
		if rec.Stage != string(r.stage) || rec.Event != incident.EventSucceeded {
			continue
		}
		if d := detailOf(rec); d.Checkpoint == name {
			if d.Artifacts != nil {
				r.made = merge(r.made, *d.Artifacts)
			}
			return d, true
		}
	}
	return detail{}, false
}

// found records that what a write would make is already there (an earlier attempt made it).
func (r *run) found(ctx context.Context, op, resourceID string) error {
	return r.append(ctx, incident.EventSkipped, detail{Operation: op, ResourceID: resourceID, Reason: "already there: made by an earlier attempt"}, "")
}

// note records a decision that is no ARM write.
func (r *run) note(ctx context.Context, reason string) error {
	return r.append(ctx, incident.EventSkipped, detail{Reason: reason}, "")
}

// art is the artifacts known now: the message's and what this run made.
func (r *run) art() incident.Artifacts { return merge(r.msg.Artifacts, r.made) }

// merge returns dst with every field set in src copied over it.
func merge(dst, src incident.Artifacts) incident.Artifacts {
	var a, b map[string]any
	da, _ := json.Marshal(dst)
	sb, _ := json.Marshal(src)
	_ = json.Unmarshal(da, &a)
	_ = json.Unmarshal(sb, &b)
	for k, v := range b {
		a[k] = v
	}
	merged, _ := json.Marshal(a)
	var out incident.Artifacts
	_ = json.Unmarshal(merged, &out)
	return out
}

func nonEmpty(a incident.Artifacts) *incident.Artifacts {
	if a == (incident.Artifacts{}) {
		return nil
	}
	return &a
}

// clip cuts s after at most n bytes, on a character boundary, and marks the cut with "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return cutUTF8(s, n) + "…"
}

// msSince is the whole milliseconds since start, for a write's record.
func msSince(start time.Time) *int64 { return ptr(time.Since(start).Milliseconds()) }
