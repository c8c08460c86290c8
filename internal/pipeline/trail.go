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

// lastActivity is when the incident last showed progress: its last record, or a later time one
// of its records scheduled work for (a retry, the reproduction wait).
func lastActivity(recs []audit.Record) time.Time {
	var t time.Time
	for _, rec := range recs {
		if rec.Time.After(t) {
			t = rec.Time
		}
		if d := detailOf(rec); d.NotBefore != nil && d.NotBefore.After(t) {
			t = *d.NotBefore
		}
	}
	return t
}
