package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/vmrescue/vmrescue/internal/hostproto"
)

// CriticalOptions size the critical-path scenario.
type CriticalOptions struct {
	// TimeScale of this scenario: large enough that simulated operations dominate (default 0.05).
	TimeScale float64
}

// CriticalPath runs one incident alone and compares its end-to-end time with the scaled sum of
// the simulated operations on its critical path (demo.Report.CriticalPath), and measures the
// handler's own share: invocation time not spent waiting on ARM.
func CriticalPath(ctx context.Context, o Options, co CriticalOptions) (Result, error) {
	if co.TimeScale <= 0 {
		co.TimeScale = 0.05
	}
	o.TimeScale = co.TimeScale
	res := Result{Scenario: "critical-path", Params: map[string]any{"vms": 1, "timeScale": o.scale()}}
	fleet, err := makeFleet(1, 1, wideRescue)
	if err != nil {
		return res, err
	}
	env, err := start(ctx, o, fleet, noFaults, nil)
	if err != nil {
		return res, err
	}
	defer env.Stop()
	t0 := time.Now()
	vmID := fleet.VMID(fleet.VMs[0].Name)
	id, err := env.PostCrash(ctx, vmID, "critical-00001", time.Now().UTC(), hostproto.SchemaEventGrid)
	if err != nil {
		return res, err
	}
	if _, err := env.Wait(ctx, id); err != nil {
		return res, err
	}
	if err := waitIdle(ctx, env.Stack.Host); err != nil {
		return res, err
	}
	rep, err := env.Report(context.Background(), id)
	if err != nil {
		return res, err
	}
	// The handler's share: the time its invocations ran minus the time ARM calls were open.
	var invSecs float64
	for _, inv := range env.Stack.Host.Invocations(0) {
		if inv.IncidentID == id || inv.Function == "HealthAlert" {
			invSecs += inv.Duration.Seconds()
		}
	}
	res.figure("end to end", rep.Elapsed, "s")
	res.figure("critical path (scaled simulated operations)", rep.CriticalPath, "s")
	if rep.CriticalPath > 0 {
		res.target("end to end / critical path", rep.Elapsed/rep.CriticalPath, "", true, 1.05, "demo.Report.CriticalPathRatio")
		over := rep.Elapsed - rep.CriticalPath
		res.figure("time not explained by simulated operations", over, "s")
		res.figure("handler share of end to end (upper bound)", over/rep.Elapsed, "")
	}
	res.figure("invocation time (all stages)", invSecs, "s")
	res.check("incident closed cleanly", rep.OK(), fmt.Sprintf("state %s, outcome %s, left behind %v", rep.State, rep.Outcome, rep.LeftBehind))
	res.Notes = append(res.Notes, "The handler's share is bounded from above by end-to-end time minus the critical path: everything that is not a simulated Azure operation on the path (handler CPU, Azurite, queue hand-offs, poll granularity) counts against it.")
	res.finish(t0)
	return res, nil
}
