package bench

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/localhost"
	"github.com/vmrescue/vmrescue/internal/pipeline"
)

// CapacityOptions size the capacity scenario.
type CapacityOptions struct {
	VMs           int // crashing VMs (default 200)
	RescueVMs     int // rescue VMs of Standard_D4s_v5, MaxDataDiskCount 8 (default 4)
	WritesPerHour int // ARM write budget per subscription (default 1200)
	// DeletesPerHour is ARM's delete budget per subscription (default 15000), which ARM keeps
	// apart from the writes.
	DeletesPerHour int
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
	if c.DeletesPerHour <= 0 {
		c.DeletesPerHour = 15000
	}
}

// The paths an incident of the capacity fleet takes through the stages, as pipeline.Operations
// names them: a VM without a dump is patched, rebooted and harvested; a VM with MEMORY.DMP already
// on its disk is harvested at once from the rescue disk.
var (
	pathPatched = map[string]string{"Snapshot": "", "RescueAttach": "", "OfflinePatch": "no dump", "ReattachReboot": "",
		"HarvestDump": "dump", "SupportTicket": "new ticket"}
	pathDumpFound = map[string]string{"Snapshot": "", "RescueAttach": "", "OfflinePatch": "dump found", "SupportTicket": "new ticket"}
)

// runCommandOp is the operation whose executions the simulator lists with their spans.
const runCommandOp = "VirtualMachineRunCommands.BeginCreateOrUpdate"

// postReads are the operations pipeline.Operations lists as reads that are POST requests. ARM
// counts every PUT, PATCH and POST against the write budget (its answers carry
// x-ms-ratelimit-remaining-subscription-writes), and so does the simulator.
var postReads = map[string]bool{"Tickets.CheckNameAvailability": true}

// minWrites is the number of requests against the write budget an incident makes on path when
// nothing is refused, throttled or redone: the write rows of pipeline.Operations on that path
// (the stage tests hold the stages to those rows) that are not deletes, and its POST reads.
func minWrites(path map[string]string) int {
	n := 0
	for _, o := range pipeline.Operations {
		p, ok := path[o.Stage]
		if ok && ((o.Write && !pipeline.IsDelete(o.Op)) || postReads[o.Op]) && (o.Path == "" || o.Path == p) {
			n += o.Count
		}
	}
	return n
}

// minOps is how many requests of op an incident makes on path: its rows' counts.
func minOps(path map[string]string, op string) int {
	n := 0
	for _, o := range pipeline.Operations {
		if p, ok := path[o.Stage]; ok && o.Op == op && (o.Path == "" || o.Path == p) {
			n += o.Count
		}
	}
	return n
}

// rescueUse is how the rescue VMs' agents were used: the time their runs took, the pauses
// between one run's end and the next one's start on the same VM (sorted), and per interval of the
// run the share of the pool's time spent running.
type rescueUse struct {
	Busy   time.Duration
	Pauses []time.Duration
	Shares []float64
}

// runCommandUse measures the agent runs of vms rescue VMs, per interval from t0.
func runCommandUse(perVM map[string][]azsim.Operation, vms int, t0 time.Time, interval time.Duration) rescueUse {
	var u rescueUse
	var busyIn []time.Duration
	for _, ops := range perVM {
		slices.SortFunc(ops, func(a, b azsim.Operation) int { return a.Start.Compare(b.Start) })
		for i, op := range ops {
			u.Busy += op.End.Sub(op.Start)
			if i > 0 && op.Start.After(ops[i-1].End) {
				u.Pauses = append(u.Pauses, op.Start.Sub(ops[i-1].End))
			}
			from, to := max(op.Start.Sub(t0), 0), max(op.End.Sub(t0), 0)
			for k := int(from / interval); time.Duration(k)*interval < to; k++ {
				for len(busyIn) <= k {
					busyIn = append(busyIn, 0)
				}
				lo, hi := time.Duration(k)*interval, time.Duration(k+1)*interval
				busyIn[k] += min(to, hi) - max(from, lo)
			}
		}
	}
	slices.Sort(u.Pauses)
	for _, b := range busyIn {
		u.Shares = append(u.Shares, b.Seconds()/(interval.Seconds()*float64(max(vms, 1))))
	}
	return u
}

// quantile is the q-quantile of sorted durations (nearest rank); 0 when there are none.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(max(int(math.Ceil(q*float64(len(sorted))))-1, 0), len(sorted)-1)]
}

