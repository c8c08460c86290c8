package demo

import (
	"slices"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/localhost"
)

// span is an interval of simulated Azure time.
type span struct{ start, end time.Time }

// window is the stretch of an incident that its end-to-end time measures.
type window struct {
	first, last time.Time              // from the first invocation's start to the last one's end
	timed       []localhost.Invocation // the invocations in it: the incident's and its VM's alerts
	alerts      []localhost.Invocation // every alert for the VM, also those after the incident ended
}

// windowOf finds the incident's window in the host's invocations: the incident's own and the
// crash alerts for its VM, up to the invocation that ended the incident. A delivery that starts
// after the incident ended (the scheduled harvest a crash alert brought forward, a duplicate) is
// absorbed without work, and nothing waits on it.
func windowOf(invs []localhost.Invocation, recs []audit.Record, incidentID, vmID string) window {
	var w window
	ended := endedAt(recs)
	for _, inv := range invs {
		alert := inv.Function == "HealthAlert" && strings.EqualFold(inv.Subject, vmID)
		if alert {
			w.alerts = append(w.alerts, inv)
		}
		if (inv.IncidentID != incidentID && !alert) || (!ended.IsZero() && inv.Start.After(ended)) {
			continue
		}
		w.timed = append(w.timed, inv)
		if w.first.IsZero() || inv.Start.Before(w.first) {
			w.first = inv.Start
		}
		if end := inv.Start.Add(inv.Duration); end.After(w.last) {
			w.last = end
		}
	}
	return w
}

// endedAt is the time of the record that ended the incident: closed, rolled back, or an alert
// rejected at intake (its only record); zero while it is active.
func endedAt(recs []audit.Record) time.Time {
	for i, rec := range recs {
		if rec.Event == incident.EventClosed || rec.Event == incident.EventRolledBack ||
			(i == 0 && rec.Event == incident.EventRejected) {
			return rec.Time
		}
	}
	return time.Time{}
}

// pathSpans is the critical path: the simulated time an incident of vmID could not go faster
// than, between from and to, as disjoint spans in time order (total is its length). It is the
// union of what the simulated Azure spent on the incident, at the time scale. The stages run one
// after another, so this is the scaled sum of the operations on the critical path; the union
// only keeps overlapping work (a read during a running operation) from counting twice. It is made
// of:
//   - the incident's ARM requests' own latency (Call.Latency), told apart from other callers'
//     (the Janitor's) by the incident's correlation id;
//   - each long-running operation, Run Command execution and snapshot background copy
//     (State().Operations());
//   - after each start of the VM, the wait for the harvest: until the next crash alert for the VM
//     reached the host (the guest's boot, dump write and Resource Health's delay), or until the
//     scheduled harvest (VMRESCUE_REPRO_WAIT at the time scale), whichever came first.
//
// What is left of the end-to-end time is the handler's and the host's own: polling, queue hand-
// offs, storage (see overhead).
func pathSpans(calls []azsim.Call, ops []azsim.Operation, alerts []localhost.Invocation, incidentID, vmID string,
	reproWait time.Duration, from, to time.Time) []span {
	var spans []span
	add := func(s, e time.Time) {
		s, e = later(s, from), earlier(e, to)
		if e.After(s) {
			spans = append(spans, span{s, e})
		}
	}
	corr := armclient.CorrelationID(incidentID)
	for _, c := range calls {
		if c.Latency > 0 && ownCall(c, corr) {
			add(c.Time, c.Time.Add(c.Latency))
		}
	}
	vmKey := strings.ToLower(vmID)
	for _, op := range ops {
		add(op.Start, op.End)
		if op.Name != "VirtualMachines.BeginStart" || op.Resource != vmKey {
			continue
		}
		until := op.End.Add(reproWait)
		for _, a := range alerts {
			if strings.EqualFold(a.Subject, vmID) && a.Start.After(op.End) && a.Start.Before(until) {
				until = a.Start
			}
		}
		add(op.End, until)
	}
	return union(spans)
}

// ownCall reports whether c was made for the incident whose correlation id is corr: the stages
// send it on every ARM request, polls included; the Janitor sends none.
func ownCall(c azsim.Call, corr string) bool { return strings.EqualFold(c.CorrelationID, corr) }

