package pipeline

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// A rollback and a stage delivery of the same incident must not overlap: a stage that attaches a
// disk after the rollback has looked for what to undo leaves that disk behind, attached to a
// rescue VM, for an incident that is over. The two meet on the incident's audit trail, which
// orders all its records: each writes its "started" record first and then reads the trail back.
//
//   - A stage delivery that finds, before its own "started" record, a rollback queued (a failure
//     record with rollbackQueued), requested (RemediationRollback's record) or begun (a Failed
//     delivery started) makes nothing: it records that it yields, and makes sure the rollback's
//     message is on its way.
//   - The Failed stage that finds, before its own "started" record, a stage delivery that started
//     and has not ended waits for it (a scheduled retry), and then reads the trail and ARM afresh.
//
// Of the two "started" records one comes first, so at least one of the two deliveries sees the
// other: either the stage yields, or the rollback waits for it and undoes what it made.

// rollbackRequestStage is the trail stage of RemediationRollback's request (internal/api).
const rollbackRequestStage = "rollback"

// rollbackRetryBase sets the Attempts of the Failed stage's scheduled retries apart from those of
// the Failed messages a terminal failure, the Janitor and the API send, so that duplicate
// detection never takes a retry for one of them.
const rollbackRetryBase = 100

// rollbackMark returns the last record of recs that queues, requests or begins a rollback.
func rollbackMark(recs []audit.Record) (audit.Record, bool) {
	for i := len(recs) - 1; i >= 0; i-- {
		if isRollbackMark(recs[i]) {
			return recs[i], true
		}
	}
	return audit.Record{}, false
}

func isRollbackMark(rec audit.Record) bool {
	switch {
	case rec.Event == incident.EventFailed && detailOf(rec).RollbackQueued:
		return true
	case rec.Event == incident.EventStarted:
		return rec.Stage == string(incident.StageFailed) || rec.Stage == rollbackRequestStage
	}
	return false
}

// ownStart returns the index in recs of this delivery's last "started" record, or len(recs) when
// there is none.
func (r *run) ownStart(recs []audit.Record) int {
	for i := len(recs) - 1; i >= 0; i-- {
		rec := recs[i]
		if rec.Stage == string(r.stage) && rec.Event == incident.EventStarted && detailOf(rec).MessageID == r.d.MessageID {
			return i
		}
	}
	return len(recs)
}

// yieldToRollback ends a stage delivery that found a rollback marked: it makes nothing. When no
// Failed delivery has started since the mark, it sends the rollback's message again as the mark's
// writer sent it (duplicate detection absorbs it when the first one went out), so that a writer
// that died between its record and its send does not leave the incident waiting for nothing.
func (r *run) yieldToRollback(ctx context.Context, mark audit.Record, recs []audit.Record) error {
	r.log.Info("message absorbed: a rollback is under way", "mark", mark.Stage+"/"+mark.Event, "markSeq", mark.Seq)
	if attempt, ok := rollbackAttempt(mark); ok && !failedStartedAfter(recs, mark.Seq) {
		v := summarize(r.msg.IncidentID, recs)
		msg := r.nextMessage(incident.StageFailed, merge(v.Artifacts, r.msg.Artifacts))
		if mark.Stage == rollbackRequestStage {
			msg.Trigger = incident.Trigger{Kind: incident.TriggerManual, Reason: "rollback requested"}
		}
		if err := r.p.Bus.Send(ctx, msg, bus.SendOptions{Attempt: attempt}); err != nil {
			return fmt.Errorf("re-send the rollback: %w", err)
		}
	}
	return r.append(ctx, incident.EventSkipped, detail{
		Reason:    fmt.Sprintf("a rollback is under way (%s %s, record %d): message absorbed", mark.Stage, mark.Event, mark.Seq),
		MessageID: r.d.MessageID,
	}, "")
}

