package winsim_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/agent/wintest"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azsim/winsim"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/dumpfile"
	"github.com/vmrescue/vmrescue/internal/harvest"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/vms"
)

// testFleet is the default fleet with two more VMs: a gen1 VM without a dump (its copy collides
// with the rescue VM's own gen1 disk) and one that crashes without ever writing a dump.
func testFleet(t *testing.T) *azsim.Fleet {
	t.Helper()
	f := azsim.DefaultFleet()
	f.VMs = append(f.VMs,
		azsim.VMSpec{Name: "legacy-01", ResourceGroup: "rg-app", Size: "Standard_D2s_v3", OSType: "Windows",
			HyperVGeneration: "V1", Zone: "1", OSDiskFreeGB: 60, BugCheck: 0x7B, Behaviour: azsim.BehaviourCrashOnBoot},
		azsim.VMSpec{Name: "nodump-01", ResourceGroup: "rg-app", Size: "Standard_D2s_v5", OSType: "Windows",
			HyperVGeneration: "V2", Zone: "2", OSDiskFreeGB: 80, BugCheck: 0x50, Behaviour: azsim.BehaviourCrashWithoutDump},
	)
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	return f
}

// servedRig is a rig whose simulator is also served on 127.0.0.1, so that boot diagnostics URIs
// can be fetched.
func servedRig(t *testing.T, fleet *azsim.Fleet, opts winsim.LocalOptions) *rig {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	opts.Sim.PublicURL = "http://" + srv.Listener.Addr().String()
	r := newRig(t, fleet, opts)
	srv.Config.Handler = r.sim.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	return r
}

func (r *rig) serialLog(rg, name string) string {
	r.t.Helper()
	uris, err := r.vms.RetrieveBootDiagnosticsData(ctxT(r.t), rg, name, nil)
	r.poll(err)
	resp, err := http.Get(*uris.SerialConsoleLogBlobURI)
	r.poll(err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("serial log: %s", resp.Status)
	}
	return string(b)
}

