package pipeline_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lock"
)

// writes lists the simulator's write requests (polls excluded) of op, "" for any.
func writes(sim *azsim.Sim, op string) []azsim.Call {
	var out []azsim.Call
	for _, c := range sim.CallLog() {
		if c.Write && !c.Poll && (op == "" || c.Op == op) {
			out = append(out, c)
		}
	}
	return out
}

// activeIncident makes the trail of an active incident of a fleet VM, with no message queued: a
// holder of a rescue VM's turn that is not stale.
// holdSlot reserves a rescue VM's slot for an incident, as that incident's stage would.
func (e *env) holdSlot(s lock.Slot, rescueVMID, incidentID string) {
	e.t.Helper()
	if ok, h, err := e.locks.ReserveSlot(context.Background(), s, rescueVMID, incidentID); err != nil || !ok {
		e.t.Fatalf("reserve the %s slot for %s: taken by %s, %v", s, incidentID, h.IncidentID, err)
	}
}

func (e *env) activeIncident(vmName string) string {
	e.t.Helper()
	id := incident.NewID(time.Now())
	if _, err := e.trail.Append(context.Background(), id, audit.Entry{VMResourceID: e.fleet.VMID(vmName), Stage: "intake",
		Event: incident.EventOpened}); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// lastRetry returns the newest retrying record of a stage.
func lastRetry(t *testing.T, e *env, id string, stage incident.Stage) audit.Record {
	t.Helper()
	recs := e.records(id)
	for i := len(recs) - 1; i >= 0; i-- {
		if recs[i].Stage == string(stage) && recs[i].Event == incident.EventRetrying && recordDetail(recs[i])["retryAt"] != nil {
			return recs[i]
		}
	}
	t.Fatalf("no scheduled retry of %s recorded", stage)
	return audit.Record{}
}

// scheduledIn returns how far ahead of from the newest message of a stage is scheduled.
func scheduledIn(t *testing.T, e *env, stage incident.Stage, from time.Time) time.Duration {
	t.Helper()
	sent := e.bus.sentTo(stage)
	if len(sent) == 0 || sent[len(sent)-1].ScheduledEnqueueTime == nil {
		t.Fatalf("no scheduled %s message", stage)
	}
	return sent[len(sent)-1].ScheduledEnqueueTime.Sub(from)
}

// TestAgentSlotTakenWaits: an incident that finds its rescue VM's agent slot held by another
// active incident waits by a scheduled message, without sending ARM a write, and runs once the
// slot is free.
func TestAgentSlotTakenWaits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	other := e.activeIncident("app-api-01")
	id, d := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-web-01"})
	rescue := d.msg.Artifacts.RescueVMID
	e.holdSlot(lock.SlotAgent, rescue, other)
	p := e.newPipeline(nil)
	e.sim.ResetCalls()
	before := time.Now()
	if err := e.run(p, ctx, d, 1); err != nil {
		t.Fatalf("want the wait scheduled and the message acknowledged, got %v", err)
	}
	if w := writes(e.sim, ""); len(w) != 0 {
		t.Errorf("%d ARM writes while the slot was taken, want none: %+v", len(w), w)
	}
	rec := lastRetry(t, e, id, incident.StageOfflinePatch)
	if det := recordDetail(rec); det["unbounded"] != true || !strings.Contains(det["reason"].(string), other) {
		t.Errorf("retry record %s: want an unbounded wait naming %s", rec.Detail, other)
	}
	if in := scheduledIn(t, e, incident.StageOfflinePatch, before); in < 10*time.Second || in > time.Minute {
		t.Errorf("retry scheduled %v later, want the agent slot's wait", in)
	}
	if h, _ := e.locks.SlotHolder(ctx, lock.SlotAgent, rescue); h.IncidentID != other {
		t.Errorf("slot holder %q, want %s untouched", h.IncidentID, other)
	}

	if err := e.locks.ReleaseSlot(ctx, lock.SlotAgent, rescue, other); err != nil {
		t.Fatal(err)
	}
	for {
		got, ok := e.step(p)
		if !ok || got.queue != incident.StageOfflinePatch {
			break
		}
		if got.err != nil {
			t.Fatalf("offline-patch after the slot was freed: %v", got.err)
		}
	}
	if runs := writes(e.sim, "VirtualMachineRunCommands.BeginCreateOrUpdate"); len(runs) != 1 {
		t.Errorf("%d agent runs after the slot was freed, want 1 (patch)", len(runs))
	}
	if h, _ := e.locks.SlotHolder(ctx, lock.SlotAgent, rescue); !h.Free() {
		t.Errorf("agent slot held by %s after the results were read", h.IncidentID)
	}
}

