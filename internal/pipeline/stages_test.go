package pipeline_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/pipeline"
	"github.com/vmrescue/vmrescue/internal/server"
)

// scenario is one path of one stage: the VM that takes it and its row set in the table.
type scenario struct {
	function string // the table's stage name
	stage    incident.Stage
	path     string
	vm       string
	// started: the pipeline is configured to start the VM again (VMRESCUE_LEAVE_DEALLOCATED=false).
	started bool
}

// env is a fresh environment configured for the scenario.
func (s scenario) env(t *testing.T) *env {
	return newEnv(t, envOptions{mutate: func(c *config.Config) { c.LeaveDeallocated = !s.started }})
}

var scenarios = []scenario{
	{"Snapshot", incident.StageSnapshot, "", "app-web-01", false},
	{"RescueAttach", incident.StageRescueAttach, "", "app-web-01", false},
	{"OfflinePatch", incident.StageOfflinePatch, "no dump", "app-web-01", false},
	{"OfflinePatch", incident.StageOfflinePatch, "dump found", "app-batch-01", false},
	{"ReattachReboot", incident.StageReattachReboot, "", "app-web-01", false},
	{"HarvestDump", incident.StageHarvestDump, "dump", "app-web-01", false},
	{"HarvestDump", incident.StageHarvestDump, "recovered", "app-api-01", false},
	{"SupportTicket", incident.StageSupportTicket, "new ticket", "app-sql-01", false},
	{"SupportTicket", incident.StageSupportTicket, "new ticket, VM started", "app-sql-01", true},
}

func (s scenario) String() string {
	if s.path == "" {
		return s.function
	}
	return s.function + "/" + s.path
}

// reach opens an incident and runs the pipeline up to the scenario's stage, whose message it
// takes off the queue.
func (e *env) reach(s scenario) (string, delivered) {
	e.t.Helper()
	id := e.open(s.vm, false)
	p := e.pipeline()
	for i := 0; i < 20; i++ {
		d, ok := e.bus.peek()
		if !ok {
			e.t.Fatalf("no message left before %s", s.stage)
		}
		if d.queue == s.stage {
			d, _ = e.bus.pop()
			return id, d
		}
		got, _ := e.step(p)
		if got.err != nil {
			e.t.Fatalf("%s failed on the way to %s: %v", got.queue, s.stage, got.err)
		}
		if got.queue == incident.StageReattachReboot {
			e.awaitStart()
		}
	}
	e.t.Fatalf("did not reach %s", s.stage)
	return "", delivered{}
}

// awaitStart waits until the guest of a started VM has played its part (a crash and its alert).
func (e *env) awaitStart() {
	e.t.Helper()
	select {
	case <-e.started:
	case <-time.After(10 * time.Second):
		e.t.Fatal("the VM's start was not seen")
	}
}

func (e *env) run(p *pipeline.Pipeline, ctx context.Context, d delivered, count int) error {
	return p.Stages()[d.queue].Run(ctx, d.msg, server.Delivery{MessageID: d.id, DeliveryCount: count, EnqueuedTime: d.at})
}

// calls counts the simulator's requests per operation, polls excluded.
func calls(sim *azsim.Sim) map[string]int {
	out := map[string]int{}
	for op, n := range sim.Calls() {
		if n > 0 {
			out[op] = n
		}
	}
	return out
}

func nonGET(sim *azsim.Sim) int {
	n := 0
	for _, c := range sim.CallLog() {
		if !c.Poll && c.Method != http.MethodGet {
			n++
		}
	}
	return n
}

