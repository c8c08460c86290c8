package pipeline_test

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/pipeline"
	"github.com/vmrescue/vmrescue/internal/server"
)

// recordDetail decodes a record's detail.
func recordDetail(r audit.Record) map[string]any {
	var d map[string]any
	_ = json.Unmarshal(r.Detail, &d)
	return d
}

// TestTransientFailures: throttling and conflicts are retried by a scheduled message of the same
// stage that honours Retry-After, and acknowledged; a 5xx without a wait answers transient for
// Service Bus to redeliver. Either way the incident completes.
func TestTransientFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		stage     incident.Stage
		rule      faultRule
		scheduled time.Duration // 0: the error is returned for redelivery
	}{
		{"snapshot throttled with Retry-After", incident.StageSnapshot,
			faultRule{op: "Snapshots.BeginCreateOrUpdate", status: 429, code: "SubscriptionRequestsThrottled", retryAfter: "7", times: 4}, 7 * time.Second},
		{"rescue disk conflict", incident.StageRescueAttach,
			faultRule{op: "Disks.BeginCreateOrUpdate", status: 409, code: "AnotherOperationInProgress", times: 1}, 15 * time.Second},
		{"run command busy on the rescue VM", incident.StageOfflinePatch,
			faultRule{op: "VirtualMachineRunCommands.BeginCreateOrUpdate", status: 409, code: "Conflict", times: 1}, 15 * time.Second},
		{"start answers 500", incident.StageReattachReboot,
			faultRule{op: "VirtualMachines.BeginStart", status: 500, code: "InternalServerError", times: 4}, 0},
		{"harvest snapshot throttled", incident.StageHarvestDump,
			faultRule{op: "Snapshots.BeginCreateOrUpdate", status: 429, code: "SubscriptionRequestsThrottled", retryAfter: "7", times: 4}, 7 * time.Second},
		{"harvest disk create answers 503", incident.StageHarvestDump,
			faultRule{op: "Disks.BeginCreateOrUpdate", status: 503, code: "ServiceUnavailable", times: 4}, 0},
		{"ticket create unavailable", incident.StageSupportTicket,
			faultRule{op: "Tickets.BeginCreate", status: 503, code: "ServiceUnavailable", retryAfter: "30", times: 4}, 30 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			id, d := e.reach(scenario{stage: tc.stage, vm: "app-web-01"})
			rule := tc.rule
			ft := &faultTransport{rules: []*faultRule{&rule}}
			before := time.Now()
			err := e.run(e.newPipeline(ft.wrap), context.Background(), d, 1)
			if tc.scheduled == 0 {
				if err == nil || fault.IsTerminal(err) {
					t.Fatalf("want a transient error, got %v", err)
				}
				e.bus.redeliver(d)
			} else {
				if err != nil {
					t.Fatalf("want the retry scheduled and the message acknowledged, got %v", err)
				}
				retries := e.bus.sentTo(tc.stage)
				last := retries[len(retries)-1]
				if last.MessageID != incident.MessageID(id, tc.stage, 1) || last.ScheduledEnqueueTime == nil {
					t.Fatalf("retry message %+v", last)
				}
				if wait := last.ScheduledEnqueueTime.Sub(before); wait < tc.scheduled || wait > tc.scheduled+5*time.Second {
					t.Errorf("retry scheduled %v later, want %v", wait, tc.scheduled)
				}
				found := false
				for _, r := range e.records(id) {
					if r.Stage == string(tc.stage) && r.Event == incident.EventRetrying && recordDetail(r)["attempt"] == float64(1) {
						found = true
					}
				}
				if !found {
					t.Error("no retrying record with attempt 1")
				}
			}
			e.drain(e.newPipeline(nil))
			v := e.checkClean(id)
			if v.State != incident.StateClosed || v.Outcome != incident.OutcomeTicketed {
				t.Errorf("incident ended %s/%s", v.State, v.Outcome)
			}
		})
	}
}

