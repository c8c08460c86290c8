package winsim_test

import (
	"sync"
	"testing"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azsim/winsim"
)

// TestAgentsRunWhileDisksAreHashed runs the agent on two rescue VMs at once while the simulator
// hashes and clones the disks they work on (what ChangedOriginalDisks and a snapshot do). Run
// with -race.
func TestAgentsRunWhileDisksAreHashed(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil, winsim.LocalOptions{})
	type job struct{ vm, rescue, disk string }
	jobs := []job{{vm: "app-web-01", rescue: "vmrescue-rescue-1"}, {vm: "app-sql-01", rescue: "vmrescue-rescue-2"}}
	for i, j := range jobs {
		rg := resourceGroupOf(r.sim.Fleet().VMID(j.vm))
		vm := r.vm(j.vm)
		r.deallocate(rg, j.vm)
		jobs[i].disk = r.copyDisk(rg, "conc-"+j.vm, *vm.Properties.StorageProfile.OSDisk.ManagedDisk.ID, vmSpec(t, r.sim.Fleet(), j.vm).Zone)
		r.attachDetach(j.rescue, jobs[i].disk, 0, true)
	}
	stop := make(chan struct{})
	var hashing sync.WaitGroup
	hashing.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = r.sim.State().ChangedOriginalDisks()
			for _, j := range jobs {
				if c, ok := r.sim.State().DiskContent(j.disk); ok {
					_ = c.Hash()
					_ = c.Clone()
				}
			}
		}
	})
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			spec := vmSpec(t, r.sim.Fleet(), j.vm)
			size, _ := azsim.LookupSize(spec.Size)
			res := r.runAgent(j.rescue, "conc-patch-"+j.vm, agent.Request{Command: agent.CommandPatch, LUN: 0, MemoryGB: size.MemoryGB})
			if !res.OK || res.Patch == nil || !res.Patch.Verified {
				t.Errorf("%s: patch = ok %v (%s)", j.vm, res.OK, res.Error)
			}
		})
	}
	wg.Wait()
	close(stop)
	hashing.Wait()
	if ch := r.sim.State().ChangedOriginalDisks(); len(ch) != 0 {
		t.Errorf("original OS disks changed: %v", ch)
	}
}