// TestAgentSlotStale: a turn whose holder can no longer use it is taken over, and recorded.
func TestAgentSlotStale(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		holder func(e *env) string
		later  time.Duration // the pipeline's clock runs this far ahead
		why    string
	}{
		{"holder has no trail", func(*env) string { return incident.NewID(time.Now()) }, 0, "no audit trail"},
		{"holder closed", func(e *env) string {
			id := e.activeIncident("app-api-01")
			if _, err := e.trail.Append(context.Background(), id, audit.Entry{VMResourceID: e.fleet.VMID("app-api-01"),
				Stage: "test", Event: incident.EventClosed, State: incident.StateClosed}); err != nil {
				e.t.Fatal(err)
			}
			return id
		}, 0, "is closed"},
		{"holder active past the longest run", func(e *env) string { return e.activeIncident("app-api-01") }, 2 * time.Hour, "held for"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			ctx := context.Background()
			holder := tc.holder(e)
			id, d := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-web-01"})
			rescue := d.msg.Artifacts.RescueVMID
			e.holdSlot(lock.SlotAgent, rescue, holder)
			p := e.newPipeline(nil)
			if tc.later > 0 {
				p.Now = func() time.Time { return time.Now().Add(tc.later) }
			}
			e.sim.ResetCalls()
			if err := e.run(p, ctx, d, 1); err != nil {
				t.Fatalf("offline-patch: %v", err)
			}
			if runs := writes(e.sim, "VirtualMachineRunCommands.BeginCreateOrUpdate"); len(runs) != 1 {
				t.Errorf("%d agent runs, want 1", len(runs))
			}
			found := false
			for _, r := range e.records(id) {
				if s, _ := recordDetail(r)["reason"].(string); strings.Contains(s, "taken over from incident "+holder) && strings.Contains(s, tc.why) {
					found = true
				}
			}
			if !found {
				t.Errorf("no record of the take-over from %s (%s)", holder, tc.why)
			}
			if h, _ := e.locks.SlotHolder(ctx, lock.SlotAgent, rescue); !h.Free() {
				t.Errorf("agent slot held by %s after the stage", h.IncidentID)
			}
		})
	}
}

// TestAgentSlotSurvivesCrash: a handler that dies after submitting the agent's Run Command keeps
// the rescue VM's turn; another incident meanwhile waits without a write; the redelivered message
// finds its own turn and its own Run Command, reads the result without running it again, and
// gives the turn back.
func TestAgentSlotSurvivesCrash(t *testing.T) {
	t.Parallel()
	fleet := azsim.DefaultFleet()
	fleet.RescueVMs = fleet.RescueVMs[:1] // both incidents on one rescue VM
	e := newEnv(t, envOptions{fleet: fleet})
	ctx := context.Background()
	id, d := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-web-01"})
	other, od := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-api-01"})
	rescue := d.msg.Artifacts.RescueVMID
	if od.msg.Artifacts.RescueVMID != rescue {
		t.Fatalf("incidents on %s and %s", rescue, od.msg.Artifacts.RescueVMID)
	}

	ft := &faultTransport{crashAfter: 1} // dies once the first write (the agent's run) is applied
	crashed := e.newPipeline(ft.wrap)
	cctx, cancel := context.WithCancel(ctx)
	ft.cancel = cancel
	if err := e.run(crashed, cctx, d, 1); err == nil {
		t.Fatal("the crashed delivery reported success")
	}
	if h, _ := e.locks.SlotHolder(ctx, lock.SlotAgent, rescue); h.IncidentID != id {
		t.Fatalf("after the crash the agent slot is held by %q, want %s", h.IncidentID, id)
	}

	p := e.newPipeline(nil)
	e.sim.ResetCalls()
	if err := e.run(p, ctx, od, 1); err != nil {
		t.Fatalf("the other incident: %v", err)
	}
	if w := writes(e.sim, ""); len(w) != 0 {
		t.Errorf("the other incident made %d writes while the crashed one held the turn", len(w))
	}
	if s := recordDetail(lastRetry(t, e, other, incident.StageOfflinePatch))["reason"].(string); !strings.Contains(s, id) {
		t.Errorf("the other incident waits for %q, want %s", s, id)
	}

	e.sim.ResetCalls()
	if err := e.run(p, ctx, d, 2); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	if runs := writes(e.sim, "VirtualMachineRunCommands.BeginCreateOrUpdate"); len(runs) != 0 {
		t.Errorf("the redelivery ran the agent %d more times, want its result read", len(runs))
	}
	if h, _ := e.locks.SlotHolder(ctx, lock.SlotAgent, rescue); !h.Free() {
		t.Errorf("agent slot held by %s after the redelivery completed", h.IncidentID)
	}
	for _, c := range e.sim.CallLog() {
		if c.Status == http.StatusConflict {
			t.Errorf("%s %s answered 409", c.Op, c.Path)
		}
	}
}

