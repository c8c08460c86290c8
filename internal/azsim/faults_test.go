package azsim_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/vmrescue/vmrescue/internal/azsim"
)

// noRetry returns the simulator's client options with the SDK's retries off, so each call is one
// request.
func noRetry(sim *azsim.Sim) *arm.ClientOptions {
	o := sim.ClientOptions()
	o.Retry = policy.RetryOptions{MaxRetries: -1}
	return o
}

// faultRun makes the same sequence of reads and writes and returns the fault log and each call's
// outcome.
func faultRun(t *testing.T, seed int64) ([]azsim.FaultEvent, []string) {
	t.Helper()
	sim, err := azsim.New(nil, azsim.Options{Faults: azsim.FaultConfig{Rate: 0.3, Seed: seed}, Latency: azsim.LatencyTable{}})
	if err != nil {
		t.Fatal(err)
	}
	c := newClients(t, sim.SubscriptionID(), noRetry(sim))
	var outcomes []string
	for i := range 20 {
		_, err := c.vms.Get(ctxT(t), appRG, webVM, nil)
		outcomes = append(outcomes, outcome(err))
		_, err = c.disks.Get(ctxT(t), appRG, fmt.Sprintf("nope-%d", i%3), nil)
		outcomes = append(outcomes, outcome(err))
	}
	return sim.FaultLog(), outcomes
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()[:min(40, len(err.Error()))]
}

func TestFaultsDeterministicForASeed(t *testing.T) {
	t.Parallel()
	log1, out1 := faultRun(t, 7)
	log2, out2 := faultRun(t, 7)
	log3, _ := faultRun(t, 8)
	if len(log1) == 0 {
		t.Fatal("no faults injected at rate 0.3 over 40 requests")
	}
	if !slices.Equal(log1, log2) || !slices.Equal(out1, out2) {
		t.Errorf("same seed, different faults:\n%v\n%v", log1, log2)
	}
	if slices.Equal(log1, log3) {
		t.Errorf("seeds 7 and 8 gave the same faults: %v", log1)
	}
	kinds := map[azsim.FaultKind]bool{}
	for _, f := range log1 {
		kinds[f.Kind] = true
		if f.Kind == azsim.FaultConflict {
			t.Errorf("a 409 fault was injected into a read: %+v", f)
		}
	}
	if len(kinds) < 2 {
		t.Errorf("only fault kinds %v in %d faults", kinds, len(log1))
	}
}

func TestFaultKinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		kind       azsim.FaultKind
		wantStatus int
		wantCode   string
		wantRetry  bool // Retry-After sent
	}{
		{azsim.FaultThrottle, http.StatusTooManyRequests, azsim.CodeOperationNotAllowed, true},
		{azsim.FaultInternal, http.StatusInternalServerError, azsim.CodeInternalServerError, true},
		{azsim.FaultUnavailable, http.StatusServiceUnavailable, azsim.CodeServiceUnavailable, true},
		{azsim.FaultConflict, http.StatusConflict, azsim.CodeConflict, false},
		{azsim.FaultTimeout, http.StatusGatewayTimeout, azsim.CodeGatewayTimeout, true},
	}
	for _, tc := range tests {
		t.Run(string(tc.kind), func(t *testing.T) {
			t.Parallel()
			sim, err := azsim.New(nil, azsim.Options{Latency: azsim.LatencyTable{},
				Faults: azsim.FaultConfig{Rate: 1, Seed: 1, Kinds: []azsim.FaultKind{tc.kind}, Ops: []string{"VirtualMachines.BeginDeallocate"}}})
			if err != nil {
				t.Fatal(err)
			}
			// The SDK's own retry policy retries 429/500/503/504 (3 retries by default).
			c := newClients(t, sim.SubscriptionID(), sim.ClientOptions())
			_, err = c.vms.BeginDeallocate(ctxT(t), appRG, webVM, nil)
			wantCode(t, err, tc.wantCode, tc.wantStatus)
			calls := sim.CallCount("VirtualMachines.BeginDeallocate")
			retried := tc.kind != azsim.FaultConflict
			if want := map[bool]int{true: 4, false: 1}[retried]; calls != want {
				t.Errorf("%d requests, want %d", calls, want)
			}
			log := sim.CallLog()
			if tc.kind == azsim.FaultTimeout {
				// A timeout is applied and its answer lost: the VM was deallocated by the first
				// request, and each retry found it so.
				if vm, _ := sim.State().VM(sim.Fleet().VMID(webVM)); vm.Power != azsim.PowerDeallocated {
					t.Errorf("after a timed-out deallocate the VM is %s, want deallocated", vm.Power)
				}
			} else if vm, _ := sim.State().VM(sim.Fleet().VMID(webVM)); vm.Power != azsim.PowerRunning {
				t.Errorf("after a refused deallocate the VM is %s, want running", vm.Power)
			}
			if got := log[0].Fault; got != tc.kind {
				t.Errorf("call log fault %q, want %q", got, tc.kind)
			}
			if tc.wantRetry && retryAfter(t, err) <= 0 {
				t.Error("no Retry-After")
			}
		})
	}
}