// TestRescueThroughRunCommand drives, through the real armcompute clients, what the pipeline does
// for a VM that blue-screens at boot: copy its OS disk, attach the copy to a rescue VM, run the
// real agent's inspect and patch through managed Run Command, swap the patched disk in, start
// the VM and let it crash again; then copy the disk again and harvest the dump into Azurite.
func TestRescueThroughRunCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, vm, rescue string
		wantGen          string
		wantCollision    bool
		wantDumpType     string // patch's choice
		wantOutcome      winsim.Outcome
		wantDump         bool
		wantNoDump       string // part of Boot.NoDump
	}{
		{name: "gen2 crash on boot", vm: "app-web-01", rescue: "vmrescue-rescue-1", wantGen: agent.Gen2,
			wantDumpType: agent.DumpComplete, wantOutcome: winsim.OutcomeCrashed, wantDump: true},
		{name: "gen1 crash on boot, identity collision", vm: "legacy-01", rescue: "vmrescue-rescue-1", wantGen: agent.Gen1,
			wantCollision: true, wantDumpType: agent.DumpComplete, wantOutcome: winsim.OutcomeCrashed, wantDump: true},
		{name: "kernel dump does not fit", vm: "app-sql-01", rescue: "vmrescue-rescue-2", wantGen: agent.Gen2,
			wantDumpType: agent.DumpKernel, wantOutcome: winsim.OutcomeCrashed, wantNoDump: "needs 21.3 GiB"},
		{name: "healthy after patch", vm: "app-api-01", rescue: "vmrescue-rescue-1", wantGen: agent.Gen2,
			wantDumpType: agent.DumpComplete, wantOutcome: winsim.OutcomeHealthy},
		{name: "crash without dump", vm: "nodump-01", rescue: "vmrescue-rescue-2", wantGen: agent.Gen2,
			wantDumpType: agent.DumpComplete, wantOutcome: winsim.OutcomeCrashed, wantNoDump: "crash-without-dump"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := servedRig(t, testFleet(t), winsim.LocalOptions{})
			vmID := r.sim.Fleet().VMID(tc.vm)
			rg := resourceGroupOf(vmID)
			vm := r.vm(tc.vm)
			originalID := *vm.Properties.StorageProfile.OSDisk.ManagedDisk.ID
			spec := vmSpec(t, r.sim.Fleet(), tc.vm)
			size, _ := azsim.LookupSize(spec.Size)
			inc := newIncident()

			// Snapshot and RescueAttach.
			r.deallocate(rg, tc.vm)
			copyID := r.copyDisk(rg, inc+"-rescue", originalID, spec.Zone)
			r.attachDetach(tc.rescue, copyID, 0, true)

			// OfflinePatch: inspect, then patch.
			ins := r.runAgent(tc.rescue, inc+"-inspect", agent.Request{Command: agent.CommandInspect, IncidentID: inc, LUN: 0, MemoryGB: size.MemoryGB})
			if !ins.OK {
				t.Fatalf("inspect failed: %s", ins.Error)
			}
			if ins.Disk == nil || ins.Disk.LUN != 0 || ins.Disk.Generation != tc.wantGen || !ins.Disk.LeftOffline {
				t.Errorf("inspect disk = %+v, want LUN 0, %s, left offline", ins.Disk, tc.wantGen)
			}
			if got := ins.Disk != nil && ins.Disk.Collision != nil; got != tc.wantCollision {
				t.Errorf("collision reported = %v, want %v", got, tc.wantCollision)
			} else if got && !ins.Disk.Collision.Restored {
				t.Errorf("collision not restored: %+v", ins.Disk.Collision)
			}
			if ins.Windows == nil || ins.Windows.Volume == "" || !strings.HasSuffix(ins.Windows.SystemHive, `\Windows\System32\config\SYSTEM`) {
				t.Errorf("inspect windows = %+v", ins.Windows)
			}
			if ins.CrashControl == nil || ins.CrashControl.Current != "ControlSet001" || ins.CrashControl.SetCount != 2 ||
				ins.CrashControl.Sets[0].CrashDumpEnabled == nil || *ins.CrashControl.Sets[0].CrashDumpEnabled != 0 {
				t.Errorf("inspect crash control = %+v, want ControlSet001 of 2 with dumps off", ins.CrashControl)
			}
			if ins.HasMemoryDump() {
				t.Errorf("inspect found a dump on %s: %+v", tc.vm, ins.Dumps.MemoryDump)
			}
			pat := r.runAgent(tc.rescue, inc+"-patch", agent.Request{Command: agent.CommandPatch, IncidentID: inc, LUN: 0, MemoryGB: size.MemoryGB})
			if !pat.OK || pat.Patch == nil || !pat.Patch.Verified || pat.Patch.DumpType != tc.wantDumpType {
				t.Fatalf("patch = ok %v %+v (%s), want verified %s dump", pat.OK, pat.Patch, pat.Error, tc.wantDumpType)
			}

			// ReattachReboot: detach, swap the OS disk of the deallocated VM, start.
			r.attachDetach(tc.rescue, copyID, 0, false)
			r.swapOSDisk(rg, tc.vm, copyID)
			r.start(rg, tc.vm)
			boot, err := r.w.WaitBoot(ctxT(t), vmID, 1)
			if err != nil {
				t.Fatal(err)
			}
			if boot.Outcome != tc.wantOutcome || !strings.EqualFold(boot.OSDiskID, copyID) {
				t.Fatalf("boot = %+v, want %s on %s", boot, tc.wantOutcome, copyID)
			}
			if (boot.Dump != nil) != tc.wantDump || !strings.Contains(boot.NoDump, tc.wantNoDump) {
				t.Errorf("boot dump = %+v (no dump: %q), want dump %v (%q)", boot.Dump, boot.NoDump, tc.wantDump, tc.wantNoDump)
			}
			if p := powerOf(r.vm(tc.vm)); p != "running" {
				t.Errorf("power state after the boot = %s, want running (a crash loop is running to the platform)", p)
			}
			if ready := vms.FactsOf(r.vm(tc.vm)).AgentReady; ready != (tc.wantOutcome == winsim.OutcomeHealthy) {
				t.Errorf("VM agent ready = %v after a boot that ended %s", ready, boot.Outcome)
			}
			events := r.events.all()
			serial := r.serialLog(rg, tc.vm)
			if tc.wantOutcome == winsim.OutcomeHealthy {
				if len(events) != 0 {
					t.Errorf("a healthy boot raised %d events", len(events))
				}
				if !strings.Contains(serial, "SAC started") || strings.Contains(serial, "BLUESCREEN") {
					t.Errorf("serial log of a healthy boot with EMS on:\n%s", serial)
				}
			} else {
				checkCrashEvent(t, events, vmID, boot.EventID)
				if boot.EventAttempts != 1 || boot.EventError != "" {
					t.Errorf("event delivery: %d attempts, error %q", boot.EventAttempts, boot.EventError)
				}
				stop := fmt.Sprintf(`"0x%X"`, uint32(spec.BugCheck))
				if !strings.Contains(serial, `CLASSNAME="BLUESCREEN"`) || !strings.Contains(serial, stop) {
					t.Errorf("serial log of the crash (EMS on) lacks the stop code %s:\n%s", stop, serial)
				}
			}

			if tc.wantDump {
				// The dump is on the patched disk, where DumpFile says, with the fleet's stop code.
				r.diskView(copyID, func(d *winsim.Disk) {
					d.View(func(wd *wintest.Disk) {
						f := wd.WindowsPartition().File(`Windows\MEMORY.DMP`)
						if f == nil {
							t.Fatal("no Windows\\MEMORY.DMP on the patched disk")
						}
						h, err := dumpfile.ParseBytes(f.Data)
						if err != nil || h.BugCheckCode != uint32(spec.BugCheck) || h.DumpType != dumpfile.TypeBitmapFull {
							t.Errorf("MEMORY.DMP header %+v (%v), want stop 0x%X, bitmap-full", h, err, uint32(spec.BugCheck))
						}
						mem := int64(size.MemoryGB * (1 << 30))
						if f.Size != boot.Dump.Bytes || boot.Dump.RealBytes < mem || f.Size != int64(float64(boot.Dump.RealBytes)*winsim.DefaultDumpScale) {
							t.Errorf("MEMORY.DMP is %d bytes (boot %+v); want the complete dump of %d bytes of memory, scaled", f.Size, boot.Dump, mem)
						}
					})
				})
				harvestAfterCrash(t, r, tc.vm, tc.rescue, copyID, inc, uint32(spec.BugCheck))
			}

			if ch := r.sim.State().ChangedOriginalDisks(); len(ch) != 0 {
				t.Errorf("original OS disks changed: %v", ch)
			}
			if v := r.sim.State().Violations(); len(v) != 0 {
				t.Errorf("safety violations: %+v", v)
			}
		})
	}
}

