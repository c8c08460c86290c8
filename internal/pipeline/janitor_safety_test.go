package pipeline_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// failingBlobs fails every storage request whose path names the incident, as a throttled or
// unreachable account would.
type failingBlobs struct {
	id   string
	next policy.Transporter
}

func (f failingBlobs) Do(req *http.Request) (*http.Response, error) {
	if strings.Contains(req.URL.Path, f.id) || strings.Contains(req.URL.RawQuery, f.id) {
		return nil, errors.New("connection reset by peer")
	}
	return f.next.Do(req)
}

// TestJanitorUnreadableTrail: an incident whose trail cannot be read is not taken for over. The
// Janitor leaves its LUN, Run Commands, disks and snapshots alone for the run and reports the
// error; the next run, with the trail readable, sees it active and still leaves them.
func TestJanitorUnreadableTrail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id, _ := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-web-01"})
	ctx := context.Background()
	holders := func() int {
		n := 0
		for _, vm := range e.cfg.RescueVMs {
			h, err := e.locks.LUNHolders(ctx, vm)
			if err != nil {
				t.Fatal(err)
			}
			for _, hid := range h {
				if hid == id {
					n++
				}
			}
		}
		return n
	}
	if holders() != 1 {
		t.Fatal("the incident holds no LUN before the Janitor runs")
	}
	client, err := azblob.NewClientFromConnectionString(azuritetest.ConnectionString(t), &azblob.ClientOptions{
		ClientOptions: policy.ClientOptions{Transport: failingBlobs{id: id, next: http.DefaultClient},
			Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	j := e.newPipeline(nil)
	j.Trail = audit.New(client, e.cfg.AuditContainer)
	j.Now = func() time.Time { return time.Now().Add(time.Hour) }
	rep, err := j.Clean(ctx)
	if err != nil {
		t.Fatalf("a trail read error is not the run's failure: %v", err)
	}
	if !slices.ContainsFunc(rep.Errors, func(s string) bool { return strings.Contains(s, id) }) {
		t.Errorf("the unreadable trail is not reported: %+v", rep)
	}
	if rep.ReleasedLUNs != 0 || len(rep.DeletedDisks)+len(rep.DeletedSnaps)+len(rep.DeletedRuns) != 0 || holders() != 1 {
		t.Fatalf("the Janitor acted on an incident it could not read: %+v", rep)
	}
	j = e.newPipeline(nil)
	j.Now = func() time.Time { return time.Now().Add(time.Hour) }
	if rep, err := j.Clean(ctx); err != nil || rep.ReleasedLUNs != 0 || len(rep.DeletedSnaps) != 0 || holders() != 1 {
		t.Fatalf("active incident: %+v %v", rep, err)
	}
}

// TestJanitorKeepsSwappedInDisk: the patched disk a closed incident swapped in is the VM's OS disk.
// Once it is no longer attached (here the VM is moved back to its original disk by hand, as when
// a VM is recreated from another disk), the Janitor still never deletes it; the incident's
// temporary disks and snapshots go as usual.
func TestJanitorKeepsSwappedInDisk(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{fleet: withBehaviour(azsim.BehaviourHealthyAfterPatch)})
	id := e.open("app-web-01", false)
	for {
		d, ok := e.step(e.pipeline())
		if !ok {
			break
		}
		if d.queue == incident.StageReattachReboot {
			e.awaitStart()
		}
	}
	v := e.checkClean(id)
	patched := diskOf(e, id)
	vmID := e.fleet.VMID("app-web-01")
	if vm, _ := e.sim.State().VM(vmID); !strings.EqualFold(vm.OSDiskID, patched) {
		t.Fatalf("the VM runs on %s, not the patched disk", vm.OSDiskID)
	}
	swapByHand(t, e, "app-web-01", v.Artifacts.OriginalOSDiskID)
	if d, _ := e.sim.State().Disk(patched); d.ManagedBy != "" {
		t.Fatalf("the patched disk is still attached to %s", d.ManagedBy)
	}
	j := e.newPipeline(nil)
	j.Now = func() time.Time { return time.Now().Add(e.cfg.Retention + time.Hour) }
	rep, err := j.Clean(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := e.sim.State().Disk(patched); !ok || slices.ContainsFunc(rep.DeletedDisks, func(s string) bool { return strings.EqualFold(s, patched) }) {
		t.Fatalf("the disk the incident swapped in was deleted: %+v", rep)
	}
	if !slices.ContainsFunc(rep.Kept, func(s string) bool { return strings.Contains(strings.ToLower(s), strings.ToLower(patched)) }) {
		t.Errorf("kept disks %v do not say why %s stays", rep.Kept, patched)
	}
	if len(rep.DeletedSnaps) != 1 {
		t.Errorf("deleted snapshots %v, want the backup past its retention", rep.DeletedSnaps)
	}
}

// swapByHand deallocates a VM and puts diskID in as its OS disk, as an operator would.
func swapByHand(t *testing.T, e *env, vmName, diskID string) {
	t.Helper()
	ctx := context.Background()
	vc, err := armcompute.NewVirtualMachinesClient(e.fleet.SubscriptionID, azsim.Credential(), e.sim.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	dp, err := vc.BeginDeallocate(ctx, "rg-app", vmName, nil)
	if err == nil {
		_, err = dp.PollUntilDone(ctx, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	name := diskID[strings.LastIndex(diskID, "/")+1:]
	up, err := vc.BeginUpdate(ctx, "rg-app", vmName, armcompute.VirtualMachineUpdate{Properties: &armcompute.VirtualMachineProperties{
		StorageProfile: &armcompute.StorageProfile{OSDisk: &armcompute.OSDisk{Name: to.Ptr(name),
			ManagedDisk: &armcompute.ManagedDiskParameters{ID: to.Ptr(diskID)}}}}}, nil)
	if err == nil {
		_, err = up.PollUntilDone(ctx, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestJanitorTrailless: a tagged disk of an incident with no trail (an audit container replaced
// by an empty one) is left alone while the incident its name gives is within the retention
// period, and removed after.
func TestJanitorTrailless(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	id := incident.NewID(time.Now())
	emptyDisk(t, e, "rg-app", incident.RescueDiskName(id), "",
		map[string]*string{incident.TagIncident: to.Ptr(id), incident.TagRole: to.Ptr(incident.RoleRescueDisk)})
	j := e.newPipeline(nil)
	j.Now = func() time.Time { return time.Now().Add(time.Hour) }
	if rep, err := j.Clean(ctx); err != nil || len(rep.DeletedDisks) != 0 {
		t.Fatalf("within the retention period: %+v %v", rep, err)
	}
	j.Now = func() time.Time { return time.Now().Add(e.cfg.Retention + time.Hour) }
	if rep, err := j.Clean(ctx); err != nil || len(rep.DeletedDisks) != 1 {
		t.Fatalf("after the retention period: %+v %v", rep, err)
	}
}
