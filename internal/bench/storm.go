package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim/winsim"
	"github.com/vmrescue/vmrescue/internal/demo"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// StormOptions size the alert storm.
type StormOptions struct {
	Events      int // alerts posted (default 5000)
	VMs         int // distinct crashing VMs (default 500)
	Concurrency int // POSTs in flight (default 32)
	RescueVMs   int // rescue VMs of 32 LUNs (default 8)
}

func (s *StormOptions) defaults() {
	if s.Events <= 0 {
		s.Events = 5000
	}
	if s.VMs <= 0 {
		s.VMs = 500
	}
	if s.Concurrency <= 0 {
		s.Concurrency = 32
	}
	if s.RescueVMs <= 0 {
		s.RescueVMs = 8
	}
}

// stormEvent is one POST of the storm.
type stormEvent struct {
	vmID    string // as posted: case varies
	eventID string
	at      time.Time
	schema  string
}

// stormEvents makes n deliveries of one crash alert per VM: every VM gets at least one, the rest
// are duplicates (Event Grid delivers at least once), in random order, half in the CloudEvents
// schema, a third with the VM id in another case (ARM ids are case-insensitive).
func stormEvents(rng *rand.Rand, vmIDs []string, n int, base time.Time) []stormEvent {
	evs := make([]stormEvent, 0, n)
	for i := range n {
		k := i % len(vmIDs)
		if i >= len(vmIDs) {
			k = rng.IntN(len(vmIDs))
		}
		id := vmIDs[k]
		switch rng.IntN(3) {
		case 1:
			id = strings.ToLower(id)
		case 2:
			id = strings.ToUpper(id[:len(id)/2]) + id[len(id)/2:]
		}
		schema := hostproto.SchemaEventGrid
		if rng.IntN(2) == 1 {
			schema = hostproto.SchemaCloudEvents
		}
		evs = append(evs, stormEvent{vmID: id, eventID: fmt.Sprintf("storm-%05d", k), at: base.Add(time.Duration(k) * time.Millisecond), schema: schema})
	}
	rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
	return evs
}

// Storm posts a storm of Resource Health alerts and checks that it opens exactly one incident per
// VM, that all close, and that no VM gets two tickets.
func Storm(ctx context.Context, o Options, so StormOptions) (Result, error) {
	so.defaults()
	res := Result{Scenario: "storm", Params: map[string]any{"events": so.Events, "vms": so.VMs,
		"concurrency": so.Concurrency, "rescueVms": so.RescueVMs, "rescueSize": wideRescue, "timeScale": o.scale(), "seed": o.Seed}}
	fleet, err := makeFleet(so.VMs, so.RescueVMs, wideRescue)
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

	var vmIDs []string
	for _, v := range fleet.VMs {
		vmIDs = append(vmIDs, fleet.VMID(v.Name))
	}
	rng := rand.New(rand.NewPCG(uint64(o.Seed), 0x5703))
	evs := stormEvents(rng, vmIDs, so.Events, time.Now().UTC().Add(-time.Minute))
	o.progressf("posting %d alerts for %d VMs, %d at a time", len(evs), so.VMs, so.Concurrency)
	lat, retries, perr := postAll(ctx, env, evs, so.Concurrency)
	postSecs := time.Since(t0).Seconds()
	if perr != nil {
		col.Stop()
		return res, perr
	}
	o.progressf("posted in %.1fs (%d retried POSTs); waiting for the incidents", postSecs, retries)
	if err := waitIdle(ctx, env.Stack.Host); err != nil {
		col.Stop()
		return res, err
	}
	total := time.Since(t0).Seconds()
	invs := col.Stop()

	var alertMS []float64
	for _, inv := range invs {
		if inv.Function == "HealthAlert" {
			alertMS = append(alertMS, inv.DurationMS)
		}
	}
	slices.Sort(alertMS)
	slices.Sort(lat)
	res.figure("intake throughput", float64(len(evs))/postSecs, "alerts/s")
	res.Figures[len(res.Figures)-1].Note = "client side: alerts accepted (2xx) per second of the posting phase, while the incidents already opened run on the same cores"
	res.figure("intake p50 (HealthAlert invocation)", percentile(alertMS, 50), "ms")
	res.figure("intake p99 (HealthAlert invocation)", percentile(alertMS, 99), "ms")
	res.figure("POST p50 (client side)", percentile(lat, 50), "ms")
	res.figure("POST p99 (client side)", percentile(lat, 99), "ms")
	res.figure("HealthAlert invocations", float64(len(alertMS)), "")
	res.figure("retried POSTs (non-2xx)", float64(retries), "")
	res.figure("storm to last incident closed", total, "s")

	a, err := account(context.Background(), env)
	if err != nil {
		return res, err
	}
	res.figure("incidents opened", float64(a.Incidents), "")
	res.figure("incidents closed", float64(a.ByState[incident.StateClosed]), "")
	var multi []string
	for vm, n := range a.PerVM {
		if n > 1 {
			multi = append(multi, fmt.Sprintf("%s: %d", vm, n))
		}
	}
	res.check("exactly one incident per VM", a.Incidents == so.VMs && len(a.PerVM) == so.VMs && len(multi) == 0,
		listDetail(multi, fmt.Sprintf("%d incidents for %d VMs", a.Incidents, so.VMs)))
	res.check("every incident closed", a.ByState[incident.StateClosed] == so.VMs,
		fmt.Sprintf("states %v", a.ByState))
	a.checkSafety(&res)
	res.finish(t0)
	return res, nil
}