// TestTerminalFailures: a terminal ARM error or an agent refusal is recorded, acknowledged, and
// queues the rollback, which puts everything back: the incident ends failed and rolled back.
func TestTerminalFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		stage incident.Stage
		rule  *faultRule
		fail  *agent.Result
	}{
		{"snapshot create invalid", incident.StageSnapshot, &faultRule{op: "Snapshots.BeginCreateOrUpdate", status: 400, code: "InvalidParameter", times: 1}, nil},
		{"attach refused", incident.StageRescueAttach, &faultRule{op: "VirtualMachines.BeginAttachDetachDataDisks", status: 400, code: "InvalidParameter", times: 1}, nil},
		{"agent refuses the disk", incident.StageOfflinePatch, nil, &agent.Result{Refused: true, Error: "no Windows partition on the disk"}},
		{"OS disk swap not allowed", incident.StageReattachReboot, &faultRule{op: "VirtualMachines.BeginUpdate", status: 409, code: "PropertyChangeNotAllowed", times: 1}, nil},
		// After the swap: the rollback puts the original OS disk back.
		{"harvest disk create invalid", incident.StageHarvestDump, &faultRule{op: "Disks.BeginCreateOrUpdate", status: 400, code: "InvalidParameter", times: 1}, nil},
		{"ticket refused", incident.StageSupportTicket, &faultRule{op: "Tickets.BeginCreate", status: 400, code: "InvalidParameter", times: 1}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			vmID := e.fleet.VMID("app-web-01")
			before, _ := e.sim.State().VM(vmID)
			id, d := e.reach(scenario{stage: tc.stage, vm: "app-web-01"})
			at, _ := e.sim.State().VM(vmID)
			swapped := !strings.EqualFold(at.OSDiskID, before.OSDiskID)
			if want := tc.stage == incident.StageHarvestDump || tc.stage == incident.StageSupportTicket; swapped != want {
				t.Fatalf("VM on the patched disk before %s: %v", tc.stage, swapped)
			}
			ft := &faultTransport{}
			if tc.rule != nil {
				ft.rules = []*faultRule{tc.rule}
			}
			if tc.fail != nil {
				e.agent.setFail(agent.CommandPatch, tc.fail)
			}
			err := e.run(e.newPipeline(ft.wrap), context.Background(), d, 1)
			if !fault.IsTerminal(err) {
				t.Fatalf("want a terminal error, got %v", err)
			}
			if n := len(e.bus.sentTo(incident.StageFailed)); n != 1 {
				t.Fatalf("%d rollbacks queued", n)
			}
			e.drain(e.newPipeline(nil))
			v := e.checkClean(id)
			if v.State != incident.StateFailed || v.Outcome != incident.OutcomeRolledBack {
				t.Errorf("incident ended %s/%s", v.State, v.Outcome)
			}
			vm, _ := e.sim.State().VM(vmID)
			if !strings.EqualFold(vm.OSDiskID, before.OSDiskID) {
				t.Errorf("VM runs on %s, not its original OS disk %s", vm.OSDiskID, before.OSDiskID)
			}
			for _, rv := range e.cfg.RescueVMs {
				r, _ := e.sim.State().VM(rv)
				for _, dd := range r.DataDisks {
					if strings.Contains(dd.DiskID, id) {
						t.Errorf("disk %s still attached to %s", dd.DiskID, r.Name)
					}
				}
			}
			if ev := e.events.types(); len(ev) != 1 || !strings.HasPrefix(ev[0], "vmrescue.incident.failed:"+id) {
				t.Errorf("events %v", ev)
			}
		})
	}
}

