package pipeline_test

import (
	"context"
	"strings"
	"testing"

	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lock"
)

// TestScheduledHarvestAbsorbed: once the HarvestDump a crash alert brought forward has been
// delivered, the one ReattachReboot scheduled after the reproduction wait is absorbed at once,
// with a record and no ARM request, even while the brought-forward harvest waits (here for a
// rescue VM's agent). Before the brought-forward message was delivered, the scheduled one runs
// the harvest.
func TestScheduledHarvestAbsorbed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		forwarded bool // the brought-forward harvest was delivered first
		// redelivered: the scheduled harvest started first and waited, then the brought-forward
		// one did; the scheduled message comes again (a redelivery) and goes on with the harvest
		redelivered bool
	}{
		{"brought-forward harvest delivered", true, false},
		{"brought-forward harvest not yet delivered", false, false},
		{"scheduled harvest redelivered after it started", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			ctx := context.Background()
			id, fwd := e.reach(scenario{stage: incident.StageHarvestDump, vm: "app-web-01"})
			if want := incident.MessageID(id, incident.StageHarvestDump, 10000); fwd.id != want {
				t.Fatalf("first harvest message %s, want the brought-forward %s", fwd.id, want)
			}
			sched, ok := e.bus.pop()
			if want := incident.MessageID(id, incident.StageHarvestDump, 0); !ok || sched.id != want {
				t.Fatalf("next message %s, want the scheduled harvest %s", sched.id, want)
			}
			p := e.pipeline()
			if tc.forwarded {
				other := e.activeIncident("app-api-01")
				for _, r := range e.fleet.RescueVMs {
					e.holdSlot(lock.SlotAgent, e.fleet.VMID(r.Name), other)
				}
				first := []delivered{fwd}
				if tc.redelivered {
					first = []delivered{sched, fwd}
				}
				for _, d := range first {
					if err := e.run(p, ctx, d, 1); err != nil {
						t.Fatal(err)
					}
				}
				lastRetry(t, e, id, incident.StageHarvestDump) // it waits for an agent
			}
			startsBefore := 0
			for _, r := range e.records(id) {
				if r.Event == incident.EventStarted && recordDetail(r)["messageId"] == sched.id {
					startsBefore++
				}
			}
			e.sim.ResetCalls()
			if err := e.run(p, ctx, sched, 1); err != nil {
				t.Fatal(err)
			}
			started, absorbed := 0, false
			for _, r := range e.records(id) {
				d := recordDetail(r)
				if r.Stage != string(incident.StageHarvestDump) || d["messageId"] != sched.id {
					continue
				}
				reason, _ := d["reason"].(string)
				if r.Event == incident.EventStarted {
					started++
				}
				absorbed = absorbed || (r.Event == incident.EventSkipped && strings.Contains(reason, "brought forward"))
			}
			started -= startsBefore
			if tc.redelivered {
				if absorbed || started != 1 {
					t.Errorf("redelivered scheduled harvest absorbed %v, started %d times; want it to go on", absorbed, started)
				}
				return
			}
			if tc.forwarded {
				if !absorbed || started != 0 {
					t.Errorf("scheduled harvest absorbed %v, started %d times; want absorbed, not started", absorbed, started)
				}
				if n := len(calls(e.sim)); n != 0 {
					t.Errorf("the absorbed message made ARM requests: %v", calls(e.sim))
				}
			} else if absorbed || started != 1 {
				t.Errorf("scheduled harvest absorbed %v, started %d times; want it to run the harvest", absorbed, started)
			}
		})
	}
}