// TestThrottledWaitsWithoutBound: ARM's throttling is a scheduled wait of its Retry-After (or
// ThrottleDelay without one), acknowledged rather than redelivered, however many waits for shared
// capacity the stage had before: those do not use up its scheduled retries.
func TestThrottledWaitsWithoutBound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	other := e.activeIncident("app-api-01")
	id, d := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-web-01"})
	rescue := d.msg.Artifacts.RescueVMID
	e.holdSlot(lock.SlotAgent, rescue, other)
	e.bus.redeliver(d)
	p := e.newPipeline(nil)
	const waits = 25 // more than maxScheduledRetries
	for i := range waits {
		got, ok := e.step(p)
		if !ok || got.queue != incident.StageOfflinePatch || got.err != nil {
			t.Fatalf("wait %d: %s %v", i, got.queue, got.err)
		}
	}
	if err := e.locks.ReleaseSlot(ctx, lock.SlotAgent, rescue, other); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		retryAfter string
		want       time.Duration
	}{{"7", 7 * time.Second}, {"", 30 * time.Second}} {
		// Four answers: the SDK's own retries see 429 too.
		ft := &faultTransport{rules: []*faultRule{{op: "VirtualMachineRunCommands.BeginCreateOrUpdate", status: http.StatusTooManyRequests,
			code: "SubscriptionRequestsThrottled", retryAfter: tc.retryAfter, times: 4}}}
		next, ok := e.bus.pop()
		if !ok || next.queue != incident.StageOfflinePatch {
			t.Fatalf("no offline-patch message left: %+v", next)
		}
		before := time.Now()
		if err := e.run(e.newPipeline(ft.wrap), ctx, next, 1); err != nil {
			t.Fatalf("Retry-After %q: want a scheduled wait, got %v", tc.retryAfter, err)
		}
		if in := scheduledIn(t, e, incident.StageOfflinePatch, before); in < tc.want || in > tc.want+5*time.Second {
			t.Errorf("Retry-After %q: retry scheduled %v later, want %v", tc.retryAfter, in, tc.want)
		}
		if det := recordDetail(lastRetry(t, e, id, incident.StageOfflinePatch)); det["unbounded"] != true {
			t.Errorf("Retry-After %q: throttling recorded as a bounded retry: %v", tc.retryAfter, det)
		}
	}
	e.drain(e.newPipeline(nil))
	if v := e.checkClean(id); v.State != incident.StateClosed {
		t.Errorf("incident ended %s/%s", v.State, v.Outcome)
	}
}