// TestManualRollback: RemediationRollback's message after the swap puts the original OS disk back
// with the table's requests, and a second delivery changes nothing. The disk put back is the one
// the incident recorded, not another the message names. Once the original is back, the patched
// disk is temporary again and the Janitor deletes it.
func TestManualRollback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{fleet: withBehaviour(azsim.BehaviourHealthyAfterPatch)})
	id, _ := e.reach(scenario{stage: incident.StageHarvestDump, vm: "app-web-01"})
	vmID := e.fleet.VMID("app-web-01")
	vm, _ := e.sim.State().VM(vmID)
	if !strings.Contains(vm.OSDiskID, incident.RescueDiskName(id)) {
		t.Fatalf("VM not on the patched disk: %s", vm.OSDiskID)
	}
	v := e.checkClean(id)
	forged := v.Artifacts
	forged.OriginalOSDiskID = e.sim.State().ResourceID("disks", "rg-app", "someone-elses-disk")
	msg := incident.Message{Version: 1, IncidentID: id, VMResourceID: vmID, Stage: incident.StageFailed,
		Trigger: incident.Trigger{Kind: incident.TriggerManual, Reason: "rollback requested"}, Artifacts: forged}
	e.sim.ResetCalls()
	d := delivered{queue: incident.StageFailed, msg: msg, id: incident.MessageID(id, incident.StageFailed, 0)}
	if err := e.run(e.newPipeline(nil), context.Background(), d, 1); err != nil {
		t.Fatal(err)
	}
	if got, want := calls(e.sim), pipeline.Budget("Failed", "after the swap", len(e.cfg.RescueVMs)); !maps.Equal(got, want) {
		t.Errorf("ARM requests:\n got %v\nwant %v", got, want)
	}
	vm, _ = e.sim.State().VM(vmID)
	if !strings.EqualFold(vm.OSDiskID, v.Artifacts.OriginalOSDiskID) || vm.Power != azsim.PowerDeallocated {
		t.Errorf("after rollback: OS disk %s, power %s", vm.OSDiskID, vm.Power)
	}
	if _, ok := vm.Tags[incident.TagOriginalOSDisk]; ok {
		t.Error("the original OS disk tag stayed")
	}
	after := e.checkClean(id)
	if after.State != incident.StateClosed || after.Outcome != incident.OutcomeRolledBack {
		t.Errorf("incident %s/%s", after.State, after.Outcome)
	}
	e.sim.ResetCalls()
	if err := e.run(e.newPipeline(nil), context.Background(), d, 2); err != nil {
		t.Fatal(err)
	}
	for op, n := range calls(e.sim) {
		if !strings.HasSuffix(op, ".Get") {
			t.Errorf("second rollback made %d %s", n, op)
		}
	}
	noted := false
	for _, r := range e.records(id) {
		if reason, _ := recordDetail(r)["reason"].(string); strings.Contains(reason, "someone-elses-disk") && strings.Contains(reason, "ignored") {
			noted = true
		}
	}
	if !noted {
		t.Error("the message's other original OS disk is not noted on the trail")
	}
	// checkClean ran the Janitor once the incident was over.
	if _, ok := e.sim.State().Disk(diskOf(e, id)); ok {
		t.Error("the patched disk, swapped back out, was not cleaned up")
	}
}

func withBehaviour(b azsim.Behaviour) *azsim.Fleet {
	f := azsim.DefaultFleet()
	for i := range f.VMs {
		f.VMs[i].Behaviour = b
	}
	return f
}

