package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/demo"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/localhost/queue"
)

// ChaosOptions size the chaos scenario.
type ChaosOptions struct {
	VMs       int     // crashing VMs (default 40)
	FaultRate float64 // ARM fault rate (default 0.10)
	Kills     int     // SIGKILLs of the handler child (default 20)
	// Duplicates is the share of stage messages sent twice (default 0.3): half with the same
	// MessageID (duplicate detection drops them), half with a new one (a duplicate that got past
	// detection, which the stage must survive by itself).
	Duplicates float64
	RescueVMs  int // rescue VMs of 32 LUNs (default 4)
	// KillUptime bounds how long the handler runs between becoming ready and its kill (default
	// 3 s): each kill falls at a random point between an eighth of it and all of it. A small
	// bound plays a crash loop (400 ms was the first version of this scenario): the handler,
	// restarted after a backoff that grows to 5 s, dies before most deliveries can finish, and a
	// message killed on MaxDeliveryCount deliveries in a row is dead-lettered.
	KillUptime time.Duration
}

// minKillUptime bounds KillUptime from below.
const minKillUptime = 50 * time.Millisecond

func (c *ChaosOptions) defaults() {
	if c.VMs <= 0 {
		c.VMs = 40
	}
	if c.FaultRate <= 0 {
		c.FaultRate = 0.10
	}
	if c.Kills < 0 {
		c.Kills = 0
	} else if c.Kills == 0 {
		c.Kills = 20
	}
	if c.Duplicates <= 0 {
		c.Duplicates = 0.3
	}
	if c.RescueVMs <= 0 {
		c.RescueVMs = 4
	}
	if c.KillUptime <= 0 {
		c.KillUptime = 3 * time.Second
	}
	c.KillUptime = max(c.KillUptime, minKillUptime)
}

// stageQueues are the queues whose messages the chaos scenario duplicates.
var stageQueues = []string{"snapshot", "rescue-attach", "offline-patch", "reattach-reboot", "harvest-dump", "support-ticket"}

// Chaos runs incidents under injected ARM faults, killed handlers and duplicated messages, and
// checks that every incident ends closed, or failed and rolled back, with nothing orphaned, no
// original disk changed and every audit chain intact.
func Chaos(ctx context.Context, o Options, co ChaosOptions) (Result, error) {
	co.defaults()
	res := Result{Scenario: "chaos", Params: map[string]any{"vms": co.VMs, "faultRate": co.FaultRate, "kills": co.Kills,
		"duplicates": co.Duplicates, "rescueVms": co.RescueVMs, "timeScale": o.scale(), "seed": o.Seed,
		"killUptime": co.KillUptime.String()}}
	fleet, err := makeFleet(co.VMs, co.RescueVMs, wideRescue)
	if err != nil {
		return res, err
	}
	env, err := start(ctx, o, fleet, azsim.FaultConfig{Rate: co.FaultRate, Seed: o.Seed}, nil)
	if err != nil {
		return res, err
	}
	defer env.Stop()
	t0 := time.Now()
	rng := rand.New(rand.NewPCG(uint64(o.Seed), 0xc4a05))

	var evs []stormEvent
	base := time.Now().UTC().Add(-time.Minute)
	for i, v := range fleet.VMs {
		schema := hostproto.SchemaEventGrid
		if i%2 == 1 {
			schema = hostproto.SchemaCloudEvents
		}
		evs = append(evs, stormEvent{vmID: fleet.VMID(v.Name), eventID: fmt.Sprintf("chaos-%05d", i), at: base.Add(time.Duration(i) * time.Millisecond), schema: schema})
	}

	cctx, stopChaos := context.WithCancel(ctx)
	defer stopChaos()
	var kills []string
	var dupSame, dupNew int
	killed := make(chan struct{})
	duped := make(chan struct{})
	go func() { defer close(killed); kills = killer(cctx, env, rng, co.Kills, co.KillUptime, o) }()
	go func() {
		defer close(duped)
		dupSame, dupNew = duplicator(cctx, env, rand.New(rand.NewPCG(uint64(o.Seed), 0xd0b)), co.Duplicates)
	}()
	o.progressf("posting %d alerts under %.0f%% ARM faults, %d kills, %.0f%% duplicated messages", len(evs), co.FaultRate*100, co.Kills, co.Duplicates*100)
	_, _, perr := postAll(ctx, env, evs, 8)
	if perr == nil {
		select { // the kills go on until all are spent; then the pipeline runs to its end
		case <-killed:
		case <-ctx.Done():
		}
	}
	stopChaos()
	<-killed
	<-duped
	if perr != nil {
		return res, perr
	}
	if err := waitIdle(ctx, env.Stack.Host); err != nil {
		return res, err
	}
	total := time.Since(t0).Seconds()

	a, err := account(context.Background(), env)
	if err != nil {
		return res, err
	}
	faults := len(env.Stack.Sim.FaultLog())
	restarts := env.Stack.Host.Child().Restarts()
	res.figure("incidents", float64(a.Incidents), "")
	res.figure("closed", float64(a.ByState[incident.StateClosed]), "")
	res.figure("failed (rolled back)", float64(a.ByState[incident.StateFailed]), "")
	res.figure("ARM faults injected", float64(faults), "")
	res.figure("handler kills (SIGKILL)", float64(len(kills)), "")
	res.figure("handler restarts", float64(restarts), "")
	res.figure("duplicates with the same MessageID", float64(dupSame), "")
	res.figure("duplicates with a new MessageID", float64(dupNew), "")
	res.figure("wall time", total, "s")
	res.check("one incident per VM", a.Incidents == co.VMs && len(a.PerVM) == co.VMs, fmt.Sprintf("%d incidents for %d VMs", a.Incidents, co.VMs))
	ended := a.ByState[incident.StateClosed] + a.ByState[incident.StateFailed]
	res.check("every incident closed or failed", ended == a.Incidents, fmt.Sprintf("states %v", a.ByState))
	res.check("all kills delivered", len(kills) == co.Kills, fmt.Sprintf("%d of %d", len(kills), co.Kills))
	a.checkSafety(&res)
	res.Notes = append(res.Notes, fmt.Sprintf("Kill points (time since start: what was running): %v", kills))
	if why, err := whyFailed(context.Background(), env); err != nil {
		res.Notes = append(res.Notes, "Why incidents failed: not read: "+err.Error())
	} else if len(why) > 0 {
		res.Notes = append(res.Notes, "Why incidents failed (the record that queued each rollback): "+strings.Join(why, "; "))
	}
	res.finish(t0)
	return res, nil
}