// harvestAfterCrash is HarvestDump: deallocate, copy the crashed disk, attach the copy, harvest.
func harvestAfterCrash(t *testing.T, r *rig, vmName, rescue, diskID, inc string, code uint32) {
	t.Helper()
	rg := resourceGroupOf(r.sim.Fleet().VMID(vmName))
	r.deallocate(rg, vmName)
	spec := vmSpec(t, r.sim.Fleet(), vmName)
	tmp := r.copyDisk(rg, inc+"-harvest", diskID, spec.Zone)
	r.attachDetach(rescue, tmp, 1, true)
	res := r.runAgent(rescue, inc+"-harvest", agent.Request{Command: agent.CommandHarvest, IncidentID: inc, LUN: 1, SASURL: r.prefixSAS(inc)})
	if !res.OK || res.Harvest == nil || !res.Harvest.Complete || res.Harvest.Files < 2 || res.Harvest.FilesDone != res.Harvest.Files {
		t.Fatalf("harvest = ok %v %+v (%s)", res.OK, res.Harvest, res.Error)
	}
	checkHarvested(t, r, inc, code, true)
}

// checkHarvested checks dumps/<incidentId>/ in Azurite: MEMORY.DMP with the stop code in its
// header, the minidumps, and a manifest that lists them all with the bug check.
func checkHarvested(t *testing.T, r *rig, inc string, code uint32, wantMinidump bool) {
	t.Helper()
	ctx := ctxT(t)
	client := azuritetest.Client(t)
	var names []string
	pager := client.NewListBlobsFlatPager(r.dumpsCtr, &container.ListBlobsFlatOptions{Prefix: ptr(inc + "/")})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			names = append(names, *b.Name)
		}
	}
	if !slices.Contains(names, inc+"/MEMORY.DMP") || !slices.Contains(names, inc+"/manifest.json") {
		t.Fatalf("dumps/%s holds %v; want MEMORY.DMP and manifest.json", inc, names)
	}
	hasMini := slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, inc+"/Minidump/") })
	if hasMini != wantMinidump {
		t.Errorf("minidump harvested = %v, want %v (%v)", hasMini, wantMinidump, names)
	}
	dl, err := client.DownloadStream(ctx, r.dumpsCtr, inc+"/MEMORY.DMP", nil)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 0x3000)
	_, err = io.ReadFull(dl.Body, head)
	dl.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if h, err := dumpfile.ParseBytes(head); err != nil || h.BugCheckCode != code {
		t.Errorf("harvested MEMORY.DMP header %+v (%v), want stop 0x%X", h, err, code)
	}
	mdl, err := client.DownloadStream(ctx, r.dumpsCtr, inc+"/manifest.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var m harvest.Manifest
	err = json.NewDecoder(mdl.Body).Decode(&m)
	mdl.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if m.IncidentID != inc || m.BugCheck == nil || m.BugCheck.Code != code || len(m.Files) != len(names)-1 {
		t.Errorf("manifest = %+v, want incident %s, stop 0x%X, %d files", m, inc, code, len(names)-1)
	}
}