// postAll posts the events with bounded concurrency, retrying non-2xx answers as Event Grid does,
// and returns each accepted POST's latency in milliseconds (the last attempt's).
func postAll(ctx context.Context, env *demo.Env, evs []stormEvent, concurrency int) ([]float64, int, error) {
	url := env.Stack.Host.URL() + "/runtime/webhooks/eventgrid?functionName=HealthAlert"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}
	var (
		mu      sync.Mutex
		lat     = make([]float64, 0, len(evs))
		retries int
		first   error
	)
	work := make(chan stormEvent)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for ev := range work {
				ms, tries, err := postOne(ctx, client, url, ev)
				mu.Lock()
				retries += tries - 1
				if err != nil && first == nil {
					first = err
				}
				if err == nil {
					lat = append(lat, ms)
				}
				mu.Unlock()
			}
		})
	}
	for _, ev := range evs {
		select {
		case work <- ev:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return lat, retries, first
}

func postOne(ctx context.Context, client *http.Client, url string, ev stormEvent) (float64, int, error) {
	body, err := winsim.CrashEvent(ev.vmID, ev.eventID, ev.at, ev.schema)
	if err != nil {
		return 0, 1, err
	}
	var last string
	for attempt := 1; attempt <= maxPostAttempts; attempt++ {
		t := time.Now()
		status, msg, err := post(ctx, client, url, body, ev.schema)
		ms := float64(time.Since(t).Microseconds()) / 1000
		if err == nil && status/100 == 2 {
			return ms, attempt, nil
		}
		last = fmt.Sprintf("%d %s %v", status, msg, err)
		select {
		case <-ctx.Done():
			return 0, attempt, ctx.Err()
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
	return 0, maxPostAttempts, fmt.Errorf("event %s for %s not accepted after %d attempts: %s", ev.eventID, ev.vmID, maxPostAttempts, last)
}

func post(ctx context.Context, client *http.Client, url string, body []byte, schema string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, postTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if schema == hostproto.SchemaCloudEvents {
		req.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	} else {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("aeg-event-type", "Notification")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	return resp.StatusCode, string(msg), nil
}

func newRand(seed int64) *rand.Rand { return rand.New(rand.NewPCG(uint64(seed), 0x5703)) }
