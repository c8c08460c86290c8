package azsim_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/azsim"
)

func TestOriginalDiskSafety(t *testing.T) {
	t.Parallel()
	sim, c := newSim(t, azsim.Options{})
	ctx := ctxT(t)
	original := *getVM(t, c, appRG, webVM).Properties.StorageProfile.OSDisk.ManagedDisk.ID
	name := original[strings.LastIndex(original, "/")+1:]

	// Attached to its VM: ARM refuses too; the simulator records the attempt.
	_, err := c.disks.BeginDelete(ctx, appRG, name, nil)
	wantCode(t, err, azsim.CodeOperationNotAllowed, http.StatusConflict)

	// Swapped out, so unattached: ARM would delete it; the simulator refuses and records.
	snap := snapshotOf(t, sim, c, appRG, webVM, "snap")
	patched, err := diskFrom(t, sim, c, appRG, "patched", snap, "1", nil)
	if err != nil {
		t.Fatal(err)
	}
	deallocate(t, c, appRG, webVM)
	if err := swapOSDisk(t, c, appRG, webVM, patched); err != nil {
		t.Fatal(err)
	}
	_, err = c.disks.BeginDelete(ctx, appRG, name, nil)
	wantCode(t, err, azsim.CodeOperationNotAllowed, http.StatusConflict)
	// A rewrite of the original (tags, here) is refused and recorded too.
	_, err = c.disks.BeginCreateOrUpdate(ctx, appRG, name, armcompute.Disk{Location: to.Ptr(sim.Location()),
		Tags: map[string]*string{"x": to.Ptr("y")}}, nil)
	wantCode(t, err, azsim.CodeOperationNotAllowed, http.StatusConflict)

	var kinds []string
	for _, v := range sim.State().Violations() {
		if !strings.EqualFold(v.ResourceID, original) {
			t.Errorf("violation on %s, want %s", v.ResourceID, original)
		}
		kinds = append(kinds, v.Kind)
	}
	if want := []string{azsim.ViolationDeleteOriginal, azsim.ViolationDeleteOriginal, azsim.ViolationModifyOriginal}; !slices.Equal(kinds, want) {
		t.Errorf("violations %v, want %v", kinds, want)
	}
	if _, ok := sim.State().Disk(original); !ok {
		t.Fatal("original disk is gone")
	}
	if ch := sim.State().ChangedOriginalDisks(); len(ch) != 0 {
		t.Errorf("original disks reported changed: %v", ch)
	}
	// Swap back (rollback) is allowed: the original is this VM's own disk.
	if err := swapOSDisk(t, c, appRG, webVM, original); err != nil {
		t.Fatalf("rollback swap: %v", err)
	}
	// A change to the original's content is reported.
	content, _ := sim.State().DiskContent(original)
	content.(*azsim.Files).Write("Windows/System32/config/SYSTEM", []byte("patched in place"))
	if ch := sim.State().ChangedOriginalDisks(); len(ch) != 1 || !strings.EqualFold(ch[0], original) {
		t.Errorf("ChangedOriginalDisks = %v, want [%s]", ch, original)
	}
}

