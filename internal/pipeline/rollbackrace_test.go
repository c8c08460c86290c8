package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/pipeline"
)

// TestRollbackOverlapsStage plays, one step at a time, a RescueAttach delivery that overlaps the
// rollback of its incident: the rollback begins while the delivery is about to attach its disk
// (it must wait for it), or the delivery read the trail just before the rollback began and writes
// its "started" record after it (it must make nothing). Either way the incident ends with nothing
// of it attached to a rescue VM and no LUN held, by the pipeline itself, before any Janitor run.
func TestRollbackOverlapsStage(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// hold names where the RescueAttach delivery is held: an ARM operation, or the append
		// of its "started" record.
		op, event string
		// duplicate delivers a copy with a new MessageID, the original being dead-lettered.
		duplicate bool
		// end ends the incident while the delivery is held.
		end       func(e *env, id string, original delivered)
		wantState string
	}{
		{
			name: "dead letter of the original while its duplicate attaches", op: "VirtualMachines.BeginAttachDetachDataDisks", duplicate: true,
			end: func(e *env, _ string, original delivered) {
				e.bus.deadLetter(original)
				e.deliverFailed()
			},
			wantState: incident.StateFailed,
		},
		{
			name: "rollback requested while the stage attaches", op: "VirtualMachines.BeginAttachDetachDataDisks",
			end: func(e *env, id string, _ delivered) {
				e.requestRollback(id)
				e.deliverFailed()
			},
			wantState: incident.StateClosed,
		},
		{
			name: "rollback requested and done between the stage's read and its start record", event: incident.EventStarted,
			end: func(e *env, id string, _ delivered) {
				e.requestRollback(id)
				e.deliverFailed()
			},
			wantState: incident.StateClosed,
		},
		{
			name: "dead letter handled between the duplicate's read and its start record", event: incident.EventStarted, duplicate: true,
			end: func(e *env, _ string, original delivered) {
				e.bus.deadLetter(original)
				e.deliverFailed()
			},
			wantState: incident.StateFailed,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			id, original := e.reach(scenario{stage: incident.StageRescueAttach, vm: "app-web-01"})
			g := newGate()
			var held *pipeline.Pipeline
			if tc.op != "" {
				held = e.newPipeline(func(next policy.Transporter) policy.Transporter {
					return &gatedTransport{next: next, op: tc.op, g: g}
				})
			} else {
				held = e.newPipeline(nil)
				held.Trail = &gatedTrail{Trail: e.trail, stage: string(incident.StageRescueAttach), event: tc.event, g: g}
			}
			e.newPipeline(nil) // the other deliveries run on another worker
			d := original
			if tc.duplicate {
				d.id = original.id + "-dup"
			}
			done := make(chan error, 1)
			go func() { done <- e.run(held, context.Background(), d, 1) }()
			g.await(t)

			tc.end(e, id, original)

			close(g.release)
			if err := <-done; err != nil && !fault.IsTerminal(err) {
				t.Fatalf("the held delivery: %v", err)
			}
			e.drain(e.pipeline())

			if s := e.state(id); s != tc.wantState {
				t.Errorf("incident %s, want %s", s, tc.wantState)
			}
			// Checked before any Janitor run: the pipeline cleans up by itself.
			for _, rv := range e.cfg.RescueVMs {
				vm, _ := e.sim.State().VM(rv)
				for _, dd := range vm.DataDisks {
					if strings.Contains(dd.DiskID, id) {
						t.Errorf("disk %s left attached to %s at LUN %d", dd.DiskID, vm.Name, dd.LUN)
					}
				}
				holders, err := e.locks.LUNHolders(context.Background(), rv)
				if err != nil {
					t.Fatal(err)
				}
				for lun, h := range holders {
					if h == id {
						t.Errorf("LUN %d of %s still reserved", lun, rv)
					}
				}
			}
			e.checkClean(id)
		})
	}
}

// failingSender fails every send to one queue.
type failingSender struct {
	bus.Sender
	queue incident.Stage
}

func (f *failingSender) Send(ctx context.Context, msg incident.Message, opts bus.SendOptions) error {
	if msg.Stage == f.queue {
		return errors.New("service bus unavailable")
	}
	return f.Sender.Send(ctx, msg, opts)
}

