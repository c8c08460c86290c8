package pipeline_test

import (
	"context"
	"sync"
	"testing"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// TestRescueLastSlotRace: three incidents reach RescueAttach at once for the last free data-disk
// slot of the only rescue VM. At most one attaches; the others wait for capacity and none fails,
// and the reservations never exceed the size's limit.
func TestRescueLastSlotRace(t *testing.T) {
	t.Parallel()
	e, rescue := smallPoolEnv(t)
	ctx := context.Background()
	// Standard_A1_v2 takes 2 data disks; another incident holds one slot.
	if ok, _, err := e.locks.ReserveLUN(ctx, rescue, 0, "inc-20200101-000000-b0b0"); err != nil || !ok {
		t.Fatal(err)
	}
	var ds []delivered
	for _, vm := range []string{"app-web-01", "app-batch-01", "app-api-01"} {
		_, d := e.reach(scenario{stage: incident.StageRescueAttach, vm: vm})
		ds = append(ds, d)
	}
	p := e.newPipeline(nil)
	errs := make([]error, len(ds))
	var wg sync.WaitGroup
	for i, d := range ds {
		wg.Go(func() { errs[i] = e.run(p, ctx, d, 1) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && fault.IsTerminal(err) {
			t.Errorf("incident %d failed terminally for want of capacity: %v", i, err)
		}
	}
	holders, err := e.locks.LUNHolders(ctx, rescue)
	if err != nil {
		t.Fatal(err)
	}
	if len(holders) > 2 {
		t.Errorf("%d LUNs reserved on a VM that takes 2 data disks: %v", len(holders), holders)
	}
	vm, _ := e.sim.State().VM(rescue)
	if len(vm.DataDisks) > 1 {
		t.Errorf("%d disks attached; only one slot was free", len(vm.DataDisks))
	}
}

// smallPoolEnv is an environment whose rescue pool is one Standard_A1_v2 in zone 1, which takes 2
// data disks; it returns the rescue VM's id with it.
func smallPoolEnv(t *testing.T) (*env, string) {
	t.Helper()
	fleet := azsim.DefaultFleet()
	fleet.RescueVMs = []azsim.RescueVMSpec{{Name: "rescue-small", ResourceGroup: "rg-vmrescue", Size: "Standard_A1_v2", Zone: "1", HyperVGeneration: "V2"}}
	e := newEnv(t, envOptions{fleet: fleet})
	return e, e.cfg.RescueVMs[0]
}
