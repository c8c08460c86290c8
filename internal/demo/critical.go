package demo

import (
	"slices"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/localhost"
)

// span is an interval of simulated Azure time.
type span struct{ start, end time.Time }

// criticalPath is the simulated time an incident of vmID could not go faster than, between from
// and to: the union of what the simulated Azure spent on it, at the time scale. The stages run one
// after another, so this is the scaled sum of the operations on the critical path; the union
// only keeps overlapping work (a read during a running operation) from counting twice. It is made
// of:
//   - each ARM request's own latency (Call.Latency);
//   - each long-running operation, Run Command execution and snapshot background copy
//     (State().Operations());
//   - after each start of the VM, the wait for the harvest: until the next crash alert for the VM
//     reached the host (the guest's boot, dump write and Resource Health's delay), or until the
//     scheduled harvest (VMRESCUE_REPRO_WAIT at the time scale), whichever came first.
//
// What is left of the end-to-end time is the handler's and the host's own: polling, queue hand-
// offs, storage.
func criticalPath(calls []azsim.Call, ops []azsim.Operation, alerts []localhost.Invocation, vmID string,
	reproWait time.Duration, from, to time.Time) time.Duration {
	var spans []span
	add := func(s, e time.Time) {
		s, e = later(s, from), earlier(e, to)
		if e.After(s) {
			spans = append(spans, span{s, e})
		}
	}
	for _, c := range calls {
		if c.Latency > 0 {
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

// union is the total length covered by spans.
func union(spans []span) time.Duration {
	slices.SortFunc(spans, func(a, b span) int { return a.start.Compare(b.start) })
	var total time.Duration
	var cur span
	for i, s := range spans {
		switch {
		case i == 0:
			cur = s
		case !s.start.After(cur.end):
			cur.end = later(cur.end, s.end)
		default:
			total += cur.end.Sub(cur.start)
			cur = s
		}
	}
	if len(spans) > 0 {
		total += cur.end.Sub(cur.start)
	}
	return total
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