// TestUpdateSlotSerialisesAttach: a rescue VM takes one attach or detach at a time. An attach
// waits for the VM's update slot held by another incident, and is sent only once it is free, so
// that ARM never refuses it with 409 (a write spent).
func TestUpdateSlotSerialisesAttach(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	other := e.activeIncident("app-api-01")
	_, d := e.reach(scenario{stage: incident.StageRescueAttach, vm: "app-web-01"})
	rescue := e.fleet.VMID(e.fleet.RescueVMs[0].Name) // zone 1, as app-web-01
	e.holdSlot(lock.SlotUpdate, rescue, other)
	p := e.newPipeline(nil)
	// The slot is given back, without a wake (as by another instance), while the attach waits in
	// line and reads it again after 5 s (10 s compressed by the time scale, 5 s at the least).
	p.LineWait, p.TimeScale = 20*time.Second, 0.01
	e.sim.ResetCalls()
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { err = e.run(p, ctx, d, 1) })
	time.Sleep(300 * time.Millisecond)
	freed := time.Now() // the simulator runs on the wall clock
	if rerr := e.locks.ReleaseSlot(ctx, lock.SlotUpdate, rescue, other); rerr != nil {
		t.Fatal(rerr)
	}
	wg.Wait()
	if err != nil {
		t.Fatalf("rescue-attach: %v", err)
	}
	attaches := writes(e.sim, "VirtualMachines.BeginAttachDetachDataDisks")
	if len(attaches) != 1 {
		t.Fatalf("%d attaches, want 1", len(attaches))
	}
	if attaches[0].Time.Before(freed) {
		t.Errorf("attach sent at %v, before the update slot was free at %v", attaches[0].Time, freed)
	}
	if h, _ := e.locks.SlotHolder(ctx, lock.SlotUpdate, rescue); !h.Free() {
		t.Errorf("update slot held by %s after the attach", h.IncidentID)
	}
}

// hookTransport calls hook with each request before it goes on.
type hookTransport struct {
	next policy.Transporter
	hook func(*http.Request)
}

func (h *hookTransport) Do(req *http.Request) (*http.Response, error) {
	h.hook(req)
	return h.next.Do(req)
}

// TestDumpFoundIsACheckpoint: when the rescue VM's agent slot is taken between the run that
// finds MEMORY.DMP on the disk and the harvest, the stage waits, and its retry harvests without
// running the first again (a Run Command and its deletion are writes from the budget).
func TestDumpFoundIsACheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	other := e.activeIncident("app-api-01")
	_, d := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-batch-01"}) // a dump on its disk
	rescue := d.msg.Artifacts.RescueVMID
	var once sync.Once
	p := e.newPipeline(func(next policy.Transporter) policy.Transporter {
		return &hookTransport{next: next, hook: func(req *http.Request) {
			// Once the first run's Run Command is deleted, another incident takes the slot.
			if req.Method == http.MethodDelete && strings.HasSuffix(req.URL.Path, "-patch") {
				once.Do(func() {
					if ok, _, err := e.locks.ReserveSlot(ctx, lock.SlotAgent, rescue, other); err != nil || !ok {
						t.Errorf("reserve for the other incident: %v %v", ok, err)
					}
				})
			}
		}}
	})
	e.sim.ResetCalls()
	if err := e.run(p, ctx, d, 1); err != nil {
		t.Fatalf("offline-patch: %v", err)
	}
	if err := e.locks.ReleaseSlot(ctx, lock.SlotAgent, rescue, other); err != nil {
		t.Fatal(err)
	}
	next, ok := e.bus.pop()
	if !ok || next.queue != incident.StageOfflinePatch {
		t.Fatalf("no retry of offline-patch queued: %+v", next)
	}
	if err := e.run(e.newPipeline(nil), ctx, next, 1); err != nil {
		t.Fatalf("retry: %v", err)
	}
	runs := map[string]int{}
	for _, c := range writes(e.sim, "VirtualMachineRunCommands.BeginCreateOrUpdate") {
		runs[c.Path[strings.LastIndex(c.Path, "-")+1:]]++
	}
	if runs["patch"] != 1 || runs["harvest"] != 1 || len(runs) != 2 {
		t.Errorf("agent runs %v, want one patch (finding the dump) and one harvest", runs)
	}
	if sent := e.bus.sentTo(incident.StageSupportTicket); len(sent) != 1 {
		t.Errorf("%d support-ticket messages after the retry, want 1", len(sent))
	}
}