// TestDryRun: every stage reads and plans; nothing is written in Azure.
func TestDryRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id := e.open("app-web-01", true)
	ds := e.drain(e.pipeline())
	for _, d := range ds {
		if d.err != nil {
			t.Fatalf("%s: %v", d.queue, d.err)
		}
	}
	want := []string{"snapshot", "rescue-attach", "offline-patch", "reattach-reboot", "harvest-dump", "support-ticket"}
	if got := stagesOf(ds); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("stages %v", got)
	}
	for _, c := range e.sim.CallLog() {
		if c.Write && c.Op != "Tickets.CheckNameAvailability" {
			t.Errorf("dry run wrote: %s %s", c.Method, c.Path)
		}
	}
	st := e.sim.State()
	if tagged := st.Tagged(incident.TagIncident); len(tagged) > 0 {
		t.Errorf("tagged resources: %v", tagged)
	}
	if vm, _ := st.VM(e.fleet.VMID("app-web-01")); vm.Power != azsim.PowerRunning {
		t.Errorf("VM is %s", vm.Power)
	}
	if len(st.Tickets()) > 0 || len(e.agent.requests()) > 0 {
		t.Error("a ticket was filed or the agent ran")
	}
	v := e.checkClean(id)
	if v.State != incident.StateClosed || v.Outcome != incident.OutcomeDryRun {
		t.Errorf("incident %s/%s", v.State, v.Outcome)
	}
	planned := map[string]bool{}
	for _, r := range e.records(id) {
		if d := recordDetail(r); d["dryRun"] == true && d["operation"] != nil {
			planned[d["operation"].(string)] = true
		}
	}
	for _, op := range []string{"VirtualMachines.BeginDeallocate", "Snapshots.BeginCreateOrUpdate", "Disks.BeginCreateOrUpdate",
		"VirtualMachines.BeginAttachDetachDataDisks", "VirtualMachineRunCommands.BeginCreateOrUpdate", "VirtualMachines.BeginUpdate",
		"VirtualMachines.BeginStart", "Tickets.BeginCreate", "VirtualMachineRunCommands.BeginDelete", "Disks.BeginDelete",
		"Snapshots.BeginDelete", "VirtualMachines.RetrieveBootDiagnosticsData"} {
		if !planned[op] {
			t.Errorf("planned writes lack %s", op)
		}
	}
}

// TestBadArtifacts: artifacts that point outside the incident's resources are refused,
// terminally, before any ARM request.
func TestBadArtifacts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id := e.open("app-web-01", false)
	d, _ := e.bus.pop()
	vm := e.fleet.VMID("app-web-01")
	sub := e.fleet.SubscriptionID
	other := "/subscriptions/" + sub + "/resourceGroups/rg-other/providers/Microsoft.Compute/"
	lun := int32(99)
	cases := map[string]func(*incident.Artifacts){
		"snapshot in another group": func(a *incident.Artifacts) { a.SnapshotID = other + "snapshots/" + incident.BackupSnapshotName(id) },
		"snapshot of another incident": func(a *incident.Artifacts) {
			a.SnapshotID = strings.Replace(vm, "virtualMachines/app-web-01", "snapshots/vmrescue-inc-20200101-000000-abcd-backup", 1)
		},
		"rescue disk named otherwise": func(a *incident.Artifacts) {
			a.RescueDiskID = strings.Replace(vm, "virtualMachines/app-web-01", "disks/payroll-data", 1)
		},
		"rescue VM outside the pool": func(a *incident.Artifacts) { a.RescueVMID = e.fleet.VMID("app-sql-01") },
		"LUN out of range":           func(a *incident.Artifacts) { a.LUN = &lun },
		"dump of another incident": func(a *incident.Artifacts) {
			a.DumpLocation = e.cfg.DumpsContainer + "/inc-20200101-000000-abcd/MEMORY.DMP"
		},
		"original disk elsewhere": func(a *incident.Artifacts) {
			a.OriginalOSDiskID = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/disks/d"
		},
		"ticket of another incident": func(a *incident.Artifacts) {
			a.TicketID = "/subscriptions/" + sub + "/providers/Microsoft.Support/supportTickets/other"
		},
	}
	p := e.newPipeline(nil)
	for name, mutate := range cases {
		msg := d.msg
		mutate(&msg.Artifacts)
		e.sim.ResetCalls()
		for _, stage := range []incident.Stage{incident.StageSnapshot, incident.StageFailed} {
			msg.Stage = stage
			err := p.Stages()[stage].Run(context.Background(), msg, serverDelivery(d))
			if !fault.IsTerminal(err) || !strings.Contains(err.Error(), "outside the incident's resources") {
				t.Errorf("%s on %s: %v", name, stage, err)
			}
		}
		if n := len(e.sim.CallLog()); n > 0 {
			t.Errorf("%s: %d ARM requests", name, n)
		}
	}
	rejected := 0
	for _, r := range e.records(id) {
		if r.Event == incident.EventRejected && strings.Contains(recordDetail(r)["reason"].(string), "outside the incident's resources") {
			rejected++
		}
	}
	if rejected != 2*len(cases) {
		t.Errorf("%d rejections recorded, want %d", rejected, 2*len(cases))
	}
	if e.state(id) != incident.StateActive {
		t.Error("a rejected message changed the incident's state")
	}
}

