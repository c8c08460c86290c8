package demo

import (
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/localhost"
)

const testIncident = "inc-20261126-100000-abcdef"

func TestCriticalPath(t *testing.T) {
	t.Parallel()
	const vm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/App-Web-01"
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	ops := []azsim.Operation{
		{Name: "Snapshots.BeginCreateOrUpdate", Resource: "snap", Start: at(1), End: at(2)},
		{Name: azsim.LatencySnapshotCopy, Resource: "snap", Start: at(2), End: at(4)},
		{Name: "VirtualMachines.BeginStart", Resource: "/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/virtualmachines/app-web-01", Start: at(10), End: at(11)},
	}
	corr := armclient.CorrelationID(testIncident)
	calls := []azsim.Call{
		{Op: "VirtualMachines.Get", Time: at(0.5), Latency: 200 * time.Millisecond, CorrelationID: corr}, // alone: counts
		{Op: "Snapshots.Get", Time: at(3), Latency: 500 * time.Millisecond, CorrelationID: corr},         // inside the copy: does not
		{Op: "Poll", Time: at(5), Poll: true, CorrelationID: corr},                                       // no latency
		{Op: "Disks.NewListPager", Time: at(6), Latency: 300 * time.Millisecond},                         // the Janitor's: does not
	}
	alert := func(s float64, subject string) localhost.Invocation {
		return localhost.Invocation{Function: "HealthAlert", Subject: subject, Start: at(s)}
	}
	cases := []struct {
		name     string
		alerts   []localhost.Invocation
		wait     time.Duration
		from, to float64
		want     time.Duration
	}{
		{name: "crash alert brings the harvest forward", alerts: []localhost.Invocation{alert(0, vm), alert(14, vm)},
			wait: 10 * time.Second, from: 0, to: 30, want: 200*time.Millisecond + 3*time.Second + time.Second + 3*time.Second},
		{name: "scheduled harvest first", alerts: []localhost.Invocation{alert(20, vm)},
			wait: 2 * time.Second, from: 0, to: 30, want: 200*time.Millisecond + 3*time.Second + time.Second + 2*time.Second},
		{name: "another VM's alert does not count", alerts: []localhost.Invocation{alert(12, "/subscriptions/s/other")},
			wait: 5 * time.Second, from: 0, to: 30, want: 200*time.Millisecond + 3*time.Second + time.Second + 5*time.Second},
		{name: "clipped to the window", wait: 5 * time.Second, from: 1.5, to: 3,
			want: 1500 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := total(pathSpans(calls, ops, tc.alerts, testIncident, vm, tc.wait, at(tc.from), at(tc.to)))
			if got != tc.want {
				t.Errorf("critical path %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWindow(t *testing.T) {
	t.Parallel()
	const vm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1"
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	inv := func(fn, id string, start, secs float64) localhost.Invocation {
		i := localhost.Invocation{Function: fn, IncidentID: id, Start: at(start), Duration: time.Duration(secs * float64(time.Second))}
		if fn == "HealthAlert" {
			i.Subject = vm
		}
		return i
	}
	invs := []localhost.Invocation{
		inv("HealthAlert", "", 0, 0.1),
		inv("Snapshot", testIncident, 0.2, 5),
		inv("Janitor", "", 1, 0.5),
		inv("ReattachReboot", testIncident, 6, 2),
		inv("HealthAlert", "", 20, 0.3),
		inv("HarvestDump", testIncident, 20.5, 10),
		inv("SupportTicket", testIncident, 31, 1),
		inv("HarvestDump", testIncident, 38, 0.05), // the scheduled harvest, absorbed
	}
	rec := func(event string, s float64) audit.Record { return audit.Record{Event: event, Time: at(s)} }
	cases := []struct {
		name        string
		recs        []audit.Record
		first, last float64
		timed       int
	}{
		{name: "closed: ends with the invocation that closed it",
			recs: []audit.Record{rec(incident.EventOpened, 0.05), rec(incident.EventClosed, 31.9)}, first: 0, last: 32, timed: 6},
		{name: "rolled back", recs: []audit.Record{rec(incident.EventOpened, 0.05), rec(incident.EventRolledBack, 31.9)},
			first: 0, last: 32, timed: 6},
		{name: "still active: every invocation", recs: []audit.Record{rec(incident.EventOpened, 0.05)}, first: 0, last: 38.05, timed: 7},
		{name: "a rejected message is no end", recs: []audit.Record{rec(incident.EventOpened, 0.05), rec(incident.EventRejected, 7)},
			first: 0, last: 38.05, timed: 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := windowOf(invs, tc.recs, testIncident, vm)
			if !w.first.Equal(at(tc.first)) || !w.last.Equal(at(tc.last)) || len(w.timed) != tc.timed {
				t.Errorf("window %v..%v with %d invocations, want %v..%v with %d",
					w.first.Sub(t0), w.last.Sub(t0), len(w.timed), tc.first, tc.last, tc.timed)
			}
			if len(w.alerts) != 2 {
				t.Errorf("%d alerts, want 2", len(w.alerts))
			}
		})
	}
}

func TestOverhead(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	corr := armclient.CorrelationID(testIncident)
	// Two stages: 0-4 and 5-10. Operations 1-3 and 6-8; the handler sees the first end at 3.5
	// (a poll), the second at 8.1; the Janitor's request at 3.2 does not count as noticing.
	invs := []localhost.Invocation{{Start: at(0), Duration: 4 * time.Second}, {Start: at(5), Duration: 5 * time.Second}}
	ops := []azsim.Operation{{Start: at(1), End: at(3)}, {Start: at(6), End: at(8)}}
	calls := []azsim.Call{
		{Time: at(0.5), Latency: 100 * time.Millisecond, CorrelationID: corr},
		{Time: at(3.2)},
		{Time: at(3.5), Poll: true, CorrelationID: corr},
		{Time: at(8.1), Poll: true, CorrelationID: corr},
	}
	path := pathSpans(calls, ops, nil, testIncident, "vm", 0, at(0), at(10))
	if got, want := total(path), 4100*time.Millisecond; got != want {
		t.Fatalf("critical path %v, want %v", got, want)
	}
	got := overhead(path, invs, ops, calls, testIncident, at(0), at(10))
	want := Overhead{HandOffSeconds: 1, NoticeSeconds: 0.6, InStageSeconds: 4.3}
	approx := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
	if !approx(got.HandOffSeconds, want.HandOffSeconds) || !approx(got.NoticeSeconds, want.NoticeSeconds) ||
		!approx(got.InStageSeconds, want.InStageSeconds) {
		t.Errorf("overhead %+v, want %+v", got, want)
	}
}

func TestSpanAlgebra(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	sp := func(a, b int) span {
		return span{t0.Add(time.Duration(a) * time.Second), t0.Add(time.Duration(b) * time.Second)}
	}
	a := union([]span{sp(5, 7), sp(0, 2), sp(1, 3)}) // 0-3, 5-7
	b := []span{sp(2, 6)}
	if got := total(intersect(a, b)); got != 2*time.Second {
		t.Errorf("intersect %v, want 2s", got)
	}
	if got := total(subtract(a, b)); got != 3*time.Second {
		t.Errorf("subtract %v, want 3s", got)
	}
	if got := total(subtract(b, a)); got != 2*time.Second {
		t.Errorf("subtract %v, want 2s", got)
	}
}

func TestReproWait(t *testing.T) {
	t.Parallel()
	cases := []struct {
		env   []string
		scale float64
		want  time.Duration
	}{
		{nil, 0.01, 6 * time.Second}, // the default 10m
		{[]string{"VMRESCUE_REPRO_WAIT=2m"}, 0.05, 6 * time.Second},
		{[]string{"VMRESCUE_REPRO_WAIT=1m"}, 0, time.Minute},
	}
	for _, tc := range cases {
		if got := reproWait(tc.env, tc.scale); got != tc.want {
			t.Errorf("reproWait(%v, %v) = %v, want %v", tc.env, tc.scale, got, tc.want)
		}
	}
}