// checkCrashEvent checks that exactly one event was posted: a VirtualMachineCrashed annotation
// of the VM, in the Event Grid schema, with the boot's event id.
func checkCrashEvent(t *testing.T, bodies [][]byte, vmID, eventID string) {
	t.Helper()
	if len(bodies) != 1 {
		t.Fatalf("%d events posted, want 1", len(bodies))
	}
	evs, err := hostproto.ParseEvents(bodies[0])
	if err != nil || len(evs) != 1 {
		t.Fatalf("posted body does not parse as one event (%v): %s", err, bodies[0])
	}
	e := evs[0]
	if e.ID != eventID || e.Type != winsim.ResourceAnnotatedType || e.Subject != vmID || e.Schema != hostproto.SchemaEventGrid {
		t.Errorf("event = %+v, want %s %s about %s", e, eventID, winsim.ResourceAnnotatedType, vmID)
	}
	var data struct {
		ResourceInfo struct {
			Properties struct {
				TargetResourceID string `json:"targetResourceId"`
				AnnotationName   string `json:"annotationName"`
			} `json:"properties"`
		} `json:"resourceInfo"`
	}
	if err := json.Unmarshal(e.Data, &data); err != nil || data.ResourceInfo.Properties.AnnotationName != winsim.AnnotationVMCrashed ||
		data.ResourceInfo.Properties.TargetResourceID != vmID {
		t.Errorf("event data %s (%v)", e.Data, err)
	}
}

func vmSpec(t *testing.T, f *azsim.Fleet, name string) azsim.VMSpec {
	t.Helper()
	for _, v := range f.VMs {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no fleet VM %s", name)
	return azsim.VMSpec{}
}

func ptr[T any](v T) *T { return &v }

func powerOf(vm armcompute.VirtualMachine) string {
	for _, s := range vm.Properties.InstanceView.Statuses {
		if c := *s.Code; strings.HasPrefix(c, "PowerState/") {
			return strings.TrimPrefix(c, "PowerState/")
		}
	}
	return ""
}
