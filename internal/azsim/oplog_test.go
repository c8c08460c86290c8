package azsim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
)

// TestOperationLog checks what the critical path of an incident is summed from: each request's
// own latency in the call log, and each long-running operation's and background copy's simulated
// span in State().Operations(), all at the time scale.
func TestOperationLog(t *testing.T) {
	t.Parallel()
	const scale = 0.001
	sim, c := newSim(t, azsim.Options{TimeScale: scale})
	table := azsim.DefaultLatency()
	scaled := func(op string) time.Duration { return time.Duration(float64(table[op]) * scale) }

	snapshotOf(t, sim, c, "rg-app", "app-web-01", "snap-oplog")
	if _, err := c.vms.Get(ctxT(t), "rg-app", "app-web-01", nil); err != nil {
		t.Fatal(err)
	}

	spans := map[string]time.Duration{}
	for _, op := range sim.State().Operations() {
		if !strings.Contains(op.Resource, "snap-oplog") {
			continue
		}
		if op.Resource != strings.ToLower(op.Resource) {
			t.Errorf("operation %s: resource %q is not lower-cased", op.Name, op.Resource)
		}
		spans[op.Name] = op.End.Sub(op.Start)
	}
	for _, name := range []string{"Snapshots.BeginCreateOrUpdate", azsim.LatencySnapshotCopy} {
		got, ok := spans[name]
		if !ok {
			t.Errorf("no %s in Operations(): %v", name, spans)
			continue
		}
		if got != scaled(name) {
			t.Errorf("%s took %v, want %v", name, got, scaled(name))
		}
	}

	var gets, writes int
	for _, call := range sim.CallLog() {
		switch {
		case call.Poll:
		case call.Op == "VirtualMachines.Get":
			gets++
			if call.Latency != scaled(azsim.LatencyRead) {
				t.Errorf("VirtualMachines.Get latency %v, want %v", call.Latency, scaled(azsim.LatencyRead))
			}
		case call.Op == "Snapshots.BeginCreateOrUpdate":
			writes++
			if call.Latency != scaled(azsim.LatencyWrite) {
				t.Errorf("Snapshots.BeginCreateOrUpdate request latency %v, want %v", call.Latency, scaled(azsim.LatencyWrite))
			}
		}
	}
	if gets == 0 || writes == 0 {
		t.Errorf("call log has %d VM reads and %d snapshot writes, want both", gets, writes)
	}
}
