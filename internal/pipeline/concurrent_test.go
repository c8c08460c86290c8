package pipeline_test

import (
	"context"
	"sync"
	"testing"

	"github.com/vmrescue/vmrescue/internal/incident"
)

// TestConcurrentDeliveriesOneProceeds: two deliveries of one stage under different MessageIDs (a
// duplicate that got past duplicate detection, or the HarvestDump a crash alert brought forward
// racing the scheduled one) that start together: exactly one runs the stage; the other finds it
// started first and schedules itself again.
func TestConcurrentDeliveriesOneProceeds(t *testing.T) {
	for range 5 { // the interleaving varies; each round must hold
		e := newEnv(t, envOptions{})
		id, d := e.reach(scenario{stage: incident.StageSnapshot, vm: "app-web-01"})
		dup := d
		dup.id = d.id + "-dup"
		p := e.pipeline()
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, del := range []delivered{d, dup} {
			wg.Go(func() { errs[i] = e.run(p, context.Background(), del, 1) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("delivery %d: %v", i, err)
			}
		}
		completed, retrying := 0, 0
		for _, r := range e.records(id) {
			if r.Stage != string(incident.StageSnapshot) {
				continue
			}
			switch {
			case r.Event == incident.EventSucceeded && recordDetail(r)["completed"] == true:
				completed++
			case r.Event == incident.EventRetrying:
				retrying++
			}
		}
		if completed != 1 || retrying != 1 {
			t.Fatalf("snapshot completed %d times and scheduled again %d times, want 1 and 1", completed, retrying)
		}
	}
}