// TestStages drives each stage's path once and checks its ARM requests against the table
// (exactly, with cold caches), that every request carries the incident's correlation id, and that
// a redelivered message makes no ARM request and sends nothing new.
func TestStages(t *testing.T) {
	t.Parallel()
	for _, s := range scenarios {
		t.Run(s.String(), func(t *testing.T) {
			t.Parallel()
			e := s.env(t)
			id, d := e.reach(s)
			p := e.newPipeline(nil)
			e.sim.ResetCalls()
			if err := e.run(p, context.Background(), d, 1); err != nil {
				t.Fatalf("%s: %v", s.stage, err)
			}
			want := pipeline.Budget(s.function, s.path, len(e.cfg.RescueVMs))
			if got := calls(e.sim); !maps.Equal(got, want) {
				t.Errorf("ARM requests:\n got %v\nwant %v (README.md)", got, want)
			}
			for _, c := range e.sim.CallLog() {
				if c.CorrelationID != armclient.CorrelationID(id) {
					t.Errorf("%s %s carried correlation id %q", c.Op, c.Path, c.CorrelationID)
				}
			}

			if s.stage == incident.StageReattachReboot {
				e.awaitStart() // the crash alert may bring the harvest forward meanwhile
			}
			// Redelivery: nothing new in Azure, nothing new on the bus.
			sent := len(e.bus.sentTo(s.stage.Next())) + len(e.bus.sentTo(incident.StageSupportTicket))
			e.sim.ResetCalls()
			if err := e.run(e.newPipeline(nil), context.Background(), d, 2); err != nil {
				t.Fatalf("redelivery: %v", err)
			}
			if got := calls(e.sim); len(got) != 0 {
				t.Errorf("redelivery made ARM requests: %v", got)
			}
			if now := len(e.bus.sentTo(s.stage.Next())) + len(e.bus.sentTo(incident.StageSupportTicket)); now != sent {
				t.Errorf("redelivery sent %d new messages", now-sent)
			}
			e.drain(e.pipeline())
			v := e.checkClean(id)
			if v.State != incident.StateClosed {
				t.Errorf("incident ended %s/%s", v.State, v.Outcome)
			}
		})
	}
}

// TestCrashMidStage crashes each stage after each of its writes reached Azure, then redelivers
// the message: the incident must end as it does without the crash, with no duplicate resource.
func TestCrashMidStage(t *testing.T) {
	t.Parallel()
	for _, s := range scenarios {
		t.Run(s.String(), func(t *testing.T) {
			t.Parallel()
			// A reference run finds how many writes the stage makes.
			ref := s.env(t)
			_, d := ref.reach(s)
			ref.sim.ResetCalls()
			if err := ref.run(ref.newPipeline(nil), context.Background(), d, 1); err != nil {
				t.Fatal(err)
			}
			writes := nonGET(ref.sim)
			if s.stage == incident.StageReattachReboot {
				ref.awaitStart()
			}
			ref.drain(ref.pipeline())
			refTagged := len(ref.sim.State().Tagged(incident.TagIncident))
			refTickets := len(ref.sim.State().Tickets())
			if writes == 0 {
				t.Fatal("the stage made no write")
			}
			for k := 1; k <= writes; k++ {
				t.Run("after write "+itoa(k), func(t *testing.T) {
					e := s.env(t)
					id, d := e.reach(s)
					ctx, cancel := context.WithCancel(context.Background())
					defer cancel()
					ft := &faultTransport{crashAfter: k, cancel: cancel}
					if err := e.run(e.newPipeline(ft.wrap), ctx, d, 1); err == nil {
						t.Fatal("the crashed delivery reported success")
					}
					e.sim.ResetCalls()
					if err := e.run(e.newPipeline(nil), context.Background(), d, 2); err != nil {
						t.Fatalf("redelivery after the crash: %v", err)
					}
					limit := pipeline.MaxBudget(s.function, len(e.cfg.RescueVMs))
					for op, n := range calls(e.sim) {
						if n > limit[op] && !polled(s.function, op) {
							t.Errorf("the redelivery made %d %s, the table allows %d", n, op, limit[op])
						}
					}
					if s.stage == incident.StageReattachReboot {
						e.awaitStart() // one start, in the crashed delivery or in this one
					}
					e.drain(e.pipeline())
					v := e.checkClean(id)
					if v.State != incident.StateClosed {
						t.Errorf("incident ended %s/%s", v.State, v.Outcome)
					}
					if n := len(e.sim.State().Tagged(incident.TagIncident)); n != refTagged {
						t.Errorf("%d tagged resources, %d without the crash", n, refTagged)
					}
					if n := len(e.sim.State().Tickets()); n != refTickets {
						t.Errorf("%d tickets, %d without the crash", n, refTickets)
					}
				})
			}
		})
	}
}

func itoa(n int) string { return fmt.Sprintf("%02d", n) }

func serverDelivery(d delivered) server.Delivery {
	return server.Delivery{MessageID: d.id, DeliveryCount: 1}
}

// polled reports an operation the stage repeats while it waits for work of an earlier attempt.
func polled(stage, op string) bool {
	for _, o := range pipeline.Operations {
		if o.Stage == stage && o.Op == op && o.PerPoll {
			return true
		}
	}
	return false
}
