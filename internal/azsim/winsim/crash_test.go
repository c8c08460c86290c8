package winsim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/agent/wintest"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azsim/winsim"
	"github.com/vmrescue/vmrescue/internal/dumpfile"
)

// bootOn copies the VM's OS disk, edits the copy as an offline patch would, swaps it in and starts
// the VM; it returns the copy's id and the boot.
func bootOn(t *testing.T, r *rig, name string, edit func(d *wintest.Disk)) (string, winsim.Boot) {
	t.Helper()
	vmID := r.sim.Fleet().VMID(name)
	rg := resourceGroupOf(vmID)
	vm := r.vm(name)
	r.deallocate(rg, name)
	copyID := r.copyDisk(rg, "copy-"+name, *vm.Properties.StorageProfile.OSDisk.ManagedDisk.ID, vmSpec(t, r.sim.Fleet(), name).Zone)
	r.diskView(copyID, func(d *winsim.Disk) { d.View(edit) })
	r.swapOSDisk(rg, name, copyID)
	r.start(rg, name)
	b, err := r.w.WaitBoot(ctxT(t), vmID, 1)
	if err != nil {
		t.Fatal(err)
	}
	return copyID, b
}

func setCrashControl(values map[string]string) func(d *wintest.Disk) {
	return func(d *wintest.Disk) {
		h := d.SystemHive()
		for _, set := range []string{`ControlSet001`, `ControlSet002`} {
			for name, v := range values {
				typ := "REG_DWORD"
				if strings.Contains(v, `\`) {
					typ = "REG_EXPAND_SZ"
				}
				if err := h.Set(set+`\Control\CrashControl`, name, typ, v); err != nil {
					panic(err)
				}
			}
		}
	}
}

// TestCrashLoopFollowsCrashControl checks that the crash writes what the current control set's
// CrashControl asks for, where it asks, if there is room, and raises the event in every case.
func TestCrashLoopFollowsCrashControl(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, vm   string
		values     map[string]string
		before     func(d *wintest.Disk) // more edits
		wantDump   string                // "os", "data" or ""
		wantType   string
		wantMini   bool
		wantNoDump string
	}{
		{name: "complete dump on the OS volume", vm: "app-web-01", values: map[string]string{"CrashDumpEnabled": "1"},
			wantDump: "os", wantType: agent.DumpComplete, wantMini: true},
		{name: "kernel dump", vm: "app-web-01", values: map[string]string{"CrashDumpEnabled": "2"},
			wantDump: "os", wantType: agent.DumpKernel, wantMini: true},
		{name: "dumps off", vm: "app-web-01", values: map[string]string{"CrashDumpEnabled": "0"},
			wantNoDump: "turned off"},
		{name: "small memory dump only", vm: "app-web-01", values: map[string]string{"CrashDumpEnabled": "3"},
			wantMini: true, wantNoDump: "small memory dump only"},
		{name: "DumpFile on a data volume", vm: "app-sql-01",
			values:   map[string]string{"CrashDumpEnabled": "1", "DumpFile": `E:\MEMORY.DMP`},
			wantDump: "data", wantType: agent.DumpComplete, wantMini: true},
		{name: "DumpFile on a volume the VM lacks", vm: "app-web-01",
			values:     map[string]string{"CrashDumpEnabled": "1", "DumpFile": `G:\MEMORY.DMP`},
			wantMini:   true,
			wantNoDump: "not a volume of the VM"},
		{name: "complete dump larger than the free space", vm: "app-sql-01", values: map[string]string{"CrashDumpEnabled": "1"},
			wantMini: true, wantNoDump: "needs 64.0 GiB"},
		{name: "existing dump kept with Overwrite=0", vm: "app-web-01",
			values: map[string]string{"CrashDumpEnabled": "1", "Overwrite": "0"},
			before: func(d *wintest.Disk) {
				_ = d.WindowsPartition().WriteFile(`Windows\MEMORY.DMP`, []byte("old"), 3, time.Now())
			},
			wantMini: true, wantNoDump: "Overwrite=0"},
		{name: "Select\\Current names the control set that counts", vm: "app-web-01",
			values: map[string]string{"CrashDumpEnabled": "0"},
			before: func(d *wintest.Disk) {
				d.SystemHive().SetDWORD("Select", "Current", 2)
				d.SystemHive().SetDWORD(`ControlSet002\Control\CrashControl`, "CrashDumpEnabled", 2)
			},
			wantDump: "os", wantType: agent.DumpKernel, wantMini: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, nil, winsim.LocalOptions{})
			spec := vmSpec(t, r.sim.Fleet(), tc.vm)
			copyID, boot := bootOn(t, r, tc.vm, func(d *wintest.Disk) {
				setCrashControl(tc.values)(d)
				if tc.before != nil {
					tc.before(d)
				}
			})
			if boot.Outcome != winsim.OutcomeCrashed || !strings.Contains(boot.NoDump, tc.wantNoDump) {
				t.Fatalf("boot = %+v, want crashed (no dump: %q)", boot, tc.wantNoDump)
			}
			checkCrashEvent(t, r.events.all(), r.sim.Fleet().VMID(tc.vm), boot.EventID)
			if (boot.Minidump != "") != tc.wantMini {
				t.Errorf("minidump = %q, want one: %v", boot.Minidump, tc.wantMini)
			}
			if tc.wantDump == "" {
				if boot.Dump != nil {
					t.Errorf("a dump was written: %+v", boot.Dump)
				}
				return
			}
			if boot.Dump == nil || boot.Dump.Type != tc.wantType {
				t.Fatalf("dump = %+v, want a %s dump", boot.Dump, tc.wantType)
			}
			wantDisk := copyID
			if tc.wantDump == "data" {
				vm, _ := r.sim.State().VM(r.sim.Fleet().VMID(tc.vm))
				wantDisk = vm.DataDisks[0].DiskID
			}
			if !strings.EqualFold(boot.Dump.DiskID, wantDisk) {
				t.Errorf("dump on disk %s, want %s", boot.Dump.DiskID, wantDisk)
			}
			r.diskView(boot.Dump.DiskID, func(d *winsim.Disk) {
				d.View(func(wd *wintest.Disk) {
					var f *wintest.File
					for _, p := range wd.Partitions {
						if x := p.File(boot.Dump.Path); x != nil {
							f = x
						}
					}
					if f == nil {
						t.Fatalf("no %s on disk %s", boot.Dump.Path, boot.Dump.DiskID)
					}
					h, err := dumpfile.ParseBytes(f.Data)
					if err != nil || h.BugCheckCode != uint32(spec.BugCheck) || h.RequiredBytes != uint64(boot.Dump.RealBytes) {
						t.Errorf("dump header %+v (%v), want stop 0x%X, RequiredDumpSpace %d", h, err, uint32(spec.BugCheck), boot.Dump.RealBytes)
					}
				})
			})
			if ch := r.sim.State().ChangedOriginalDisks(); len(ch) != 0 {
				t.Errorf("original OS disks changed: %v", ch)
			}
		})
	}
}

// TestCrashOnOriginalDisk starts VMs on their original OS disks: they crash (even
// healthy-after-patch, which needs the patch), raise the event, and nothing is written to the
// original.
func TestCrashOnOriginalDisk(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"app-web-01", "app-api-01", "app-batch-01"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, nil, winsim.LocalOptions{})
			vmID := r.sim.Fleet().VMID(name)
			rg := resourceGroupOf(vmID)
			r.deallocate(rg, name)
			r.start(rg, name)
			b, err := r.w.WaitBoot(ctxT(t), vmID, 1)
			if err != nil {
				t.Fatal(err)
			}
			if b.Outcome != winsim.OutcomeCrashed || b.Dump != nil || b.Minidump != "" || !strings.Contains(b.NoDump, "original") {
				t.Errorf("boot on the original disk = %+v", b)
			}
			checkCrashEvent(t, r.events.all(), vmID, b.EventID)
			if ch := r.sim.State().ChangedOriginalDisks(); len(ch) != 0 {
				t.Errorf("original OS disks changed: %v", ch)
			}
		})
	}
}

// TestBootInterrupted deallocates a VM while its guest boots: the boot ends without a crash,
// dump or event.
func TestBootInterrupted(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil, winsim.LocalOptions{
		// Only the guest's boot takes time: 2 s at time scale 1.
		Sim:   azsim.Options{TimeScale: 1, Latency: azsim.LatencyTable{}},
		World: winsim.Options{Latency: azsim.LatencyTable{winsim.LatencyBoot: 2 * time.Second}},
	})
	name := "app-web-01"
	vmID := r.sim.Fleet().VMID(name)
	rg := resourceGroupOf(vmID)
	r.deallocate(rg, name)
	r.start(rg, name)
	r.deallocate(rg, name)
	b, err := r.w.WaitBoot(ctxT(t), vmID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if b.Outcome != winsim.OutcomeInterrupted || b.EventID != "" || len(r.events.all()) != 0 {
		t.Errorf("boot = %+v, events %d; want interrupted without an event", b, len(r.events.all()))
	}
}

// TestFirstLookHarvest is the path where MEMORY.DMP is already on the disk: inspect finds it
// with its stop code on a gen1 disk whose identity collides with the rescue VM's, and harvest
// through Run Command uploads it, the minidump and the manifest.
func TestFirstLookHarvest(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil, winsim.LocalOptions{})
	name, rescue := "app-batch-01", "vmrescue-rescue-1"
	vmID := r.sim.Fleet().VMID(name)
	rg := resourceGroupOf(vmID)
	spec := vmSpec(t, r.sim.Fleet(), name)
	size, _ := azsim.LookupSize(spec.Size)
	vm := r.vm(name)
	inc := newIncident()
	r.deallocate(rg, name)
	copyID := r.copyDisk(rg, inc+"-rescue", *vm.Properties.StorageProfile.OSDisk.ManagedDisk.ID, spec.Zone)
	r.attachDetach(rescue, copyID, 3, true)
	ins := r.runAgent(rescue, inc+"-inspect", agent.Request{Command: agent.CommandInspect, IncidentID: inc, LUN: 3, MemoryGB: size.MemoryGB})
	if !ins.OK || !ins.HasMemoryDump() {
		t.Fatalf("inspect = ok %v, dumps %+v (%s)", ins.OK, ins.Dumps, ins.Error)
	}
	md := ins.Dumps.MemoryDump
	if md.BugCheck == nil || md.BugCheck.Code != uint32(spec.BugCheck) || md.DumpType != "bitmap-kernel" || ins.Dumps.MinidumpCount != 1 {
		t.Errorf("inspect memory dump = %+v, minidumps %d; want stop 0x%X, bitmap-kernel, 1 minidump", md, ins.Dumps.MinidumpCount, uint32(spec.BugCheck))
	}
	if ins.Disk.Generation != agent.Gen1 || ins.Disk.Collision == nil || !ins.Disk.Collision.Restored {
		t.Errorf("inspect disk = %+v; want gen1 with a restored collision", ins.Disk)
	}
	if ins.CrashControl == nil || ins.CrashControl.Sets[0].CrashDumpEnabled == nil || *ins.CrashControl.Sets[0].CrashDumpEnabled != 7 {
		t.Errorf("crash control = %+v; want Azure's default CrashDumpEnabled=7", ins.CrashControl)
	}
	res := r.runAgent(rescue, inc+"-harvest", agent.Request{Command: agent.CommandHarvest, IncidentID: inc, LUN: 3, SASURL: r.prefixSAS(inc)})
	if !res.OK || res.Harvest == nil || !res.Harvest.Complete || res.Harvest.Files != 2 {
		t.Fatalf("harvest = ok %v %+v (%s)", res.OK, res.Harvest, res.Error)
	}
	checkHarvested(t, r, inc, uint32(spec.BugCheck), true)
	if ch := r.sim.State().ChangedOriginalDisks(); len(ch) != 0 {
		t.Errorf("original OS disks changed: %v", ch)
	}
	// The machine keeps the disk attached, offline, between runs; a detach in ARM reaches it at
	// the next run.
	m := r.w.Machine(r.sim.Fleet().VMID(rescue))
	if d := m.DiskAt(3); d == nil || !d.Offline() {
		t.Errorf("rescue VM's Windows: disk at LUN 3 = %v, want attached and offline", d)
	}
	r.attachDetach(rescue, copyID, 3, false)
	bad := r.runAgent(rescue, inc+"-again", agent.Request{Command: agent.CommandInspect, IncidentID: inc, LUN: 3, MemoryGB: size.MemoryGB})
	if bad.OK || m.DiskAt(3) != nil {
		t.Errorf("inspect after the detach = ok %v (%s); disk at LUN 3 = %v", bad.OK, bad.Error, m.DiskAt(3))
	}
}