// TestBootDiagnosticsOncePerStage: a HarvestDump that waits for rescue capacity again and again
// retrieves the boot diagnostics (a POST, a write from the budget) once.
func TestBootDiagnosticsOncePerStage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	other := e.activeIncident("app-api-01")
	_, d := e.reach(scenario{stage: incident.StageHarvestDump, vm: "app-web-01"})
	rescue := e.fleet.VMID(e.fleet.RescueVMs[0].Name) // zone 1, as app-web-01
	for lun := range int32(8) {                       // Standard_D4s_v5 takes 8 data disks
		if ok, _, err := e.locks.ReserveLUN(ctx, rescue, lun, other); err != nil || !ok {
			t.Fatalf("reserve LUN %d: %v %v", lun, ok, err)
		}
	}
	p := e.newPipeline(nil)
	e.sim.ResetCalls()
	e.bus.redeliver(d)
	for i := range 3 {
		got, ok := e.bus.pop()
		if !ok || got.queue != incident.StageHarvestDump {
			t.Fatalf("attempt %d: no harvest-dump message: %+v", i, got)
		}
		if err := e.run(p, ctx, got, 1); err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
		if s, _ := recordDetail(lastRetry(t, e, d.msg.IncidentID, incident.StageHarvestDump))["reason"].(string); !strings.Contains(s, "no rescue capacity") {
			t.Fatalf("attempt %d waits for %q, want rescue capacity", i, s)
		}
	}
	if n := len(writes(e.sim, "VirtualMachines.RetrieveBootDiagnosticsData")); n != 1 {
		t.Errorf("boot diagnostics retrieved %d times over 3 attempts, want once", n)
	}
}

// TestUpdateSlotStaleWhenIdle: an update slot taken a while ago while the rescue VM shows no
// operation in progress was left behind (its holder died, or its retry found the work done) and is
// taken over, so that the rescue VM's attaches and detaches do not wait for it.
func TestUpdateSlotStaleWhenIdle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	other := e.activeIncident("app-api-01")
	id, d := e.reach(scenario{stage: incident.StageRescueAttach, vm: "app-web-01"})
	rescue := e.fleet.VMID(e.fleet.RescueVMs[0].Name)
	e.holdSlot(lock.SlotUpdate, rescue, other)
	p := e.newPipeline(nil)
	p.Now = func() time.Time { return time.Now().Add(time.Minute) } // past the grace, within the hold
	if err := e.run(p, ctx, d, 1); err != nil {
		t.Fatalf("rescue-attach: %v", err)
	}
	if n := len(e.bus.sentTo(incident.StageOfflinePatch)); n != 1 {
		t.Fatalf("%d offline-patch messages, want the stage completed", n)
	}
	found := false
	for _, r := range e.records(id) {
		if s, _ := recordDetail(r)["reason"].(string); strings.Contains(s, "taken over from incident "+other) && strings.Contains(s, "no operation in progress") {
			found = true
		}
	}
	if !found {
		t.Error("no record of the take-over")
	}
}

// TestAgentSlotWaitsInLine: two incidents patch on the same rescue VM at once. The second waits
// in line within its invocation and runs as soon as the first gives the agent slot back: no
// scheduled retry, and sooner than its own reading of the slot (every 20 s) would find it.
func TestAgentSlotWaitsInLine(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	id1, d1 := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-web-01"})
	id2, d2 := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-api-01"})
	if d1.msg.Artifacts.RescueVMID != d2.msg.Artifacts.RescueVMID {
		t.Fatalf("rescue VMs %s and %s: want the same", d1.msg.Artifacts.RescueVMID, d2.msg.Artifacts.RescueVMID)
	}
	p := e.newPipeline(nil)
	p.LineWait = time.Minute // a reading every 20 s; a wake is at once
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, d := range []delivered{d1, d2} {
		wg.Go(func() { errs[i] = e.run(p, ctx, d, 1) })
	}
	wg.Wait()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("both patches took %v: the second waited for a reading, not a wake", took)
	}
	for i, id := range []string{id1, id2} {
		if errs[i] != nil {
			t.Fatalf("incident %d: %v", i+1, errs[i])
		}
		for _, rec := range e.records(id) {
			if rec.Stage == string(incident.StageOfflinePatch) && rec.Event == incident.EventRetrying {
				t.Errorf("incident %d: retry recorded: %s", i+1, rec.Detail)
			}
		}
	}
	if n := len(e.bus.sentTo(incident.StageReattachReboot)); n != 2 {
		t.Errorf("%d reattach-reboot messages, want 2", n)
	}
	if runs := writes(e.sim, "VirtualMachineRunCommands.BeginCreateOrUpdate"); len(runs) != 2 {
		t.Errorf("%d Run Command PUTs, want 2 (none refused)", len(runs))
	}
}