// whyFailed reads, for each failed incident of the run, the record that queued its rollback.
func whyFailed(ctx context.Context, env *demo.Env) ([]string, error) {
	blobs, err := azblob.NewClientFromConnectionString(env.Stack.StorageConnectionString, nil)
	if err != nil {
		return nil, err
	}
	trail := audit.New(blobs, audit.DefaultContainer)
	ids, err := trail.List(ctx, incident.StateFailed)
	if err != nil {
		return nil, err
	}
	mine := "/subscriptions/" + strings.ToLower(env.Fleet.SubscriptionID) + "/"
	var out []string
	for _, id := range ids {
		recs, err := trail.Read(ctx, id)
		if err != nil || len(recs) == 0 || !strings.HasPrefix(strings.ToLower(recs[0].VMResourceID), mine) {
			continue
		}
		why := "no failure record"
		for _, r := range recs {
			var d struct {
				Reason         string `json:"reason"`
				RollbackQueued bool   `json:"rollbackQueued"`
			}
			if r.Event == incident.EventFailed && json.Unmarshal(r.Detail, &d) == nil && d.RollbackQueued {
				why = r.Stage + ": " + firstLine(d.Reason, 160)
				break
			}
		}
		out = append(out, id+" ("+why+")")
	}
	return out, nil
}

func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// killer SIGKILLs the handler child n times while incidents run, each at a random point of the
// handler's run once the host has restarted it (an eighth of uptime to uptime after it became
// ready), and returns what each kill hit.
func killer(ctx context.Context, env *demo.Env, rng *rand.Rand, n int, uptime time.Duration, o Options) []string {
	var hits []string
	t0 := time.Now()
	for len(hits) < n {
		child := env.Stack.Host.Child()
		if child == nil || !child.Ready() {
			select {
			case <-ctx.Done():
				return hits
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return hits
		case <-time.After(uptime/8 + time.Duration(rng.Int64N(int64(uptime-uptime/8)+1))):
		}
		if c := env.Stack.Host.Child(); c == nil || c.PID() != child.PID() || !c.Ready() {
			continue // it died by itself meanwhile: start over with the next one
		}
		st := env.Stack.Host.Status()
		what := "idle"
		if len(st.Running) > 0 {
			r := st.Running[rng.IntN(len(st.Running))]
			what = r.Function
		}
		pid := child.PID()
		if err := killHard(pid); err != nil {
			continue
		}
		hits = append(hits, fmt.Sprintf("%.2fs:%s(%d running)", time.Since(t0).Seconds(), what, len(st.Running)))
		o.progressf("killed handler pid %d (%d/%d) during %s", pid, len(hits), n, what)
		// Wait for the restart before the next kill.
		for ctx.Err() == nil {
			if c := env.Stack.Host.Child(); c != nil && c.PID() != pid && c.Ready() {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return hits
}

// duplicator sends copies of stage messages it finds on the queues: with the same MessageID
// (which duplicate detection must drop) or with a new one (which the stage must make harmless).
func duplicator(ctx context.Context, env *demo.Env, rng *rand.Rand, share float64) (same, fresh int) {
	seen := map[string]bool{}
	broker := env.Stack.Host.Broker()
	for {
		select {
		case <-ctx.Done():
			return same, fresh
		case <-time.After(20 * time.Millisecond):
		}
		for _, q := range stageQueues {
			for _, m := range broker.Peek(q) {
				if seen[m.MessageID] || m.ApplicationProperties["bench"] != "" {
					continue
				}
				seen[m.MessageID] = true
				if rng.Float64() >= share {
					continue
				}
				dup := queue.Message{MessageID: m.MessageID, ContentType: m.ContentType, CorrelationID: m.CorrelationID,
					Subject: m.Subject, ApplicationProperties: map[string]string{"bench": "duplicate"}, Body: m.Body}
				for k, v := range m.ApplicationProperties {
					dup.ApplicationProperties[k] = v
				}
				if rng.IntN(2) == 0 {
					same++
				} else {
					dup.MessageID = queue.NewUUID()
					fresh++
				}
				if _, err := broker.Send(q, dup); err != nil {
					continue
				}
			}
		}
	}
}