// TestRollbackNeverLost: whatever happens to the messages around a rollback, the incident does not
// stay active with nothing queued. A rollback that must wait (throttled) is scheduled again under
// a MessageID of its own, not one duplicate detection already saw; a dead letter's wait comes back
// to the failed queue; a stage that recorded a terminal failure but could not queue the rollback
// leaves its message for redelivery, which queues it.
func TestRollbackNeverLost(t *testing.T) {
	t.Parallel()
	throttled := faultRule{op: "VirtualMachines.Get", status: 429, code: "TooManyRequests", retryAfter: "7", times: 4}
	cases := []struct {
		name string
		run  func(e *env, d delivered)
	}{
		{"escalated rollback throttled", func(e *env, d delivered) {
			bad := faultRule{op: "Disks.BeginCreateOrUpdate", status: 400, code: "InvalidParameter", times: 1}
			if err := e.run(e.newPipeline((&faultTransport{rules: []*faultRule{&bad}}).wrap), context.Background(), d, 1); !fault.IsTerminal(err) {
				e.t.Fatalf("want a terminal failure, got %v", err)
			}
			rule := throttled
			e.stepFailed(&faultTransport{rules: []*faultRule{&rule}})
		}},
		{"dead letter's rollback throttled", func(e *env, d delivered) {
			e.bus.deadLetter(d)
			rule := throttled
			e.stepFailed(&faultTransport{rules: []*faultRule{&rule}})
			for _, env := range e.bus.sentTo(incident.StageRescueAttach) {
				if strings.HasSuffix(env.MessageID, ":1") {
					e.t.Errorf("the rollback's retry went to the stage's queue: %s", env.MessageID)
				}
			}
		}},
		{"rollback not queued after a terminal failure", func(e *env, d delivered) {
			bad := faultRule{op: "Disks.BeginCreateOrUpdate", status: 400, code: "InvalidParameter", times: 1}
			p := e.newPipeline((&faultTransport{rules: []*faultRule{&bad}}).wrap)
			p.Bus = &failingSender{Sender: e.bus, queue: incident.StageFailed}
			err := e.run(p, context.Background(), d, 1)
			if err == nil || fault.IsTerminal(err) {
				e.t.Fatalf("want a transient error so that the message comes back, got %v", err)
			}
			e.bus.redeliver(d)
		}},
		{"dead letter's rollback redelivered", func(e *env, d delivered) {
			e.bus.deadLetter(d)
			unavailable := faultRule{op: "VirtualMachines.Get", status: 500, code: "InternalServerError", times: 4}
			if got, _ := e.step(e.newPipeline((&faultTransport{rules: []*faultRule{&unavailable}}).wrap)); got.err == nil {
				e.t.Fatal("want a transient failure of the rollback")
			}
			e.drain(e.newPipeline(nil))
			recorded := 0
			for _, r := range e.records(d.msg.IncidentID) {
				if r.Stage == string(incident.StageFailed) && r.Event == incident.EventFailed {
					recorded++
				}
			}
			if recorded != 1 {
				e.t.Errorf("the dead letter was recorded %d times, want once", recorded)
			}
		}},
		{"janitor's rollback lost, the incident stalls again", func(e *env, _ delivered) {
			// The RescueAttach message is lost; so is the rollback the Janitor queues for the
			// stall (dead-lettered on the failed queue, where nothing forwards it).
			j := e.newPipeline(nil)
			for i := range 2 {
				j.Now = func() time.Time { return time.Now().Add(time.Duration(i+1) * (e.cfg.StallTimeout + time.Minute)) }
				if rep, err := j.Clean(context.Background()); err != nil || len(rep.Stalled) != 1 {
					e.t.Fatalf("stall %d: %+v %v", i+1, rep, err)
				}
				if i == 0 {
					if lost, ok := e.bus.pop(); !ok || lost.queue != incident.StageFailed {
						e.t.Fatalf("no rollback queued: %+v", lost)
					}
				}
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			id, d := e.reach(scenario{stage: incident.StageRescueAttach, vm: "app-web-01"})
			tc.run(e, d)
			e.drain(e.newPipeline(nil))
			if s := e.state(id); s != incident.StateFailed {
				t.Fatalf("incident %s with nothing queued, want failed", s)
			}
			e.checkClean(id)
		})
	}
}

// stepFailed delivers the next message, a rollback, through ft.
func (e *env) stepFailed(ft *faultTransport) {
	e.t.Helper()
	d, ok := e.bus.peek()
	if !ok || d.queue != incident.StageFailed {
		e.t.Fatalf("no rollback queued first: %+v", d)
	}
	if got, _ := e.step(e.newPipeline(ft.wrap)); got.err != nil {
		e.t.Fatalf("rollback: %v", got.err)
	}
}

// TestStaleDeadLetter: a dead letter says that one message failed on every delivery (in chaos,
// its deliveries died with the handler), not that the incident failed. Of a stage that completed
// and went on, or of an incident already over, it rolls nothing back: the repair stands.
func TestStaleDeadLetter(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// stage is the stage whose message is dead-lettered; closeFirst runs the incident to its
		// end before.
		stage      incident.Stage
		closeFirst bool
	}{
		{"of a stage that completed", incident.StageSnapshot, false},
		{"after the incident closed", incident.StageSupportTicket, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			var id string
			var next delivered
			if tc.closeFirst {
				id = e.open("app-web-01", false)
				e.drain(e.pipeline())
				if s := e.state(id); s != incident.StateClosed {
					t.Fatalf("incident %s before the dead letter", s)
				}
			} else {
				id, next = e.reach(scenario{stage: incident.StageRescueAttach, vm: "app-web-01"})
			}
			sent := e.bus.sentTo(tc.stage)
			if len(sent) == 0 {
				t.Fatalf("no %s message was sent", tc.stage)
			}
			var msg incident.Message
			if err := json.Unmarshal(sent[0].Body, &msg); err != nil {
				t.Fatal(err)
			}
			e.bus.deadLetter(delivered{queue: tc.stage, msg: msg, id: sent[0].MessageID})
			e.deliverFailed()
			if !tc.closeFirst {
				e.bus.redeliver(next)
			}
			e.drain(e.pipeline())

			v := e.checkClean(id)
			if v.State != incident.StateClosed || v.Outcome != incident.OutcomeTicketed {
				t.Errorf("incident %s/%s, want closed/ticketed", v.State, v.Outcome)
			}
			for _, r := range e.records(id) {
				if r.Event == incident.EventFailed || r.Event == incident.EventRolledBack {
					t.Errorf("%s %s record: %s", r.Stage, r.Event, r.Detail)
				}
			}
			vm, _ := e.sim.State().VM(e.fleet.VMID("app-web-01"))
			if !strings.Contains(vm.OSDiskID, incident.RescueDiskName(id)) {
				t.Errorf("the VM runs on %s, not its repaired disk", vm.OSDiskID)
			}
		})
	}
}

