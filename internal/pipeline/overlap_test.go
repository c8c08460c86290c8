package pipeline

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// trailOf builds records one second apart from (stage, event, detail) triples.
func trailOf(t *testing.T, start time.Time, entries ...any) []audit.Record {
	t.Helper()
	var recs []audit.Record
	for i := 0; i+2 < len(entries); i += 3 {
		b, err := json.Marshal(entries[i+2])
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, audit.Record{Seq: int64(len(recs) + 1), Time: start.Add(time.Duration(len(recs)) * time.Second),
			Stage: entries[i].(string), Event: entries[i+1].(string), Detail: b})
	}
	return recs
}

// TestOpenDeliveries: which stage deliveries the Failed stage waits for, from the trail alone.
func TestOpenDeliveries(t *testing.T) {
	t.Parallel()
	const (
		ra = string(incident.StageRescueAttach)
		sn = string(incident.StageSnapshot)
		fl = string(incident.StageFailed)
	)
	started := func(id string) detail { return detail{MessageID: id} }
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		entries []any
		now     time.Time
		want    []string // stage/messageId
	}{
		{"a delivery that started and wrote nothing more", []any{
			ra, incident.EventStarted, started("m1"),
		}, t0.Add(time.Minute), []string{ra + "/m1"}},
		{"its ARM writes and checkpoints do not end it", []any{
			ra, incident.EventStarted, started("m1"),
			ra, incident.EventSucceeded, detail{Operation: "Disks.BeginCreateOrUpdate"},
			ra, incident.EventRetrying, detail{Operation: "VirtualMachines.BeginAttachDetachDataDisks"},
			ra, incident.EventSucceeded, detail{Checkpoint: "patched"},
			ra, incident.EventSkipped, detail{Reason: "a decision"},
		}, t0.Add(time.Minute), []string{ra + "/m1"}},
		{"a record naming its message ends it, not another's", []any{
			ra, incident.EventStarted, started("m1"),
			ra, incident.EventStarted, started("m2"),
			ra, incident.EventRetrying, detail{MessageID: "m2", Reason: "delivery m1 started first"},
		}, t0.Add(time.Minute), []string{ra + "/m1"}},
		{"a completion ends every earlier delivery of its stage only", []any{
			sn, incident.EventStarted, started("s1"),
			ra, incident.EventStarted, started("m1"),
			ra, incident.EventStarted, started("m2"),
			ra, incident.EventSucceeded, detail{Completed: true, MessageID: "m2"},
		}, t0.Add(time.Minute), []string{sn + "/s1"}},
		{"a terminal failure ends the stage", []any{
			ra, incident.EventStarted, started("m1"),
			ra, incident.EventFailed, detail{Reason: "terminal", RollbackQueued: true},
		}, t0.Add(time.Minute), nil},
		{"a redelivery that started again is open again", []any{
			ra, incident.EventStarted, started("m1"),
			ra, incident.EventRetrying, detail{MessageID: "m1", Reason: "transient failure"},
			ra, incident.EventStarted, started("m1"),
		}, t0.Add(time.Minute), []string{ra + "/m1"}},
		{"older than the bound of a delivery", []any{
			ra, incident.EventStarted, started("m1"),
		}, t0.Add(inFlightWindow), nil},
		{"a dead-lettered message", []any{
			ra, incident.EventStarted, started("dead"),
			ra, incident.EventStarted, started("m1"),
		}, t0.Add(time.Minute), []string{ra + "/m1"}},
		{"the Failed stage's own records are no stage delivery", []any{
			fl, incident.EventStarted, started("f1"),
		}, t0.Add(time.Minute), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			recs := trailOf(t, t0, tc.entries...)
			var got []string
			for _, o := range openDeliveries(recs, tc.now, map[string]bool{"dead": true}) {
				got = append(got, o.stage+"/"+o.messageID)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("open %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDeadLettered: a Failed delivery counts its own message and every dead letter another Failed
// delivery recorded as over.
func TestDeadLettered(t *testing.T) {
	t.Parallel()
	recs := trailOf(t, time.Now(),
		string(incident.StageFailed), incident.EventStarted, detail{MessageID: "x"},
		string(incident.StageFailed), incident.EventFailed, detail{MessageID: "y", RollbackQueued: true},
		string(incident.StageRescueAttach), incident.EventFailed, detail{MessageID: "z", RollbackQueued: true},
	)
	got := deadLettered(recs, "own")
	for id, want := range map[string]bool{"own": true, "y": true, "x": false, "z": false} {
		if got[id] != want {
			t.Errorf("%s over: %v, want %v", id, got[id], want)
		}
	}
}

// TestRollbackMark: which records stop stage work, and which Failed message their writer sent.
func TestRollbackMark(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name         string
		stage, event string
		d            detail
		mark         bool
		attempt      int
		resend       bool
	}{
		{"terminal failure of a stage", string(incident.StageOfflinePatch), incident.EventFailed, detail{RollbackQueued: true, Attempt: escalateAttempt}, true, escalateAttempt, true},
		{"terminal failure recorded before attempts were", string(incident.StageOfflinePatch), incident.EventFailed, detail{RollbackQueued: true}, true, escalateAttempt, true},
		{"janitor's second stall", janitorStage, incident.EventFailed, detail{RollbackQueued: true, Attempt: janitorRetryBase + 1}, true, janitorRetryBase + 1, true},
		{"janitor's stall recorded before attempts were", janitorStage, incident.EventFailed, detail{RollbackQueued: true}, true, janitorAttempt, true},
		{"rollback requested", rollbackRequestStage, incident.EventStarted, detail{}, true, 0, true},
		{"Failed delivery started", string(incident.StageFailed), incident.EventStarted, detail{MessageID: "f"}, true, 0, false},
		{"dead letter recorded", string(incident.StageFailed), incident.EventFailed, detail{RollbackQueued: true}, true, 0, false},
		{"a failed ARM write", string(incident.StageRescueAttach), incident.EventFailed, detail{Operation: "Disks.BeginCreateOrUpdate"}, false, 0, false},
		{"a terminal failure recorded by the server", string(incident.StageRescueAttach), incident.EventFailed, detail{Reason: "bad input"}, false, 0, false},
		{"a stage started", string(incident.StageRescueAttach), incident.EventStarted, detail{MessageID: "m"}, false, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			recs := trailOf(t, time.Now(), tc.stage, tc.event, tc.d)
			mark, ok := rollbackMark(recs)
			if ok != tc.mark {
				t.Fatalf("mark %v, want %v", ok, tc.mark)
			}
			if !ok {
				return
			}
			attempt, resend := rollbackAttempt(mark)
			if resend != tc.resend || (resend && attempt != tc.attempt) {
				t.Errorf("re-send %v attempt %d, want %v %d", resend, attempt, tc.resend, tc.attempt)
			}
		})
	}
}