// Overhead splits the end-to-end time that the critical path does not explain.
type Overhead struct {
	// HandOffSeconds is time in which no invocation of the incident ran: queue delivery and the
	// host's dispatch between stages, the webhook before the alert's invocation.
	HandOffSeconds float64 `json:"handOffSeconds"`
	// NoticeSeconds is time inside invocations from the end of a simulated operation to the
	// incident's next ARM request: how late the handler saw it (poll granularity).
	NoticeSeconds float64 `json:"noticeSeconds"`
	// InStageSeconds is the rest of the time inside invocations: the handler's own work, its
	// storage round trips (audit trail, locks, blobs) and the local HTTP hops to the simulator.
	InStageSeconds float64 `json:"inStageSeconds"`
}

// overhead classifies the time between from and to that path does not cover, given the
// incident's invocations, the simulated operations and the incident's ARM requests.
func overhead(path []span, invs []localhost.Invocation, ops []azsim.Operation, calls []azsim.Call, incidentID string, from, to time.Time) Overhead {
	gaps := subtract([]span{{from, to}}, path)
	var running []span
	for _, inv := range invs {
		if s, e := later(inv.Start, from), earlier(inv.Start.Add(inv.Duration), to); e.After(s) {
			running = append(running, span{s, e})
		}
	}
	running = union(running)
	corr := armclient.CorrelationID(incidentID)
	var asked []time.Time
	for _, c := range calls {
		if ownCall(c, corr) {
			asked = append(asked, c.Time)
		}
	}
	slices.SortFunc(asked, time.Time.Compare)
	var late []span
	for _, op := range ops {
		if op.End.Before(from) || op.End.After(to) {
			continue
		}
		if i, _ := slices.BinarySearchFunc(asked, op.End, time.Time.Compare); i < len(asked) {
			late = append(late, span{op.End, asked[i]})
		}
	}
	inside := intersect(gaps, running)
	notice := total(intersect(inside, union(late)))
	return Overhead{
		HandOffSeconds: total(subtract(gaps, running)).Seconds(),
		NoticeSeconds:  notice.Seconds(),
		InStageSeconds: (total(inside) - notice).Seconds(),
	}
}

// union merges spans into disjoint spans in time order.
func union(spans []span) []span {
	spans = slices.Clone(spans)
	slices.SortFunc(spans, func(a, b span) int { return a.start.Compare(b.start) })
	var out []span
	for _, s := range spans {
		if n := len(out); n > 0 && !s.start.After(out[n-1].end) {
			out[n-1].end = later(out[n-1].end, s.end)
			continue
		}
		out = append(out, s)
	}
	return out
}

// total is the length of disjoint spans.
func total(spans []span) time.Duration {
	var d time.Duration
	for _, s := range spans {
		d += s.end.Sub(s.start)
	}
	return d
}

// intersect is the time both a and b cover; both are disjoint and in order.
func intersect(a, b []span) []span {
	var out []span
	for i, j := 0, 0; i < len(a) && j < len(b); {
		if s, e := later(a[i].start, b[j].start), earlier(a[i].end, b[j].end); e.After(s) {
			out = append(out, span{s, e})
		}
		if a[i].end.Before(b[j].end) {
			i++
		} else {
			j++
		}
	}
	return out
}

// subtract is the time a covers and b does not; both are disjoint and in order.
func subtract(a, b []span) []span {
	var out []span
	for _, s := range a {
		cur := s.start
		for _, t := range b {
			if !t.end.After(cur) || !t.start.Before(s.end) {
				continue
			}
			if t.start.After(cur) {
				out = append(out, span{cur, t.start})
			}
			cur = later(cur, t.end)
		}
		if s.end.After(cur) {
			out = append(out, span{cur, s.end})
		}
	}
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// reproWait is the handler's VMRESCUE_REPRO_WAIT as the host runs it: the setting from env (or
// its default) times the host's time scale.
func reproWait(env []string, scale float64) time.Duration {
	v := ""
	for _, s := range config.Settings {
		if s.Name == config.ReproWait {
			v = s.Default
		}
	}
	for _, kv := range env {
		if val, ok := strings.CutPrefix(kv, config.ReproWait+"="); ok {
			v = val
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0
	}
	if scale <= 0 {
		scale = 1
	}
	return time.Duration(float64(d) * scale)
}