// perInterval counts sorted times per interval, as "a b c ...".
func perInterval(sorted []time.Duration, interval time.Duration) string {
	if len(sorted) == 0 {
		return ""
	}
	counts := make([]int, int(sorted[len(sorted)-1]/interval)+1)
	for _, t := range sorted {
		counts[max(int(t/interval), 0)]++
	}
	parts := make([]string, len(counts))
	for i, c := range counts {
		parts[i] = strconv.Itoa(c)
	}
	return strings.Join(parts, " ")
}

// capacityLimits are what the lower bound is computed from: the scenario's limits and the least
// work its incidents need, never the work a run actually did.
type capacityLimits struct {
	Incidents     int
	Patched       int // incidents on pathPatched; the others are on pathDumpFound
	RescueVMs     int
	Slots         int // data-disk slots of the pool
	WritesPerHour int
	Window        time.Duration // of the write budget, at time scale 1
	Latency       azsim.LatencyTable
	// RunSpan is the mean span of one agent Run Command execution (extension overhead, agent
	// download on a VM's first run, the agent's own work) at time scale 1, as the simulator ran
	// them.
	RunSpan time.Duration
}

// capacityBound is the lower bound, at time scale 1, and its parts.
type capacityBound struct {
	MinWrites, MinRuns        int
	Write, Slot, RunCmd, Best time.Duration
	LeadIn, Tail, Hold        time.Duration // Run Command bound's parts; Hold is the LUN hold of one incident
}

