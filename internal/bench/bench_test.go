package bench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/handlertest"
)

// handlerBinary is the handler built once for the tests: the local host runs it as its child.
var handlerBinary string

func TestMain(m *testing.M) { handlertest.Main(m, &handlerBinary) }

// scenarioTimeout bounds each small scenario in the tests.
const scenarioTimeout = 4 * time.Minute

func testOptions(t *testing.T) Options {
	t.Helper()
	// The stack's log goes to a file, named when the test fails.
	f, err := os.CreateTemp("", "vmrescue-bench-"+t.Name()+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			t.Logf("the host's and handler's log: %s", f.Name())
		} else {
			os.Remove(f.Name())
		}
	})
	return Options{Handler: handlerBinary, AzuriteURL: azuritetest.URL(t), Seed: 7, TimeScale: DefaultTimeScale, Output: f}
}

// mustHold fails the test for every broken invariant of r.
func mustHold(t *testing.T, r Result, allow ...string) {
	t.Helper()
	for _, c := range r.Checks {
		if !c.OK && !contains(allow, c.Name) {
			t.Errorf("%s: %s: %s", r.Scenario, c.Name, c.Detail)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestStormSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	r, err := Storm(ctx, testOptions(t), StormOptions{Events: 200, VMs: 20, Concurrency: 16, RescueVMs: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Without faults or kills every incident must end closed.
	mustHold(t, r, "every incident closed")
	if r.Params["events"] != 200 || len(r.Figures) == 0 {
		t.Errorf("storm result lacks its figures: %+v", r)
	}
}

func TestChaosSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	r, err := Chaos(ctx, testOptions(t), ChaosOptions{VMs: 10, FaultRate: 0.10, Kills: 3, Duplicates: 0.3, RescueVMs: 2})
	if err != nil {
		t.Fatal(err)
	}
	mustHold(t, r)
}

func TestStormEvents(t *testing.T) {
	t.Parallel()
	ids := []string{"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a",
		"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/b"}
	evs := stormEvents(newRand(3), ids, 50, time.Unix(0, 0))
	seen := map[string]bool{}
	schemas := map[string]int{}
	variants := 0
	for _, e := range evs {
		seen[e.eventID] = true
		schemas[e.schema]++
		if e.vmID != ids[0] && e.vmID != ids[1] {
			variants++
			if !strings.EqualFold(e.vmID, ids[0]) && !strings.EqualFold(e.vmID, ids[1]) {
				t.Errorf("variant %q is not a case variant of a fleet VM", e.vmID)
			}
		}
	}
	if len(evs) != 50 || len(seen) != 2 || len(schemas) != 2 || variants == 0 {
		t.Errorf("got %d events, %d distinct ids, schemas %v, %d case variants", len(evs), len(seen), schemas, variants)
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct{ p, want float64 }{{50, 5}, {99, 10}, {10, 1}, {0, 1}, {100, 10}} {
		if got := percentile(v, tc.p); got != tc.want {
			t.Errorf("percentile(%g) = %g, want %g", tc.p, got, tc.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

// sink keeps the busy loop of TestProcCPU from being optimised away.
var sink int

func TestProcCPU(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the figure grows by two ticks; on a busy machine that takes longer.
	deadline := time.Now().Add(10 * time.Second)
	after := before
	for after-before < 20*time.Millisecond && time.Now().Before(deadline) {
		for i := 0; i < 1e6; i++ {
			sink += i
		}
		if after, err = procCPU(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if after-before < 20*time.Millisecond {
		t.Errorf("CPU time grew by %v in 10s of work", after-before)
	}
	if _, err := procCPU(0); err == nil {
		t.Error("procCPU(0) did not fail")
	}
}
