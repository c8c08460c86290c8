package bench

import (
	"slices"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/pipeline"
)

// TestMinWrites: the writes an incident needs are its path's writes in pipeline.Operations but
// its deletes (the DELETE requests, which ARM counts apart), and its POST reads, as
// pipeline.Budget counts them stage by stage.
func TestMinWrites(t *testing.T) {
	t.Parallel()
	deletes := map[string]bool{"VirtualMachineRunCommands.BeginDelete": true, "Disks.BeginDelete": true, "Snapshots.BeginDelete": true}
	isWrite := map[string]bool{"Tickets.CheckNameAvailability": true} // a POST
	for _, o := range pipeline.Operations {
		if pipeline.IsDelete(o.Op) != deletes[o.Op] {
			t.Errorf("IsDelete(%s) = %v, want %v", o.Op, pipeline.IsDelete(o.Op), deletes[o.Op])
		}
		if o.Write && !deletes[o.Op] {
			isWrite[o.Op] = true
		}
	}
	for name, path := range map[string]map[string]string{"patched": pathPatched, "dump found": pathDumpFound} {
		want, runs := 0, 0
		for stage, p := range path {
			for op, n := range pipeline.Budget(stage, p, 4) {
				if isWrite[op] {
					want += n
				}
				if op == runCommandOp {
					runs += n
				}
			}
		}
		if got := minWrites(path); got != want || got == 0 {
			t.Errorf("%s: minWrites = %d, want %d", name, got, want)
		}
		if got := minOps(path, runCommandOp); got != runs || got == 0 {
			t.Errorf("%s: agent runs = %d, want %d", name, got, runs)
		}
	}
	if minWrites(pathDumpFound) >= minWrites(pathPatched) {
		t.Error("harvesting a dump already on disk needs fewer writes than patching, rebooting and harvesting")
	}
}

// TestCapacityBound: the write-budget bound counts the writes the incidents need in whole
// windows; the bound is the largest of the three; more rescue VMs lower the Run Command bound.
func TestCapacityBound(t *testing.T) {
	t.Parallel()
	l := capacityLimits{Incidents: 40, Patched: 35, RescueVMs: 2, Slots: 16, WritesPerHour: 300, Window: time.Hour,
		Latency: azsim.DefaultLatency(), RunSpan: 80 * time.Second}
	b := l.bound()
	k := 35*minWrites(pathPatched) + 5*minWrites(pathDumpFound)
	if b.MinWrites != k {
		t.Fatalf("MinWrites = %d, want %d", b.MinWrites, k)
	}
	if want := time.Duration((k-1)/300) * time.Hour; b.Write != want {
		t.Errorf("write bound %v, want %v for %d writes at 300 an hour", b.Write, want, k)
	}
	if b.Best != max(b.Write, b.RunCmd, b.Slot) || b.Best <= 0 {
		t.Errorf("bound %v is not the largest of %v, %v, %v", b.Best, b.Write, b.RunCmd, b.Slot)
	}
	runs := time.Duration(b.MinRuns) * l.RunSpan
	if got := b.RunCmd - b.LeadIn - b.Tail; got != runs/2 {
		t.Errorf("Run Command work per VM %v, want %v", got, runs/2)
	}
	l.RescueVMs, l.Slots = 4, 32
	if b4 := l.bound(); b4.RunCmd >= b.RunCmd || b4.Slot >= b.Slot || b4.Write != b.Write {
		t.Errorf("4 rescue VMs: %+v; 2: %+v", b4, b)
	}
	l.WritesPerHour = 100000
	if b := l.bound(); b.Write != 0 || b.Best != b.RunCmd {
		t.Errorf("unlimited writes: write bound %v, bound %v, want the Run Command bound %v", b.Write, b.Best, b.RunCmd)
	}
}

// TestRunCommandUse: busy time, the pauses between consecutive runs of each rescue VM, and the
// pool's busy share per interval.
func TestRunCommandUse(t *testing.T) {
	t.Parallel()
	at := func(s int) time.Time { return time.Unix(int64(s), 0) }
	perVM := map[string][]azsim.Operation{
		"a": {{Start: at(10), End: at(15)}, {Start: at(0), End: at(5)}, {Start: at(17), End: at(20)}},
		"b": {{Start: at(0), End: at(8)}},
	}
	u := runCommandUse(perVM, 2, at(0), 10*time.Second)
	if u.Busy != 21*time.Second || !slices.Equal(u.Pauses, []time.Duration{2 * time.Second, 5 * time.Second}) {
		t.Errorf("busy %v, pauses %v; want 21s, [2s 5s]", u.Busy, u.Pauses)
	}
	// 0-10 s: a 5 s, b 8 s of 20; 10-20 s: a 5 s + 3 s of 20.
	if want := []float64{0.65, 0.4}; !slices.Equal(u.Shares, want) {
		t.Errorf("shares %v, want %v", u.Shares, want)
	}
	if q := quantile(u.Pauses, 0.5); q != 2*time.Second {
		t.Errorf("median pause %v, want 2s (nearest rank)", q)
	}
	if q := quantile(u.Pauses, 0.9); q != 5*time.Second {
		t.Errorf("p90 pause %v, want 5s", q)
	}
	if q := quantile(nil, 0.9); q != 0 {
		t.Errorf("quantile of nothing %v, want 0", q)
	}
}

func TestPerInterval(t *testing.T) {
	t.Parallel()
	s := time.Second
	cases := []struct {
		in   []time.Duration
		want string
	}{
		{nil, ""},
		{[]time.Duration{0, 29 * s, 30 * s, 95 * s}, "2 1 0 1"},
		{[]time.Duration{-s, 0}, "2"}, // a write logged just before the run's start counts in the first
	}
	for _, tc := range cases {
		if got := perInterval(tc.in, 30*s); got != tc.want {
			t.Errorf("perInterval(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
