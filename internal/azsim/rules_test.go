package azsim_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/vms"
)

func TestAttachDetach(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// run attaches disks to app-web-01 (Standard_D2s_v5: at most 4 data disks) and returns the
		// error of the step under test.
		run        func(t *testing.T, sim *azsim.Sim, c clients) error
		wantCode   string
		wantStatus int
	}{
		{
			name: "up to the size's limit",
			run: func(t *testing.T, sim *azsim.Sim, c clients) error {
				for i := range 4 {
					if err := attach(t, c, appRG, webVM, emptyDisk(t, sim, c, appRG, fmt.Sprintf("d%d", i), "1"), nil); err != nil {
						return err
					}
				}
				return nil
			},
		},
		{
			name: "beyond the size's limit",
			run: func(t *testing.T, sim *azsim.Sim, c clients) error {
				for i := range 4 {
					if err := attach(t, c, appRG, webVM, emptyDisk(t, sim, c, appRG, fmt.Sprintf("d%d", i), "1"), nil); err != nil {
						t.Fatal(err)
					}
				}
				return attach(t, c, appRG, webVM, emptyDisk(t, sim, c, appRG, "d4", "1"), nil)
			},
			wantCode: azsim.CodeOperationNotAllowed, wantStatus: http.StatusConflict,
		},
		{
			name: "LUN in use",
			run: func(t *testing.T, sim *azsim.Sim, c clients) error {
				if err := attach(t, c, appRG, webVM, emptyDisk(t, sim, c, appRG, "a", "1"), to.Ptr[int32](3)); err != nil {
					t.Fatal(err)
				}
				return attach(t, c, appRG, webVM, emptyDisk(t, sim, c, appRG, "b", "1"), to.Ptr[int32](3))
			},
			wantCode: azsim.CodeInvalidParameter, wantStatus: http.StatusBadRequest,
		},
		{
			name: "LUN out of range",
			run: func(t *testing.T, sim *azsim.Sim, c clients) error {
				return attach(t, c, appRG, webVM, emptyDisk(t, sim, c, appRG, "a", "1"), to.Ptr[int32](64))
			},
			wantCode: azsim.CodeInvalidParameter, wantStatus: http.StatusBadRequest,
		},
		{
			name: "disk attached to another VM",
			run: func(t *testing.T, sim *azsim.Sim, c clients) error {
				d := emptyDisk(t, sim, c, appRG, "a", "1")
				if err := attach(t, c, rescueRG, rescue1, d, nil); err != nil {
					t.Fatal(err)
				}
				return attach(t, c, appRG, webVM, d, nil)
			},
			wantCode: azsim.CodeConflictingUserInput, wantStatus: http.StatusConflict,
		},
		{
			name: "another VM's OS disk",
			run: func(t *testing.T, sim *azsim.Sim, c clients) error {
				batch := getVM(t, c, appRG, batchVM)
				return attach(t, c, rescueRG, rescue1, *batch.Properties.StorageProfile.OSDisk.ManagedDisk.ID, nil)
			},
			wantCode: azsim.CodeConflictingUserInput, wantStatus: http.StatusConflict,
		},
		{
			name: "zone mismatch",
			run: func(t *testing.T, sim *azsim.Sim, c clients) error {
				return attach(t, c, appRG, webVM, emptyDisk(t, sim, c, appRG, "a", "2"), nil)
			},
			wantCode: azsim.CodeBadRequest, wantStatus: http.StatusBadRequest,
		},
		{
			name: "unknown disk",
			run: func(t *testing.T, sim *azsim.Sim, c clients) error {
				return attach(t, c, appRG, webVM, sim.State().ResourceID("disks", appRG, "nope"), nil)
			},
			wantCode: azsim.CodeNotFound, wantStatus: http.StatusNotFound,
		},
		{
			name: "detach frees the LUN and the disk",
			run: func(t *testing.T, sim *azsim.Sim, c clients) error {
				d := emptyDisk(t, sim, c, appRG, "a", "1")
				if err := attach(t, c, appRG, webVM, d, to.Ptr[int32](0)); err != nil {
					t.Fatal(err)
				}
				if err := detach(t, c, appRG, webVM, d); err != nil {
					t.Fatal(err)
				}
				if disk, _ := sim.State().Disk(d); disk.ManagedBy != "" {
					t.Errorf("detached disk still managed by %s", disk.ManagedBy)
				}
				return attach(t, c, rescueRG, rescue1, d, to.Ptr[int32](0))
			},
		},
		{
			name: "detach of a disk that is not attached",
			run: func(t *testing.T, sim *azsim.Sim, c clients) error {
				return detach(t, c, appRG, webVM, emptyDisk(t, sim, c, appRG, "a", "1"))
			},
			wantCode: azsim.CodeInvalidParameter, wantStatus: http.StatusBadRequest,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, c := newSim(t, azsim.Options{})
			err := tc.run(t, sim, c)
			if tc.wantCode != "" {
				wantCode(t, err, tc.wantCode, tc.wantStatus)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAttachPicksLowestFreeLUN(t *testing.T) {
	t.Parallel()
	sim, c := newSim(t, azsim.Options{})
	for i, lun := range []int32{0, 2} {
		if err := attach(t, c, rescueRG, rescue1, emptyDisk(t, sim, c, rescueRG, fmt.Sprintf("x%d", i), "1"), to.Ptr(lun)); err != nil {
			t.Fatal(err)
		}
	}
	d := emptyDisk(t, sim, c, rescueRG, "y", "1")
	if err := attach(t, c, rescueRG, rescue1, d, nil); err != nil {
		t.Fatal(err)
	}
	vm := getVM(t, c, rescueRG, rescue1)
	var got []int32
	for _, dd := range vm.Properties.StorageProfile.DataDisks {
		got = append(got, *dd.Lun)
		if strings.EqualFold(*dd.ManagedDisk.ID, d) && *dd.Lun != 1 {
			t.Errorf("new disk at LUN %d, want 1", *dd.Lun)
		}
	}
	if !slices.Equal(got, []int32{0, 1, 2}) {
		t.Errorf("LUNs %v, want [0 1 2]", got)
	}
}

func TestLROPollingAndConflicts(t *testing.T) {
	t.Parallel()
	// Deallocate takes 60s at scale 1: 300ms here.
	sim, c := newSim(t, azsim.Options{TimeScale: 0.005})
	ctx := ctxT(t)
	start := time.Now()
	p, err := c.vms.BeginDeallocate(ctx, appRG, webVM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Done() {
		t.Fatal("deallocate is done at once; want an LRO in progress")
	}
	during := getVM(t, c, appRG, webVM)
	if ps := powerState(during); ps != "deallocating" {
		t.Errorf("power state during deallocate = %s, want deallocating", ps)
	}
	if ps := *during.Properties.ProvisioningState; ps != azsim.ProvisioningUpdating {
		t.Errorf("provisioningState during deallocate = %s, want Updating", ps)
	}
	// A conflicting operation on the same VM while the first runs.
	_, err = c.vms.BeginStart(ctx, appRG, webVM, nil)
	wantCode(t, err, azsim.CodeConflict, http.StatusConflict)

	if _, err := p.PollUntilDone(ctx, nil); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if elapsed < 250*time.Millisecond || elapsed > 5*time.Second {
		t.Errorf("deallocate took %v, want about 300ms (scaled 60s)", elapsed)
	}
	after := getVM(t, c, appRG, webVM)
	if ps := powerState(after); ps != "deallocated" {
		t.Errorf("power state after = %s, want deallocated", ps)
	}
	if ps := *after.Properties.ProvisioningState; ps != azsim.ProvisioningSucceeded {
		t.Errorf("provisioningState after = %s", ps)
	}
	var polls int
	for _, call := range sim.CallLog() {
		if call.Poll && call.Op == "VirtualMachines.BeginDeallocate" {
			polls++
		}
	}
	if polls < 1 || polls > 5 {
		t.Errorf("%d polls of the deallocate; want a few (Retry-After-Ms tells the poller when it is due)", polls)
	}
	// Deallocating a deallocated VM is accepted and completes at once, as in ARM.
	p2, err := c.vms.BeginDeallocate(ctx, appRG, webVM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !p2.Done() {
		t.Error("second deallocate not done at once")
	}
	// Start on a deallocated VM runs.
	p3, err := c.vms.BeginStart(ctx, appRG, webVM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p3.PollUntilDone(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if ps := powerState(getVM(t, c, appRG, webVM)); ps != "running" {
		t.Errorf("power state after start = %s", ps)
	}
}

func TestDiskCreateConflictsWhileCreating(t *testing.T) {
	t.Parallel()
	sim, c := newSim(t, azsim.Options{TimeScale: 0.01}) // disk from snapshot: 200ms
	snap := snapshotOf(t, sim, c, appRG, webVM, "snap")
	ctx := ctxT(t)
	body := armcompute.Disk{Location: to.Ptr(sim.Location()), Zones: []*string{to.Ptr("1")},
		Properties: &armcompute.DiskProperties{CreationData: &armcompute.CreationData{
			CreateOption: to.Ptr(armcompute.DiskCreateOptionCopy), SourceResourceID: to.Ptr(snap)}}}
	p, err := c.disks.BeginCreateOrUpdate(ctx, appRG, "copy", body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := c.disks.Get(ctx, appRG, "copy", nil); err != nil || *d.Properties.ProvisioningState != azsim.ProvisioningCreating {
		t.Errorf("disk while creating: %v, %v", d.Properties, err)
	}
	_, err = c.disks.BeginCreateOrUpdate(ctx, appRG, "copy", body, nil)
	wantCode(t, err, azsim.CodeConflict, http.StatusConflict)
	_, err = c.disks.BeginDelete(ctx, appRG, "copy", nil)
	wantCode(t, err, azsim.CodeConflict, http.StatusConflict)
	if _, err := p.PollUntilDone(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// A PUT with the same creation data is an update (idempotent create); another source is refused.
	p, err = c.disks.BeginCreateOrUpdate(ctx, appRG, "copy", body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PollUntilDone(ctx, nil); err != nil {
		t.Fatal(err)
	}
	body.Properties.CreationData.SourceResourceID = to.Ptr(snapshotOf(t, sim, c, appRG, webVM, "snap2"))
	_, err = c.disks.BeginCreateOrUpdate(ctx, appRG, "copy", body, nil)
	wantCode(t, err, azsim.CodePropertyChangeNotAllowed, http.StatusConflict)
}

func TestSnapshotCompletionPercent(t *testing.T) {
	t.Parallel()
	clock := azsim.NewManualClock(time.Date(2026, 11, 20, 3, 14, 0, 0, time.UTC))
	// Every latency 0 (the SDK's poller waits in real time), the background copy one hour.
	lat := azsim.LatencyTable{azsim.LatencySnapshotCopy: time.Hour}
	sim, c := newSim(t, azsim.Options{TimeScale: 1, Latency: lat, Clock: clock, StrictSnapshotCopy: true})
	snap := snapshotOf(t, sim, c, appRG, webVM, "snap")
	percent := func() float32 {
		r, err := c.snaps.Get(ctxT(t), appRG, "snap", nil)
		if err != nil {
			t.Fatal(err)
		}
		return *r.Properties.CompletionPercent
	}
	steps := []struct {
		advance time.Duration
		want    float32
	}{{0, 0}, {15 * time.Minute, 25}, {15 * time.Minute, 50}, {29 * time.Minute, 98.33333}, {time.Minute, 100}, {time.Hour, 100}}
	for _, s := range steps {
		clock.Advance(s.advance)
		if got := percent(); got < s.want-0.01 || got > s.want+0.01 {
			t.Errorf("after +%v: CompletionPercent %v, want %v", s.advance, got, s.want)
		}
	}
	// With StrictSnapshotCopy, a disk waits for the copy; it is complete now.
	if _, err := diskFrom(t, sim, c, appRG, "copy", snap, "1", nil); err != nil {
		t.Fatal(err)
	}
}

func TestStrictSnapshotCopyRefusesIncompleteSource(t *testing.T) {
	t.Parallel()
	clock := azsim.NewManualClock(time.Date(2026, 11, 20, 3, 14, 0, 0, time.UTC))
	lat := azsim.LatencyTable{azsim.LatencySnapshotCopy: time.Hour}
	sim, c := newSim(t, azsim.Options{TimeScale: 1, Latency: lat, Clock: clock, StrictSnapshotCopy: true})
	snap := snapshotOf(t, sim, c, appRG, webVM, "snap")
	_, err := diskFrom(t, sim, c, appRG, "copy", snap, "1", nil)
	wantCode(t, err, azsim.CodeOperationNotAllowed, http.StatusConflict)
}

func TestStartCompletesWithoutPolling(t *testing.T) {
	t.Parallel()
	started := make(chan string, 1)
	fleet := azsim.DefaultFleet()
	fleet.VMs[0].PowerState = azsim.PowerDeallocated
	sim, err := azsim.New(fleet, azsim.Options{TimeScale: 0.001, OnVMStarted: func(id string) { started <- id }})
	if err != nil {
		t.Fatal(err)
	}
	c := newClients(t, sim.SubscriptionID(), sim.ClientOptions())
	if _, err := c.vms.BeginStart(ctxT(t), appRG, fleet.VMs[0].Name, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-started:
		if !strings.EqualFold(id, fleet.VMID(fleet.VMs[0].Name)) {
			t.Errorf("OnVMStarted(%s)", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the start never completed without a poll")
	}
	if vm, _ := sim.State().VM(fleet.VMID(fleet.VMs[0].Name)); vm.Power != azsim.PowerRunning {
		t.Errorf("power %s", vm.Power)
	}
}

// TestConcurrentAttachesToOneRescueVM races attaches from many goroutines (as parallel incidents
// would) and checks that the state stays consistent: each attach either succeeds or gets a
// transient 409, no LUN is used twice, and the size's limit holds.
func TestConcurrentAttachesToOneRescueVM(t *testing.T) {
	t.Parallel()
	sim, c := newSim(t, azsim.Options{TimeScale: 0.0005})
	const n = 10 // Standard_D4s_v5 takes 8
	disks := make([]string, n)
	for i := range n {
		disks[i] = emptyDisk(t, sim, c, rescueRG, fmt.Sprintf("race-%d", i), "1")
	}
	errs := make(chan error, n)
	for i := range n {
		go func() {
			for {
				err := attach(t, c, rescueRG, rescue1, disks[i], nil)
				if code, _ := codeOf(err); code == azsim.CodeConflict {
					time.Sleep(time.Millisecond)
					continue
				}
				errs <- err
				return
			}
		}()
	}
	var ok, full int
	for range n {
		err := <-errs
		switch code, _ := codeOf(err); {
		case err == nil:
			ok++
		case code == azsim.CodeOperationNotAllowed:
			full++
		default:
			t.Errorf("attach: %v", err)
		}
	}
	if ok != 8 || full != 2 {
		t.Errorf("%d attached, %d refused as full; want 8 and 2", ok, full)
	}
	vm, _ := sim.State().VM(sim.Fleet().VMID(rescue1))
	seen := map[int32]bool{}
	for _, d := range vm.DataDisks {
		if seen[d.LUN] {
			t.Errorf("LUN %d used twice", d.LUN)
		}
		seen[d.LUN] = true
		disk, _ := sim.State().Disk(d.DiskID)
		if !strings.EqualFold(disk.ManagedBy, vm.ID) {
			t.Errorf("disk %s at LUN %d managed by %q", d.DiskID, d.LUN, disk.ManagedBy)
		}
	}
}

// TestGuestReportsAgent: with a guest simulator reporting the VM agent, a started fleet VM's
// agent is Not Ready until the guest says it booted, and again after the next start; without
// one, a running VM's agent is Ready.
func TestGuestReportsAgent(t *testing.T) {
	t.Parallel()
	for _, guest := range []bool{false, true} {
		t.Run(fmt.Sprintf("guest=%v", guest), func(t *testing.T) {
			t.Parallel()
			fleet := azsim.DefaultFleet()
			fleet.VMs[0].PowerState = azsim.PowerDeallocated
			sim, err := azsim.New(fleet, azsim.Options{TimeScale: 0.001, GuestReportsAgent: guest})
			if err != nil {
				t.Fatal(err)
			}
			c := newClients(t, sim.SubscriptionID(), sim.ClientOptions())
			name, id := fleet.VMs[0].Name, fleet.VMID(fleet.VMs[0].Name)
			osDisk := func() string { vm, _ := sim.State().VM(id); return vm.OSDiskID }
			ready := func() bool {
				t.Helper()
				resp, err := c.vms.Get(ctxT(t), appRG, name, &armcompute.VirtualMachinesClientGetOptions{
					Expand: to.Ptr(armcompute.InstanceViewTypesInstanceView)})
				if err != nil {
					t.Fatal(err)
				}
				f := vms.FactsOf(resp.VirtualMachine)
				if f.Power != vms.PowerRunning {
					t.Fatalf("power %s", f.Power)
				}
				return f.AgentReady
			}
			start := func() {
				t.Helper()
				p, err := c.vms.BeginStart(ctxT(t), appRG, name, nil)
				if err == nil {
					_, err = p.PollUntilDone(ctxT(t), nil)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			start()
			if got := ready(); got == guest {
				t.Fatalf("agent ready %v after a start", got)
			}
			if !guest {
				return
			}
			if err := sim.State().SetAgentReady(id, osDisk()); err != nil {
				t.Fatal(err)
			}
			if !ready() {
				t.Fatal("agent not ready after the guest reported")
			}
			p, err := c.vms.BeginDeallocate(ctxT(t), appRG, name, nil)
			if err == nil {
				_, err = p.PollUntilDone(ctxT(t), nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := sim.State().SetAgentReady(id, osDisk()); err == nil {
				t.Error("SetAgentReady of a deallocated VM succeeded")
			}
			start()
			if ready() {
				t.Error("agent ready after a second start the guest has not reported")
			}
		})
	}
}
