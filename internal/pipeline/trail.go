package pipeline

import (
	"time"

	"github.com/vmrescue/vmrescue/internal/api"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/intake"
)

// summarize is the incident as its trail describes it.
func summarize(id string, recs []audit.Record) api.View { return api.Summarize(id, "", recs) }

func auditEntry(vm string, stage incident.Stage, event string, d any) audit.Entry {
	return audit.Entry{VMResourceID: vm, Stage: string(stage), Event: event, Detail: d}
}

// crashSignalAfter finds a VirtualMachineCrashed alert recorded after t.
func crashSignalAfter(recs []audit.Record, t time.Time) (time.Time, bool) {
	for _, rec := range recs {
		if rec.Event != incident.EventSignal || !rec.Time.After(t) {
			continue
		}
		if d := detailOf(rec); d.Trigger != nil && d.Trigger.Annotation == intake.AnnotationCrashed {
			return rec.Time, true
		}
	}
	return time.Time{}, false
}

// lastActivity is when the incident last made progress: its opening, a success (an ARM write,
// a checkpoint, a stage completed), or a wait for shared capacity, which the pipeline keeps up
// for as long as it lasts (a full rescue pool is not a stall); or a later time one of its
// records scheduled work for (a retry, the reproduction wait). Deliveries that only start,
// retry, skip or fail, and alerts that intake records on the incident, are not progress: a
// stage that fails on every delivery, or a VM that keeps raising crash alerts, does not keep a
// stuck incident alive.
func lastActivity(recs []audit.Record) time.Time {
	var t time.Time
	for _, rec := range recs {
		d := detailOf(rec)
		progress := rec.Event == incident.EventOpened || rec.Event == incident.EventSucceeded ||
			(rec.Event == incident.EventRetrying && d.Unbounded) ||
			// A rollback queued (a terminal failure, a dead letter, the Janitor's own stall
			// record) or begun: the Janitor queues another only a whole stall timeout later.
			(rec.Event == incident.EventFailed && d.RollbackQueued) ||
			(rec.Stage == string(incident.StageFailed) && rec.Event == incident.EventStarted)
		if progress && rec.Time.After(t) {
			t = rec.Time
		}
		if d.NotBefore != nil && d.NotBefore.After(t) {
			t = *d.NotBefore
		}
	}
	return t
}

// swappedIn reports an incident whose patched disk was swapped in as the VM's OS disk and not
// swapped back since.
func swappedIn(recs []audit.Record) bool {
	in := false
	for _, rec := range recs {
		d := detailOf(rec)
		switch {
		case d.Checkpoint == checkpointSwappedBack:
			in = false
		case d.Artifacts != nil && d.Artifacts.Swapped:
			in = true
		case rec.Stage == string(incident.StageReattachReboot) && rec.Event == incident.EventSucceeded &&
			d.Operation == "VirtualMachines.BeginUpdate":
			in = true // the swap's own write record: on the trail before the stage's completion
		}
	}
	return in
}
