package azsim_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

// testTimeout bounds each test's ARM calls.
const testTimeout = 30 * time.Second

type clients struct {
	vms      *armcompute.VirtualMachinesClient
	disks    *armcompute.DisksClient
	snaps    *armcompute.SnapshotsClient
	skus     *armcompute.ResourceSKUsClient
	runs     *armcompute.VirtualMachineRunCommandsClient
	tickets  *armsupport.TicketsClient
	services *armsupport.ServicesClient
	classes  *armsupport.ProblemClassificationsClient
}

func newClients(t testing.TB, sub string, opts *arm.ClientOptions) clients {
	t.Helper()
	cf, err := armcompute.NewClientFactory(sub, azsim.Credential(), opts)
	if err != nil {
		t.Fatal(err)
	}
	sf, err := armsupport.NewClientFactory(sub, azsim.Credential(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return clients{
		vms: cf.NewVirtualMachinesClient(), disks: cf.NewDisksClient(), snaps: cf.NewSnapshotsClient(),
		skus: cf.NewResourceSKUsClient(), runs: cf.NewVirtualMachineRunCommandsClient(),
		tickets: sf.NewTicketsClient(), services: sf.NewServicesClient(), classes: sf.NewProblemClassificationsClient(),
	}
}

func newSim(t *testing.T, opts azsim.Options) (*azsim.Sim, clients) {
	t.Helper()
	sim, err := azsim.New(nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	return sim, newClients(t, sim.SubscriptionID(), sim.ClientOptions())
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// errCode returns the ARM error code and status of err, failing the test if err is not an
// *azcore.ResponseError.
func errCode(t *testing.T, err error) (string, int) {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not an *azcore.ResponseError", err, err)
	}
	return re.ErrorCode, re.StatusCode
}

func wantCode(t *testing.T, err error, code string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %d %s", status, code)
	}
	gotCode, gotStatus := errCode(t, err)
	if gotCode != code || gotStatus != status {
		t.Fatalf("got %d %s (%v), want %d %s", gotStatus, gotCode, err, status, code)
	}
}

func deallocate(t *testing.T, c clients, rg, vm string) {
	t.Helper()
	p, err := c.vms.BeginDeallocate(ctxT(t), rg, vm, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PollUntilDone(ctxT(t), nil); err != nil {
		t.Fatal(err)
	}
}

func getVM(t *testing.T, c clients, rg, name string) armcompute.VirtualMachine {
	t.Helper()
	r, err := c.vms.Get(ctxT(t), rg, name, &armcompute.VirtualMachinesClientGetOptions{Expand: to.Ptr(armcompute.InstanceViewTypesInstanceView)})
	if err != nil {
		t.Fatal(err)
	}
	return r.VirtualMachine
}

func powerState(vm armcompute.VirtualMachine) string {
	for _, s := range vm.Properties.InstanceView.Statuses {
		if c := *s.Code; strings.HasPrefix(c, "PowerState/") {
			return strings.TrimPrefix(c, "PowerState/")
		}
	}
	return ""
}

// snapshotOf snapshots the VM's OS disk and returns the snapshot id.
func snapshotOf(t *testing.T, sim *azsim.Sim, c clients, rg, vm, name string) string {
	t.Helper()
	v := getVM(t, c, rg, vm)
	p, err := c.snaps.BeginCreateOrUpdate(ctxT(t), rg, name, armcompute.Snapshot{
		Location: to.Ptr(sim.Location()),
		Properties: &armcompute.SnapshotProperties{
			Incremental:  to.Ptr(true),
			CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionCopy), SourceResourceID: v.Properties.StorageProfile.OSDisk.ManagedDisk.ID},
		},
		Tags: map[string]*string{"vmrescue-incident": to.Ptr("inc-test")},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.PollUntilDone(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return *r.ID
}

// diskFrom creates a disk from a snapshot; mod adjusts the request.
func diskFrom(t *testing.T, sim *azsim.Sim, c clients, rg, name, snapID, zone string, mod func(*armcompute.Disk)) (string, error) {
	t.Helper()
	d := armcompute.Disk{
		Location: to.Ptr(sim.Location()),
		Properties: &armcompute.DiskProperties{
			CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionCopy), SourceResourceID: to.Ptr(snapID)},
		},
		SKU:  &armcompute.DiskSKU{Name: to.Ptr(armcompute.DiskStorageAccountTypesPremiumLRS)},
		Tags: map[string]*string{"vmrescue-incident": to.Ptr("inc-test")},
	}
	if zone != "" {
		d.Zones = []*string{to.Ptr(zone)}
	}
	if mod != nil {
		mod(&d)
	}
	p, err := c.disks.BeginCreateOrUpdate(ctxT(t), rg, name, d, nil)
	if err != nil {
		return "", err
	}
	r, err := p.PollUntilDone(ctxT(t), nil)
	if err != nil {
		return "", err
	}
	return *r.ID, nil
}

func swapOSDisk(t *testing.T, c clients, rg, vm, diskID string) error {
	t.Helper()
	v := getVM(t, c, rg, vm)
	v.Properties.InstanceView = nil
	v.Properties.StorageProfile.OSDisk.ManagedDisk.ID = to.Ptr(diskID)
	v.Properties.StorageProfile.OSDisk.Name = to.Ptr(diskID[strings.LastIndex(diskID, "/")+1:])
	p, err := c.vms.BeginCreateOrUpdate(ctxT(t), rg, vm, v, nil)
	if err != nil {
		return err
	}
	_, err = p.PollUntilDone(ctxT(t), nil)
	return err
}

func attach(t *testing.T, c clients, rg, vm, diskID string, lun *int32) error {
	t.Helper()
	p, err := c.vms.BeginAttachDetachDataDisks(ctxT(t), rg, vm, armcompute.AttachDetachDataDisksRequest{
		DataDisksToAttach: []*armcompute.DataDisksToAttach{{DiskID: to.Ptr(diskID), Lun: lun}},
	}, nil)
	if err != nil {
		return err
	}
	_, err = p.PollUntilDone(ctxT(t), nil)
	return err
}

func detach(t *testing.T, c clients, rg, vm, diskID string) error {
	t.Helper()
	p, err := c.vms.BeginAttachDetachDataDisks(ctxT(t), rg, vm, armcompute.AttachDetachDataDisksRequest{
		DataDisksToDetach: []*armcompute.DataDisksToDetach{{DiskID: to.Ptr(diskID)}},
	}, nil)
	if err != nil {
		return err
	}
	_, err = p.PollUntilDone(ctxT(t), nil)
	return err
}

func emptyDisk(t *testing.T, sim *azsim.Sim, c clients, rg, name, zone string) string {
	t.Helper()
	d := armcompute.Disk{Location: to.Ptr(sim.Location()), Zones: []*string{to.Ptr(zone)},
		Properties: &armcompute.DiskProperties{DiskSizeGB: to.Ptr[int32](32),
			CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionEmpty)}}}
	if zone == "" {
		d.Zones = nil
	}
	p, err := c.disks.BeginCreateOrUpdate(ctxT(t), rg, name, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.PollUntilDone(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return *r.ID
}

const (
	appRG    = "rg-app"
	rescueRG = "rg-vmrescue"
	webVM    = "app-web-01" // Windows, V2, zone 1, Standard_D2s_v5 (4 data disks)
	batchVM  = "app-batch-01"
	rescue1  = "vmrescue-rescue-1" // zone 1, Standard_D4s_v5 (8 data disks)
)

func TestOSDiskSwap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		deallocate bool
		mod        func(*armcompute.Disk)
		zone       string
		attachedTo string // attach the new disk to this rescue VM first
		wantCode   string
		wantStatus int
	}{
		{name: "deallocated and matching", deallocate: true, zone: "1"},
		{name: "running", deallocate: false, zone: "1", wantCode: azsim.CodeOperationNotAllowed, wantStatus: http.StatusConflict},
		{name: "generation mismatch", deallocate: true, zone: "1", mod: func(d *armcompute.Disk) {
			d.Properties.HyperVGeneration = to.Ptr(armcompute.HyperVGenerationV1)
		}, wantCode: azsim.CodePropertyChangeNotAllowed, wantStatus: http.StatusConflict},
		{name: "os type mismatch", deallocate: true, zone: "1", mod: func(d *armcompute.Disk) {
			d.Properties.OSType = to.Ptr(armcompute.OperatingSystemTypesLinux)
		}, wantCode: azsim.CodePropertyChangeNotAllowed, wantStatus: http.StatusConflict},
		{name: "zone mismatch", deallocate: true, zone: "2", wantCode: azsim.CodePropertyChangeNotAllowed, wantStatus: http.StatusConflict},
		{name: "disk attached to a rescue VM", deallocate: true, zone: "1", attachedTo: rescue1,
			wantCode: azsim.CodeConflictingUserInput, wantStatus: http.StatusConflict},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, c := newSim(t, azsim.Options{})
			before := getVM(t, c, appRG, webVM)
			original := *before.Properties.StorageProfile.OSDisk.ManagedDisk.ID
			snap := snapshotOf(t, sim, c, appRG, webVM, "snap")
			newDisk, err := diskFrom(t, sim, c, appRG, "patched", snap, tc.zone, tc.mod)
			if err != nil {
				t.Fatal(err)
			}
			if tc.attachedTo != "" {
				if err := attach(t, c, rescueRG, tc.attachedTo, newDisk, nil); err != nil {
					t.Fatal(err)
				}
			}
			if tc.deallocate {
				deallocate(t, c, appRG, webVM)
			}
			err = swapOSDisk(t, c, appRG, webVM, newDisk)
			after := getVM(t, c, appRG, webVM)
			got := *after.Properties.StorageProfile.OSDisk.ManagedDisk.ID
			if tc.wantCode != "" {
				wantCode(t, err, tc.wantCode, tc.wantStatus)
				if !strings.EqualFold(got, original) {
					t.Errorf("OS disk changed to %s after a refused swap", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.EqualFold(got, newDisk) {
				t.Errorf("OS disk is %s, want %s", got, newDisk)
			}
			orig, _ := sim.State().Disk(original)
			if orig.ManagedBy != "" {
				t.Errorf("original disk still managed by %s", orig.ManagedBy)
			}
			nd, _ := sim.State().Disk(newDisk)
			if !strings.EqualFold(nd.ManagedBy, *after.ID) {
				t.Errorf("new disk managed by %q, want %s", nd.ManagedBy, *after.ID)
			}
			if ch := sim.State().ChangedOriginalDisks(); len(ch) != 0 {
				t.Errorf("original disks changed: %v", ch)
			}
		})
	}
}

// retryAfter reads the Retry-After-Ms header of an ARM error.
func retryAfter(t *testing.T, err error) time.Duration {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.RawResponse == nil {
		t.Fatalf("no raw response in %v", err)
	}
	ms, perr := strconv.Atoi(re.RawResponse.Header.Get("Retry-After-Ms"))
	if perr != nil {
		t.Fatalf("Retry-After-Ms %q: %v", re.RawResponse.Header.Get("Retry-After-Ms"), perr)
	}
	return time.Duration(ms) * time.Millisecond
}

// codeOf returns the ARM error code and status of err ("" for nil or another error).
func codeOf(err error) (string, int) {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.ErrorCode, re.StatusCode
	}
	return "", 0
}