// budgetSim is a simulator on clock with budget, and clients that make one request per call.
func budgetSim(t *testing.T, clock *azsim.ManualClock, budget azsim.WriteBudget) (clients, *azsim.Sim) {
	t.Helper()
	sim, err := azsim.New(nil, azsim.Options{Clock: clock, Latency: azsim.LatencyTable{}, WriteBudget: budget})
	if err != nil {
		t.Fatal(err)
	}
	return newClients(t, sim.SubscriptionID(), noRetry(sim)), sim
}

// deallocateWeb deallocates the web VM: one write.
func deallocateWeb(t *testing.T, c clients) error {
	p, err := c.vms.BeginDeallocate(ctxT(t), appRG, webVM, nil)
	if err != nil {
		return err
	}
	_, err = p.PollUntilDone(ctxT(t), nil)
	return err
}

func TestWriteBudget(t *testing.T) {
	t.Parallel()
	clock := azsim.NewManualClock(time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC))
	c, _ := budgetSim(t, clock, azsim.WriteBudget{Writes: 3, Window: time.Hour})
	write := func() error { return deallocateWeb(t, c) }
	for i := range 3 {
		if err := write(); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		clock.Advance(10 * time.Minute)
	}
	err := write()
	wantCode(t, err, azsim.CodeSubscriptionThrottled, http.StatusTooManyRequests)
	if ra := retryAfter(t, err); ra != 30*time.Minute {
		t.Errorf("Retry-After %v, want 30m (the first write leaves the window at 3:60)", ra)
	}
	// Reads are not writes.
	if _, err := c.vms.Get(ctxT(t), appRG, webVM, nil); err != nil {
		t.Errorf("read refused by the write budget: %v", err)
	}
	clock.Advance(30 * time.Minute)
	if err := write(); err != nil {
		t.Errorf("write after the window moved: %v", err)
	}
}

// TestDeleteBudget: ARM counts deletes apart from writes. A delete spends nothing of an exhausted
// write budget, and is throttled by its own limit, with its own remaining-count header.
func TestDeleteBudget(t *testing.T) {
	t.Parallel()
	clock := azsim.NewManualClock(time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC))
	c, sim := budgetSim(t, clock, azsim.WriteBudget{Writes: 1, Deletes: 2, Window: time.Hour})
	write := func() error { return deallocateWeb(t, c) }
	del := func(name string) (http.Header, error) {
		var raw *http.Response
		p, err := c.disks.BeginDelete(policy.WithCaptureResponse(ctxT(t), &raw), appRG, name, nil)
		if err != nil {
			return nil, err
		}
		_, err = p.PollUntilDone(ctxT(t), nil)
		return raw.Header, err
	}
	if err := write(); err != nil {
		t.Fatalf("first write: %v", err)
	}
	wantCode(t, write(), azsim.CodeSubscriptionThrottled, http.StatusTooManyRequests)
	for i, want := range []string{"1", "0"} {
		h, err := del(fmt.Sprintf("gone-%d", i))
		if err != nil {
			t.Fatalf("delete %d with the write budget spent: %v", i, err)
		}
		if got := h.Get("x-ms-ratelimit-remaining-subscription-deletes"); got != want {
			t.Errorf("delete %d: remaining deletes %q, want %q", i, got, want)
		}
		if got := h.Get("x-ms-ratelimit-remaining-subscription-writes"); got != "" {
			t.Errorf("delete %d answered remaining writes %q: a delete is not a write", i, got)
		}
	}
	_, err := del("gone-2")
	wantCode(t, err, azsim.CodeSubscriptionThrottled, http.StatusTooManyRequests)
	if !strings.Contains(err.Error(), "'delete' requests") {
		t.Errorf("throttled delete: %v, want it to name the delete limit", err)
	}
	var deletes int
	for _, call := range sim.CallLog() {
		if call.Delete {
			deletes++
			if !call.Write || call.Method != http.MethodDelete {
				t.Errorf("call %+v marked a delete", call)
			}
		}
	}
	if deletes != 3 {
		t.Errorf("%d calls marked deletes, want 3", deletes)
	}
}
