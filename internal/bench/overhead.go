package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/hostproto"
)

// OverheadOptions size the overhead scenario.
type OverheadOptions struct {
	Invocations int // intake invocations measured (default 2000)
}

// Overhead measures the handler's own cost against a simulator without latency (time scale 0):
// intake invocations per second per core, stage invocations per second per core, their p50 and
// p99 latency, and the handler child's peak RSS.
func Overhead(ctx context.Context, o Options, oo OverheadOptions) (Result, error) {
	if oo.Invocations <= 0 {
		oo.Invocations = 2000
	}
	vmsN := max(oo.Invocations/10, 1)
	o.TimeScale = 1e-9 // as good as zero: every simulated operation completes at its first poll
	res := Result{Scenario: "overhead", Params: map[string]any{"invocations": oo.Invocations, "vms": vmsN, "timeScale": 0, "cores": runtime.NumCPU()}}
	fleet, err := makeFleet(vmsN, 8, wideRescue)
	if err != nil {
		return res, err
	}
	env, err := start(ctx, o, fleet, noFaults, nil)
	if err != nil {
		return res, err
	}
	defer env.Stop()
	t0 := time.Now()
	col := collect(env.Stack.Host)
	var evs []stormEvent
	base := time.Now().UTC().Add(-time.Minute)
	for i := range oo.Invocations {
		k := i % vmsN
		evs = append(evs, stormEvent{vmID: fleet.VMID(fleet.VMs[k].Name), eventID: fmt.Sprintf("oh-%05d", k), at: base.Add(time.Duration(k) * time.Millisecond), schema: hostproto.SchemaEventGrid})
	}
	postStart := time.Now()
	if _, _, err := postAll(ctx, env, evs, 16); err != nil {
		col.Stop()
		return res, err
	}
	postSecs := time.Since(postStart).Seconds()
	if err := waitIdle(ctx, env.Stack.Host); err != nil {
		col.Stop()
		return res, err
	}
	invs := col.Stop()
	cores := float64(runtime.NumCPU())
	byFn := map[string][]float64{}
	var stageFirst, stageLast time.Time
	for _, inv := range invs {
		byFn[inv.Function] = append(byFn[inv.Function], inv.DurationMS)
		if inv.Function == "Snapshot" {
			if stageFirst.IsZero() || inv.Start.Before(stageFirst) {
				stageFirst = inv.Start
			}
			if e := inv.Start.Add(inv.Duration); e.After(stageLast) {
				stageLast = e
			}
		}
	}
	alert := byFn["HealthAlert"]
	slices.Sort(alert)
	res.figure("intake invocations per second per core", float64(len(alert))/postSecs/cores, "inv/s/core")
	res.figure("intake p50", percentile(alert, 50), "ms")
	res.figure("intake p99", percentile(alert, 99), "ms")
	snap := byFn["Snapshot"]
	slices.Sort(snap)
	if len(snap) > 0 && stageLast.After(stageFirst) {
		res.figure("Snapshot stage invocations per second per core", float64(len(snap))/stageLast.Sub(stageFirst).Seconds()/cores, "inv/s/core")
		res.figure("Snapshot p50", percentile(snap, 50), "ms")
		res.figure("Snapshot p99", percentile(snap, 99), "ms")
	}
	if c := env.Stack.Host.Child(); c != nil {
		if kb, err := vmHWM(c.PID()); err == nil {
			res.target("handler peak RSS (VmHWM)", float64(kb)/1024, "MiB", true, 256, "the handler child since its last start")
		}
	}
	res.Notes = append(res.Notes, "Both processes (host with simulator and Azurite, and the handler) share the machine's cores; per-core figures divide by all cores, so they understate the handler alone.")
	res.finish(t0)
	return res, nil
}

// vmHWM reads a process's peak resident set size in KiB from /proc/<pid>/status.
func vmHWM(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}