// TestRollbackBeforeSwap: a failure before the OS disk swap rolls back with the table's requests:
// the rescue disk comes off the rescue VM, the VM keeps its original disk, and it is started
// again only when configured to.
func TestRollbackBeforeSwap(t *testing.T) {
	t.Parallel()
	for _, s := range []scenario{
		{"Failed", incident.StageOfflinePatch, "before the swap", "app-web-01", false},
		{"Failed", incident.StageOfflinePatch, "before the swap, VM started", "app-web-01", true},
	} {
		t.Run(s.path, func(t *testing.T) {
			t.Parallel()
			e := s.env(t)
			vmID := e.fleet.VMID(s.vm)
			before, _ := e.sim.State().VM(vmID)
			id, d := e.reach(s)
			e.agent.setFail(agent.CommandPatch, &agent.Result{Refused: true, Error: "no Windows partition on the disk"})
			if err := e.run(e.newPipeline(nil), context.Background(), d, 1); !fault.IsTerminal(err) {
				t.Fatalf("want a terminal error, got %v", err)
			}
			f, ok := e.bus.pop()
			if !ok || f.queue != incident.StageFailed {
				t.Fatalf("next message %+v, want the rollback", f)
			}
			e.sim.ResetCalls()
			if err := e.run(e.newPipeline(nil), context.Background(), f, 1); err != nil {
				t.Fatal(err)
			}
			if got, want := calls(e.sim), pipeline.Budget(s.function, s.path, len(e.cfg.RescueVMs)); !maps.Equal(got, want) {
				t.Errorf("ARM requests:\n got %v\nwant %v (README.md)", got, want)
			}
			vm, _ := e.sim.State().VM(vmID)
			wantPower := azsim.PowerDeallocated
			if s.started {
				wantPower = azsim.PowerRunning
			}
			if !strings.EqualFold(vm.OSDiskID, before.OSDiskID) || vm.Power != wantPower {
				t.Errorf("VM on %s, %s; want its original disk, %s", vm.OSDiskID, vm.Power, wantPower)
			}
			if v := e.checkClean(id); v.State != incident.StateFailed || v.Outcome != incident.OutcomeRolledBack {
				t.Errorf("incident ended %s/%s", v.State, v.Outcome)
			}
		})
	}
}

// TestDeadLetterReasonRecorded: a dead letter's failure record carries the reason Service Bus gave.
func TestDeadLetterReasonRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id, d := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-web-01"})
	err := e.newPipeline(nil).Stages()[incident.StageFailed].Run(context.Background(), d.msg, server.Delivery{
		MessageID: d.id, DeliveryCount: 1, EnqueuedTime: time.Now(),
		DeadLetterReason: "MaxDeliveryCountExceeded", DeadLetterErrorDescription: "Message could not be consumed after 10 delivery attempts.",
	})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range e.records(id) {
		reason, _ := recordDetail(r)["reason"].(string)
		if r.Event == incident.EventFailed &&
			strings.Contains(reason, "MaxDeliveryCountExceeded: Message could not be consumed after 10 delivery attempts.") {
			found = true
		}
	}
	if !found {
		t.Error("the dead-letter reason is not on the trail")
	}
	if v := e.checkClean(id); v.State != incident.StateFailed || v.Outcome != incident.OutcomeRolledBack {
		t.Errorf("incident ended %s/%s", v.State, v.Outcome)
	}
}