// TestTwoRollbacks: a duplicate of a RescueAttach message dies mid-delivery (its "started" record
// stays) while the original is dead-lettered, and then the duplicate is dead-lettered too: two
// Failed deliveries for one incident. The first waits for the duplicate; the second knows the
// duplicate's deliveries are over and rolls back; the first's retry, finding the incident rolled
// back, does nothing. The incident is rolled back once, with one event.
func TestTwoRollbacks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id, original := e.reach(scenario{stage: incident.StageRescueAttach, vm: "app-web-01"})
	g := newGate()
	held := e.newPipeline(func(next policy.Transporter) policy.Transporter {
		return &gatedTransport{next: next, op: "VirtualMachines.BeginAttachDetachDataDisks", g: g}
	})
	e.newPipeline(nil)
	dup := original
	dup.id = original.id + "-dup"
	ctx, die := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.run(held, ctx, dup, 1) }()
	g.await(t)

	e.bus.deadLetter(original)
	e.deliverFailed()
	if s := e.state(id); s != incident.StateActive {
		t.Fatalf("the first rollback did not wait for the duplicate: incident %s", s)
	}
	die() // the duplicate's handler dies: no record ends its delivery
	close(g.release)
	if err := <-done; err == nil {
		t.Fatal("the dying delivery succeeded")
	}
	e.bus.deadLetter(dup)
	e.drain(e.pipeline())

	if s := e.state(id); s != incident.StateFailed {
		t.Fatalf("incident %s, want failed", s)
	}
	rolledBack := 0
	for _, r := range e.records(id) {
		if r.Event == incident.EventRolledBack {
			rolledBack++
		}
	}
	if rolledBack != 1 {
		t.Errorf("%d rolled-back records, want 1", rolledBack)
	}
	if ev := e.events.types(); len(ev) != 1 {
		t.Errorf("lifecycle events %v, want one", ev)
	}
	e.checkClean(id)
}

// TestRollbackEndsWaitInLine: a RescueAttach delivery that waits in line for a LUN when its
// incident's rollback begins, in the same process, stops waiting and records that it yields. The
// rollback's next look finds it over: the incident ends rolled back, with no LUN of it reserved,
// long before the delivery's time in line would have ended.
func TestRollbackEndsWaitInLine(t *testing.T) {
	t.Parallel()
	e, rescue := smallPoolEnv(t)
	// Standard_A1_v2 takes 2 data disks; another active incident holds both.
	other := e.activeIncident("app-batch-01")
	for lun := range int32(2) {
		if ok, _, err := e.locks.ReserveLUN(context.Background(), rescue, lun, other); err != nil || !ok {
			t.Fatalf("reserve LUN %d: %v", lun, err)
		}
	}
	id, d := e.reach(scenario{stage: incident.StageRescueAttach, vm: "app-web-01"})
	p := e.newPipeline(nil)
	p.LineWait = time.Hour
	done := make(chan error, 1)
	go func() { done <- e.run(p, context.Background(), d, 1) }()
	waitFor(t, "the delivery waits in line", func() bool { return hasRecord(e.records(id), "waiting in line for a LUN") })

	e.requestRollback(id)
	e.deliverFailed() // finds the delivery running: ends its wait, and looks again later
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the delivery that waited in line: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the delivery still waits in line after the rollback began")
	}
	e.drain(e.pipeline())

	if s := e.state(id); s != incident.StateClosed {
		t.Errorf("incident %s, want closed (rolled back on request)", s)
	}
	if !hasRecord(e.records(id), "the rollback began while this delivery waited in line") {
		t.Error("no record of the delivery yielding to the rollback")
	}
	holders, err := e.locks.LUNHolders(context.Background(), rescue)
	if err != nil {
		t.Fatal(err)
	}
	for lun, h := range holders {
		if h == id {
			t.Errorf("LUN %d still reserved for the rolled-back incident", lun)
		}
	}
	e.checkClean(id)
}

// hasRecord reports whether a record's detail mentions s.
func hasRecord(recs []audit.Record, s string) bool {
	for _, r := range recs {
		if strings.Contains(string(r.Detail), s) {
			return true
		}
	}
	return false
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
