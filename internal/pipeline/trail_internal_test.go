package pipeline

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/incident"
)

func rec(t time.Time, stage incident.Stage, event string, d detail) audit.Record {
	b, _ := json.Marshal(d)
	return audit.Record{Time: t, Stage: string(stage), Event: event, Detail: b}
}

// TestLastActivity: the stall clock runs from the last progress, not from the last record.
func TestLastActivity(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	opened := rec(at(0), "intake", incident.EventOpened, detail{})
	cases := []struct {
		name string
		recs []audit.Record
		want time.Time
	}{
		{"opened only", []audit.Record{opened}, at(0)},
		{"a stage completed", []audit.Record{opened, rec(at(5), incident.StageSnapshot, incident.EventSucceeded, detail{Completed: true})}, at(5)},
		{"a checkpoint", []audit.Record{opened, rec(at(7), incident.StageOfflinePatch, incident.EventSucceeded, detail{Checkpoint: checkpointPatched})}, at(7)},
		{"crash alerts on the incident are not progress", []audit.Record{opened,
			rec(at(3), incident.StageSnapshot, incident.EventSucceeded, detail{Completed: true}),
			rec(at(60), "intake", incident.EventSignal, detail{}), rec(at(120), "intake", incident.EventSignal, detail{})}, at(3)},
		{"deliveries that start and skip are not progress", []audit.Record{opened,
			rec(at(90), incident.StageRescueAttach, incident.EventStarted, detail{}),
			rec(at(91), incident.StageRescueAttach, incident.EventSkipped, detail{})}, at(0)},
		{"a retry counts from when it is due", []audit.Record{opened,
			rec(at(10), incident.StageRescueAttach, incident.EventRetrying, detail{NotBefore: ptr(at(15))})}, at(15)},
		{"a wait for capacity is kept up", []audit.Record{opened,
			rec(at(200), incident.StageRescueAttach, incident.EventRetrying, detail{Unbounded: true})}, at(200)},
		{"a rollback queued: the Janitor's stall record", []audit.Record{opened,
			rec(at(130), janitorStage, incident.EventFailed, detail{RollbackQueued: true})}, at(130)},
		{"a rollback begun", []audit.Record{opened,
			rec(at(140), incident.StageFailed, incident.EventStarted, detail{})}, at(140)},
		{"a failed write is not progress", []audit.Record{opened,
			rec(at(150), incident.StageRescueAttach, incident.EventFailed, detail{Operation: "Disks.BeginCreateOrUpdate"})}, at(0)},
		{"the reproduction wait", []audit.Record{opened,
			rec(at(20), incident.StageReattachReboot, incident.EventSucceeded, detail{Completed: true, NotBefore: ptr(at(30))})}, at(30)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := lastActivity(tc.recs); !got.Equal(tc.want) {
				t.Errorf("lastActivity = %s, want %s", got.Format(time.TimeOnly), tc.want.Format(time.TimeOnly))
			}
		})
	}
}

// TestSwappedIn: a patched disk swapped in stays the VM's until the Failed stage records the
// original back.
func TestSwappedIn(t *testing.T) {
	t.Parallel()
	now := time.Now()
	swap := rec(now, incident.StageReattachReboot, incident.EventSucceeded, detail{Completed: true, Artifacts: &incident.Artifacts{Swapped: true}})
	back := rec(now, incident.StageFailed, incident.EventSucceeded, detail{Checkpoint: checkpointSwappedBack, Artifacts: &incident.Artifacts{Swapped: true}})
	end := rec(now, incident.StageFailed, incident.EventRolledBack, detail{Completed: true, Artifacts: &incident.Artifacts{LUN: ptr(int32(1))}})
	cases := []struct {
		name string
		recs []audit.Record
		want bool
	}{
		{"never swapped", []audit.Record{rec(now, incident.StageSnapshot, incident.EventSucceeded, detail{Completed: true})}, false},
		{"swapped", []audit.Record{swap}, true},
		{"swapped back", []audit.Record{swap, back, end}, false},
		{"only the swap's write on the trail", []audit.Record{rec(now, incident.StageReattachReboot, incident.EventSucceeded,
			detail{Operation: "VirtualMachines.BeginUpdate", DurationMS: ptr(int64(3))})}, true},
		{"the swap only planned (dry run)", []audit.Record{rec(now, incident.StageReattachReboot, incident.EventSkipped,
			detail{Operation: "VirtualMachines.BeginUpdate", DryRun: true})}, false},
	}
	for _, tc := range cases {
		if got := swappedIn(tc.recs); got != tc.want {
			t.Errorf("%s: swappedIn = %v, want %v", tc.name, got, tc.want)
		}
	}
}