// rollbackAttempt is the Attempt of the Failed message the writer of a mark sent: the one the
// mark records, else the one its writer always uses. A mark the Failed stage wrote itself has its
// message already delivered.
func rollbackAttempt(mark audit.Record) (int, bool) {
	switch {
	case mark.Stage == string(incident.StageFailed):
		return 0, false
	case detailOf(mark).Attempt > 0:
		return detailOf(mark).Attempt, true
	case mark.Stage == rollbackRequestStage:
		return 0, true
	case mark.Stage == janitorStage:
		return janitorAttempt, true
	default:
		return escalateAttempt, true
	}
}

func failedStartedAfter(recs []audit.Record, seq int64) bool {
	for _, rec := range recs {
		if rec.Seq > seq && rec.Stage == string(incident.StageFailed) && rec.Event == incident.EventStarted {
			return true
		}
	}
	return false
}

// delivery is one stage delivery as the trail shows it.
type delivery struct {
	stage     string
	messageID string
	started   time.Time
}

// openDeliveries lists the deliveries of the six stages in recs that started less than
// inFlightWindow before now and have not ended, except those of the messages in over
// (dead-lettered messages, whose deliveries are all over). A delivery ends with a record of its
// stage that names its message (scheduled again, absorbed, a transient failure), or with a
// record that ends the stage (a completion, a terminal failure, the incident closed), which ends
// all of the stage's deliveries before it. A delivery that died leaves a "started" record only:
// its redelivery ends it, its message is dead-lettered, or inFlightWindow, the bound of any
// delivery, passes.
func openDeliveries(recs []audit.Record, now time.Time, over map[string]bool) []delivery {
	var open []delivery
	for _, rec := range recs {
		if !slices.Contains(incident.Stages, incident.Stage(rec.Stage)) {
			continue
		}
		d := detailOf(rec)
		if rec.Event == incident.EventStarted {
			if d.MessageID != "" {
				open = append(open, delivery{stage: rec.Stage, messageID: d.MessageID, started: rec.Time})
			}
			continue
		}
		if d.Operation != "" || d.Checkpoint != "" {
			continue // progress inside a delivery
		}
		switch {
		case d.Completed || rec.Event == incident.EventFailed:
			// The stage completed or failed: a delivery of it that started earlier and did not
			// end would have held this one back (inFlight), so it is over.
			open = slices.DeleteFunc(open, func(o delivery) bool { return o.stage == rec.Stage })
		case d.MessageID != "":
			open = slices.DeleteFunc(open, func(o delivery) bool { return o.stage == rec.Stage && o.messageID == d.MessageID })
		}
	}
	return slices.DeleteFunc(open, func(o delivery) bool {
		return over[o.messageID] || now.Sub(o.started) >= inFlightWindow
	})
}

// deadLettered lists the messages whose deliveries are all over because they were dead-lettered:
// own (the message of this Failed delivery) and those whose dead letters another Failed delivery
// recorded, before or since this one started.
func deadLettered(recs []audit.Record, own string) map[string]bool {
	out := map[string]bool{own: true}
	for _, rec := range recs {
		if rec.Stage == string(incident.StageFailed) && rec.Event == incident.EventFailed {
			if id := detailOf(rec).MessageID; id != "" {
				out[id] = true
			}
		}
	}
	return out
}

// awaitStages asks the Failed stage to wait while a stage delivery that started before it is
// still running: whatever that delivery makes, the rollback then finds and undoes. A delivery of
// this process waiting in line is asked to stop waiting.
func (r *run) awaitStages(ctx context.Context) error {
	recs, err := r.p.Trail.Read(ctx, r.msg.IncidentID)
	if err != nil {
		return fmt.Errorf("read audit trail: %w", err)
	}
	open := openDeliveries(recs[:r.ownStart(recs)], r.began, deadLettered(recs, r.d.MessageID))
	if len(open) == 0 {
		return nil
	}
	// A delivery of this process that waits in line leaves it and records so (errRollbackBegun):
	// the next look finds it over.
	r.p.exits.leave(r.msg.IncidentID)
	o := open[len(open)-1]
	return r.p.awaitDelivery("delivery %s of the %s stage is still running: the rollback waits for it", o.messageID, o.stage)
}