// bound computes the three bounds:
//
//   - Write budget: B writes per window W let the k-th write through no earlier than
//     floor((k-1)/B) windows after the first, and the incidents need at least K writes between
//     them (minWrites of each incident's path). Writes ARM refused or redone are waste, not need,
//     so they do not raise the bound.
//   - Run Commands: a VM runs one at a time, so the pool runs the agent runs the incidents need
//     (minOps of the Run Command PUT) one after another on each VM, at best evenly shared: their
//     spans over the VMs. None can start before the first incident's disk is attached (its
//     deallocate, snapshot and the snapshot's background copy, disk copy and attach), and the
//     last is followed at least by a ticket.
//   - LUN slots: every disk an incident attaches holds a slot from its attach through its agent
//     runs to its detach.
func (l capacityLimits) bound() capacityBound {
	var b capacityBound
	dumpFound := l.Incidents - l.Patched
	b.MinWrites = l.Patched*minWrites(pathPatched) + dumpFound*minWrites(pathDumpFound)
	b.MinRuns = l.Patched*minOps(pathPatched, runCommandOp) + dumpFound*minOps(pathDumpFound, runCommandOp)
	windows := math.Floor(float64(max(b.MinWrites-1, 0)) / float64(l.WritesPerHour))
	b.Write = time.Duration(windows * float64(l.Window))

	lat := l.Latency
	attach := lat["VirtualMachines.BeginAttachDetachDataDisks"]
	// RescueAttach makes its disk from the backup snapshot once the snapshot's background copy
	// is complete (ARM refuses a disk from a snapshot still copying).
	b.LeadIn = lat["VirtualMachines.BeginDeallocate"] + lat["Snapshots.BeginCreateOrUpdate"] + lat[azsim.LatencySnapshotCopy] +
		lat["Disks.BeginCreateOrUpdate"] + attach
	b.Tail = lat["Tickets.BeginCreate"]
	b.RunCmd = b.LeadIn + time.Duration(float64(b.MinRuns)*float64(l.RunSpan)/float64(l.RescueVMs)) + b.Tail

	// A patched incident attaches two disks (the copy it patches, the harvest disk), one that
	// has its dump already attaches one; each attach is undone by a detach.
	disks := 2*l.Patched + dumpFound
	b.Hold = time.Duration(disks)*2*attach + time.Duration(b.MinRuns)*l.RunSpan
	b.Slot = b.Hold / time.Duration(max(l.Slots, 1))
	b.Hold /= time.Duration(max(l.Incidents, 1))
	b.Best = max(b.Write, b.Slot, b.RunCmd)
	return b
}

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
		"lunsPerRescueVm": size.MaxDataDiskCount, "writesPerHour": co.WritesPerHour, "deletesPerHour": co.DeletesPerHour, "timeScale": o.scale(), "seed": o.Seed}}
	fleet, err := makeFleet(co.VMs, co.RescueVMs, rescueSize)
	if err != nil {
		return res, err
	}
	budget := azsim.WriteBudget{Writes: co.WritesPerHour, Deletes: co.DeletesPerHour, Window: time.Hour}
	// The handler paces its writes to the budget the simulator enforces.
	env, err := start(ctx, o, fleet, noFaults, func(so *azsim.Options, _ *localhost.Stack) { so.WriteBudget = budget },
		config.ARMWritesPerHour+"="+strconv.Itoa(co.WritesPerHour))
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
	idle := time.Since(t0).Seconds() - idleSettle.Seconds()
	a, err := account(context.Background(), env)
	if err != nil {
		return res, err
	}
	// The run's time is the remediation's: from the first alert to the last incident closed. A
	// message scheduled for later that finds its incident closed (the harvest ReattachReboot
	// scheduled after the reproduction wait, when a crash alert brought the harvest forward) is
	// absorbed when it comes, which is no work of the remediation's; "pipeline idle" counts it.
	total := idle
	if !a.LastClosed.IsZero() {
		total = a.LastClosed.Sub(t0).Seconds()
	}

	// What the run spent. A write the budget refused (429) costs nothing; any other write,
	// refused by ARM (409 and the like) or not, was taken from the budget. Deletes have their
	// own budget, which the run is far from.
	var spent, refused, throttled, runCmds, deletes, deletesThrottled int
	var spentAt []time.Duration // since t0, in call-log order
	spentBy := map[string][]time.Duration{}
	refusedBy := map[string]int{}
	for _, c := range env.Stack.Sim.CallLog() {
		if !c.Write || c.Poll {
			continue
		}
		if c.Delete {
			deletes++
			if c.Status == http.StatusTooManyRequests && c.Fault == "" {
				deletesThrottled++
			}
			continue
		}
		switch {
		case c.Status == http.StatusTooManyRequests && c.Fault == "":
			throttled++
			continue
		case c.Status >= 400:
			refused++
			refusedBy[fmt.Sprintf("%s %d", c.Op, c.Status)]++
		case c.Op == runCommandOp:
			runCmds++
		}
		spent++
		spentAt = append(spentAt, c.Time.Sub(t0))
		spentBy[c.Op] = append(spentBy[c.Op], c.Time.Sub(t0))
	}
	rescue := map[string]bool{}
	for _, r := range fleet.RescueVMs {
		rescue[strings.ToLower(fleet.VMID(r.Name))] = true
	}
	var runs int
	var span time.Duration
	perVM := map[string][]azsim.Operation{}
	for _, op := range env.Stack.Sim.State().Operations() {
		if op.Name == runCommandOp && rescue[op.Resource] {
			runs++
			span += op.End.Sub(op.Start)
			perVM[op.Resource] = append(perVM[op.Resource], op)
		}
	}
	use := runCommandUse(perVM, co.RescueVMs, t0, 30*time.Second)
	scale := o.scale()
	limits := capacityLimits{Incidents: co.VMs, RescueVMs: co.RescueVMs, Slots: slots, WritesPerHour: co.WritesPerHour,
		Window: budget.Window, Latency: azsim.DefaultLatency()}
	for _, v := range fleet.VMs {
		if !v.DumpPresent {
			limits.Patched++
		}
	}
	if runs > 0 {
		limits.RunSpan = time.Duration(float64(span) / float64(runs) / scale) // back to time scale 1
	}
	b := limits.bound()
	sec := func(d time.Duration) float64 { return d.Seconds() * scale }

	res.figure("ARM writes needed (no refusal, no throttling)", float64(b.MinWrites), "")
	res.figure("ARM writes spent (taken from the budget)", float64(spent), "")
	res.figure("writes needed per incident", float64(b.MinWrites)/float64(co.VMs), "")
	res.figure("writes spent per incident", float64(spent)/float64(co.VMs), "")
	res.figure("writes ARM refused (spent, no effect)", float64(refused), "")
	res.figure("writes throttled (429, not spent)", float64(throttled), "")
	res.figure("deletes (a budget of their own)", float64(deletes), "")
	res.figure("deletes throttled", float64(deletesThrottled), "")
	res.figure("agent runs needed", float64(b.MinRuns), "")
	res.figure("agent runs made", float64(runCmds), "")
	res.figure("mean agent run (scaled)", sec(limits.RunSpan), "s")
	res.figure("rescue VM busy with an agent run (share of total time)", use.Busy.Seconds()/float64(co.RescueVMs)/total, "")
	if n := len(use.Pauses); n > 0 {
		var sum time.Duration
		for _, d := range use.Pauses {
			sum += d
		}
		res.figure("mean pause between a rescue VM's agent runs", sum.Seconds()/float64(n), "s")
		res.figure("pause between a rescue VM's agent runs, p50", quantile(use.Pauses, 0.5).Seconds(), "s")
		res.figure("pause between a rescue VM's agent runs, p90", quantile(use.Pauses, 0.9).Seconds(), "s")
	}
	shares := make([]string, len(use.Shares))
	for i, f := range use.Shares {
		shares[i] = strconv.Itoa(int(math.Round(100 * f)))
	}
	res.Notes = append(res.Notes, "Rescue VMs busy with an agent run per 30 s of the run, in percent: "+strings.Join(shares, " ")+".")
	if n := len(spentAt); n > 0 {
		// Where the write-budget time went: the budget frees each write one window after it
		// was spent, so the last write goes no sooner than the windows before it after the
		// write of the first window it replays.
		slices.Sort(spentAt)
		replayed := n - (n-1)/co.WritesPerHour*co.WritesPerHour
		res.figure(fmt.Sprintf("first-window write the last write replays (#%d), sent at", replayed), spentAt[replayed-1].Seconds(), "s")
		res.figure("last write sent at", spentAt[n-1].Seconds(), "s")
		res.Notes = append(res.Notes, "Writes spent per 30 s of the run: "+perInterval(spentAt, 30*time.Second)+".")
		var byOp []string
		for _, op := range slices.Sorted(maps.Keys(spentBy)) {
			byOp = append(byOp, op+": "+perInterval(spentBy[op], 30*time.Second))
		}
		res.Notes = append(res.Notes, "The same by operation: "+strings.Join(byOp, "; ")+".")
	}
	res.figure("write-budget bound", sec(b.Write), "s")
	res.figure("Run Command bound", sec(b.RunCmd), "s")
	res.figure("LUN-slot bound", sec(b.Slot), "s")
	res.figure("total time (first alert to last incident closed)", total, "s")
	res.figure("pipeline idle (the last scheduled message absorbed)", idle, "s")
	res.target("total / lower bound", total/sec(b.Best), "", true, 1.15, "bound = max(write-budget, Run Command, LUN-slot bounds)")

	res.check("every incident closed", a.ByState[incident.StateClosed] == co.VMs, fmt.Sprintf("states %v", a.ByState))
	a.checkSafety(&res)
	window := budget.Window.Seconds() * scale
	res.Notes = append(res.Notes, fmt.Sprintf(
		"Lower bound, from what the incidents need rather than what the run did. Write budget: B=%d writes per %s window (%.2fs at time scale %g) let the k-th write through no earlier than floor((k-1)/B) windows after the first. "+
			"The incidents need K=%d writes: the write rows of pipeline.Operations (the table the stage tests hold each stage to) on each incident's path but its deletes, which ARM counts against a budget of their own (%d an hour), and its POST reads (the ticket name check), %d patched incidents x %d and %d with a dump already on disk x %d. "+
			"So the last write cannot go before %.0f windows = %.2fs. Writes ARM refused (409 and the like) are taken from the budget too but are waste, not need: they lengthen the run, not the bound. "+
			"The bound is reachable only in part: the budget frees each write one window after it was spent, so the last window's writes go out at the pace the first window's went, and after the last budget-bound write the incidents still in flight finish their chains; both weigh more the fewer windows the run has. "+
			"Run Commands: a VM runs one at a time, so the %d agent runs the incidents need (%d per patched incident, %d per other), at the %.2fs mean span the simulator ran them with, shared evenly by %d rescue VMs, take %.2fs; "+
			"none starts before the first disk is attached (deallocate, snapshot and its background copy, disk copy, attach: %.2fs) and a ticket (%.2fs) follows the last: %.2fs. "+
			"LUN slots: each attached disk holds one of %d slots from its attach through its agent runs to its detach (%.2fs per incident): %.2fs. The bound is the largest of the three. "+
			"Refused writes by operation: %v.",
		co.WritesPerHour, budget.Window, window, scale,
		b.MinWrites, co.DeletesPerHour, limits.Patched, minWrites(pathPatched), co.VMs-limits.Patched, minWrites(pathDumpFound),
		math.Floor(float64(max(b.MinWrites-1, 0))/float64(co.WritesPerHour)), sec(b.Write),
		b.MinRuns, minOps(pathPatched, runCommandOp), minOps(pathDumpFound, runCommandOp), sec(limits.RunSpan), co.RescueVMs,
		sec(b.RunCmd-b.LeadIn-b.Tail), sec(b.LeadIn), sec(b.Tail), sec(b.RunCmd),
		slots, sec(b.Hold), sec(b.Slot), refusedBy))
	res.finish(t0)
	return res, nil
}