func TestVMShapes(t *testing.T) {
	t.Parallel()
	fleet := azsim.DefaultFleet()
	fleet.VMs = append(fleet.VMs,
		azsim.VMSpec{Name: "enc-01", ResourceGroup: appRG, Size: "Standard_D2s_v5", OSType: "Windows", HyperVGeneration: "V2", DiskEncryption: true},
		azsim.VMSpec{Name: "classic-01", ResourceGroup: appRG, Size: "Standard_D2s_v3", OSType: "Windows", HyperVGeneration: "V1", UnmanagedOSDisk: true},
		azsim.VMSpec{Name: "mem-01", ResourceGroup: appRG, MemoryGB: 30, OSType: "Windows", HyperVGeneration: "V2", Tags: map[string]string{"vmrescue-optout": "true"}},
	)
	sim, err := azsim.New(fleet, azsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := newClients(t, sim.SubscriptionID(), sim.ClientOptions())

	enc := getVM(t, c, appRG, "enc-01")
	if len(enc.Resources) != 1 || *enc.Resources[0].Properties.Type != "AzureDiskEncryption" {
		t.Errorf("ADE VM extensions: %v", enc.Resources)
	}
	encDisk, err := c.disks.Get(ctxT(t), appRG, *enc.Properties.StorageProfile.OSDisk.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := encDisk.Properties.EncryptionSettingsCollection; p == nil || !*p.Enabled {
		t.Error("ADE VM's OS disk has no enabled encryptionSettingsCollection")
	}
	deallocate(t, c, appRG, "enc-01")
	err = swapOSDisk(t, c, appRG, "enc-01", *enc.Properties.StorageProfile.OSDisk.ManagedDisk.ID+"x")
	wantCode(t, err, azsim.CodeOSDiskSwapEncrypted, http.StatusConflict)

	classic := getVM(t, c, appRG, "classic-01")
	if od := classic.Properties.StorageProfile.OSDisk; od.ManagedDisk != nil || od.Vhd == nil || !strings.HasSuffix(*od.Vhd.URI, ".vhd") {
		t.Errorf("unmanaged OS disk: managed %v vhd %v", od.ManagedDisk, od.Vhd)
	}

	mem := getVM(t, c, appRG, "mem-01")
	if got := *mem.Properties.HardwareProfile.VMSize; got != "Standard_E4s_v5" {
		t.Errorf("memoryGB 30 gave size %s, want Standard_E4s_v5 (32 GB)", got)
	}
	if *mem.Tags["vmrescue-optout"] != "true" {
		t.Errorf("tags %v", mem.Tags)
	}
	linux := getVM(t, c, appRG, "app-linux-01")
	if *linux.Properties.StorageProfile.OSDisk.OSType != armcompute.OperatingSystemTypesLinux {
		t.Error("linux VM OS type")
	}
	if g := *getVM(t, c, appRG, batchVM).Properties.InstanceView.HyperVGeneration; g != "V1" {
		t.Errorf("batch VM generation %s", g)
	}
	_, err = c.vms.Get(ctxT(t), appRG, "nope", nil)
	wantCode(t, err, azsim.CodeResourceNotFound, http.StatusNotFound)
	_, err = c.vms.Get(ctxT(t), "rg-nope", webVM, nil)
	wantCode(t, err, azsim.CodeResourceGroupNotFound, http.StatusNotFound)
}

func TestResourceSKUs(t *testing.T) {
	t.Parallel()
	sim, c := newSim(t, azsim.Options{})
	skus := func(filter string) map[string]map[string]string {
		out := map[string]map[string]string{}
		pager := c.skus.NewListPager(&armcompute.ResourceSKUsClientListOptions{Filter: to.Ptr(filter)})
		for pager.More() {
			page, err := pager.NextPage(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range page.Value {
				if *s.ResourceType != "virtualMachines" {
					continue
				}
				caps := map[string]string{}
				for _, c := range s.Capabilities {
					caps[*c.Name] = *c.Value
				}
				out[*s.Name] = caps
			}
		}
		return out
	}
	here := skus("location eq '" + sim.Location() + "'")
	if len(here) != len(azsim.Sizes) {
		t.Errorf("%d VM sizes in %s, want %d", len(here), sim.Location(), len(azsim.Sizes))
	}
	for _, s := range azsim.Sizes {
		caps := here[s.Name]
		if caps["MemoryGB"] != strconv.FormatFloat(s.MemoryGB, 'f', -1, 64) || caps["MaxDataDiskCount"] != strconv.Itoa(s.MaxDataDiskCount) || caps["vCPUs"] != strconv.Itoa(s.VCPUs) {
			t.Errorf("%s capabilities %v", s.Name, caps)
		}
	}
	if got := here["Standard_DS1_v2"]["MemoryGB"]; got != "3.5" {
		t.Errorf("DS1_v2 MemoryGB %q", got)
	}
	if other := skus("location eq 'eastus'"); len(other) != 0 {
		t.Errorf("%d sizes in another region", len(other))
	}
}

func TestCallCounting(t *testing.T) {
	t.Parallel()
	sim, c := newSim(t, azsim.Options{})
	getVM(t, c, appRG, webVM)
	deallocate(t, c, appRG, webVM)
	snapshotOf(t, sim, c, appRG, webVM, "snap") // Get + BeginCreateOrUpdate
	want := map[string]int{
		"VirtualMachines.Get":             2,
		"VirtualMachines.BeginDeallocate": 1,
		"Snapshots.BeginCreateOrUpdate":   1,
	}
	if got := sim.Calls(); !maps.Equal(got, want) {
		t.Errorf("calls %v, want %v", got, want)
	}
	var polls int
	for _, call := range sim.CallLog() {
		if call.Poll {
			polls++
		}
	}
	// At time scale 0 each LRO is one status poll of its Azure-AsyncOperation URL and the
	// poller's final GET (the Location URL of a POST, the resource of a PUT).
	if polls != 4 {
		t.Errorf("%d polls, want 4", polls)
	}
	sim.ResetCalls()
	if n := len(sim.Calls()); n != 0 {
		t.Errorf("%d operations counted after reset", n)
	}
}

func TestFleet(t *testing.T) {
	t.Parallel()
	f := azsim.DefaultFleet()
	if len(f.VMs) == 0 || len(f.RescueVMs) == 0 {
		t.Fatal("default fleet is empty")
	}
	if f.VMs[0].BugCheck != 0x7E {
		t.Errorf("bug check %#x", uint32(f.VMs[0].BugCheck))
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	back, err := azsim.ParseFleet(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(back)
	if !bytes.Equal(b, b2) {
		t.Error("fleet does not survive a JSON round trip")
	}
	bad := []struct {
		name, json, want string
	}{
		{"unknown field", `{"subscriptionId":"5e1d2c3b-4a59-4e0f-9c1a-7b6d8e9f0a12","location":"x","rescueVms":[],"vms":[],"extra":1}`, "unknown field"},
		{"many problems at once", `{"subscriptionId":"nope","location":"","rescueVms":[{"name":"r","resourceGroup":"rg","size":"Standard_Nope"}],
			"vms":[{"name":"v","resourceGroup":"rg","osType":"Solaris","hyperVGeneration":"V3","zone":"4","osDiskFreeGB":1,"behaviour":"explode","bugCheck":"0xZZ"}]}`, "bug check"},
		{"several validation errors", `{"subscriptionId":"nope","location":"","rescueVms":[{"name":"r","resourceGroup":"rg","size":"Standard_Nope"}],
			"vms":[{"name":"v","resourceGroup":"rg","osType":"Solaris","hyperVGeneration":"V3","zone":"4","osDiskFreeGB":1,"behaviour":"explode"}]}`,
			"subscriptionId|location is empty|unknown size|zone \"4\"|hyperVGeneration|osType|give size or memoryGB|behaviour"},
	}
	for _, tc := range bad {
		_, err := azsim.ParseFleet([]byte(tc.json))
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range strings.Split(tc.want, "|") {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
	}
}
