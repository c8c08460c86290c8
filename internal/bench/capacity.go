package bench

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/localhost"
)

// CapacityOptions size the capacity scenario.
type CapacityOptions struct {
	VMs           int // crashing VMs (default 200)
	RescueVMs     int // rescue VMs of Standard_D4s_v5, MaxDataDiskCount 8 (default 4)
	WritesPerHour int // ARM write budget per subscription (default 1200)
	// TimeScale of this scenario; 0 is the run's. The limits are in simulated time, so a scale at
	// which the handler's own work is small beside them (0.02 and up) measures the design.
	TimeScale float64
}

func (c *CapacityOptions) defaults() {
	if c.VMs <= 0 {
		c.VMs = 200
	}
	if c.RescueVMs <= 0 {
		c.RescueVMs = 4
	}
	if c.WritesPerHour <= 0 {
		c.WritesPerHour = 1200
	}
}

// lunOps are the operations an incident runs while it holds a LUN of a rescue VM: from the copy
// of the OS disk to its detach.
var lunOps = []string{"Disks.BeginCreateOrUpdate", "VirtualMachines.BeginAttachDetachDataDisks",
	azsim.LatencyRunCommandOverhead, "VirtualMachineRunCommands.BeginDelete", "VirtualMachines.BeginAttachDetachDataDisks"}

// Capacity remediates many VMs at once through a small rescue pool under ARM's write budget, and
// compares the time it takes with the lower bound those two limits imply.
func Capacity(ctx context.Context, o Options, co CapacityOptions) (Result, error) {
	co.defaults()
	if co.TimeScale > 0 {
		o.TimeScale = co.TimeScale
	}
	size, _ := azsim.LookupSize(rescueSize)
	slots := co.RescueVMs * size.MaxDataDiskCount
	res := Result{Scenario: "capacity", Params: map[string]any{"vms": co.VMs, "rescueVms": co.RescueVMs, "rescueSize": rescueSize,
		"lunsPerRescueVm": size.MaxDataDiskCount, "writesPerHour": co.WritesPerHour, "timeScale": o.scale(), "seed": o.Seed}}
	fleet, err := makeFleet(co.VMs, co.RescueVMs, rescueSize)
	if err != nil {
		return res, err
	}
	budget := azsim.WriteBudget{Writes: co.WritesPerHour, Window: time.Hour}
	env, err := start(ctx, o, fleet, noFaults, func(so *azsim.Options, _ *localhost.Stack) { so.WriteBudget = budget })
	if err != nil {
		return res, err
	}
	defer env.Stop()
	env.Stack.Sim.ResetCalls()
	t0 := time.Now()
	var evs []stormEvent
	base := time.Now().UTC().Add(-time.Minute)
	for i, v := range fleet.VMs {
		evs = append(evs, stormEvent{vmID: fleet.VMID(v.Name), eventID: fmt.Sprintf("cap-%05d", i), at: base.Add(time.Duration(i) * time.Millisecond), schema: hostproto.SchemaEventGrid})
	}
	o.progressf("posting %d alerts: %d rescue VMs x %d LUNs, %d writes/h", len(evs), co.RescueVMs, size.MaxDataDiskCount, co.WritesPerHour)
	if _, _, err := postAll(ctx, env, evs, 16); err != nil {
		return res, err
	}
	if err := waitIdle(ctx, env.Stack.Host); err != nil {
		return res, err
	}
	total := time.Since(t0).Seconds() - idleSettle.Seconds()

	// The bound. Writes: the budget lets the k-th write through no earlier than
	// floor((k-1)/B) windows after the first. LUN slots: every incident holds one slot at least for
	// the latency-table sum of lunOps, and there are `slots` of them.
	writes, throttled, runCmds := 0, 0, 0
	for _, c := range env.Stack.Sim.CallLog() {
		if c.Op == "VirtualMachineRunCommands.BeginCreateOrUpdate" && !c.Poll && c.Status < 400 {
			runCmds++
		}
		if c.Write && !c.Poll {
			if c.Status == 429 && c.Fault == "" {
				throttled++
				continue
			}
			if c.Status < 400 {
				writes++
			}
		}
	}
	scale := o.scale()
	window := budget.Window.Seconds() * scale
	writeBound := math.Floor(float64(max(writes-1, 0))/float64(co.WritesPerHour)) * window
	lat := azsim.DefaultLatency()
	var hold time.Duration
	for _, op := range lunOps {
		hold += lat[op]
	}
	slotBound := float64(co.VMs) * hold.Seconds() * scale / float64(slots)
	// Run Command: a VM runs one at a time, so each rescue VM runs its share of all the agent
	// runs one after another, each at least the extension's overhead.
	runCmdBound := float64(runCmds) * lat[azsim.LatencyRunCommandOverhead].Seconds() * scale / float64(co.RescueVMs)
	bound := max(writeBound, slotBound, runCmdBound)
	res.figure("ARM writes (accepted)", float64(writes), "")
	res.figure("writes per incident", float64(writes)/float64(co.VMs), "")
	res.figure("writes refused by the budget (429)", float64(throttled), "")
	res.figure("write-budget bound", writeBound, "s")
	res.figure("LUN-slot bound", slotBound, "s")
	res.figure("agent runs (Run Commands)", float64(runCmds), "")
	res.figure("Run Command bound", runCmdBound, "s")
	res.figure("total time", total, "s")
	res.target("total / lower bound", total/bound, "", true, 1.15, "bound = max(write-budget, LUN-slot, Run Command bounds)")

	a, err := account(context.Background(), env)
	if err != nil {
		return res, err
	}
	res.check("every incident closed", a.ByState[incident.StateClosed] == co.VMs, fmt.Sprintf("states %v", a.ByState))
	a.checkSafety(&res)
	res.Notes = append(res.Notes, fmt.Sprintf(
		"Lower bound: write budget B=%d per %s window (%.2fs at time scale %g) lets the k-th write through no earlier than floor((k-1)/B) windows in, so %d writes need %.2fs; "+
			"%d LUN slots (%d rescue VMs x %d) each held at least %s per incident (disk copy, attach, Run Command overhead, Run Command delete, detach at time scale 1) give %d x %s / %d = %.2fs scaled. A VM runs one Run Command at a time: %d agent runs of at least %s extension overhead each, shared by %d rescue VMs, give %.2fs scaled. The bound is the largest of the three.",
		co.WritesPerHour, budget.Window, window, scale, writes, writeBound, slots, co.RescueVMs, size.MaxDataDiskCount, hold, co.VMs, hold, slots, slotBound,
		runCmds, lat[azsim.LatencyRunCommandOverhead], co.RescueVMs, runCmdBound))
	res.finish(t0)
	return res, nil
}
