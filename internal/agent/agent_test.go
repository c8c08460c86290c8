package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/agent/wintest"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func TestMain(m *testing.M) { azuritetest.Main(m) }

const incidentID = "inc-20261120-031407-7f3c"

var clock = time.Date(2026, 11, 20, 3, 30, 0, 0, time.UTC)

// rig is an agent on a simulated rescue VM, with a deterministic clock and randomness and
// sleeps that are recorded instead of waited.
type rig struct {
	m      *wintest.Machine
	a      *agent.Agent
	mu     sync.Mutex
	sleeps []time.Duration
}

func newRig(m *wintest.Machine) *rig {
	r := &rig{m: m}
	m.Now = func() time.Time { return clock }
	r.a = &agent.Agent{
		Win:  m,
		Now:  func() time.Time { return clock },
		Rand: rand.NewChaCha8([32]byte{1}),
		Sleep: func(ctx context.Context, d time.Duration) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.sleeps = append(r.sleeps, d)
			return nil
		},
	}
	return r
}

// gen1Rig attaches a gen1 copy of the rescue VM's own image (colliding MBR signature) at LUN 0.
func gen1Rig(t *testing.T, spec wintest.WindowsDiskSpec) (*rig, *wintest.Disk) {
	t.Helper()
	m := wintest.NewMachine()
	d := wintest.NewWindowsDisk(spec)
	if _, err := m.Attach(d, 0); err != nil {
		t.Fatal(err)
	}
	return newRig(m), d
}

func req(cmd agent.Command) agent.Request {
	return agent.Request{Command: cmd, IncidentID: incidentID, LUN: 0, MemoryGB: 16}
}

func (r *rig) run(t *testing.T, q agent.Request) agent.Result {
	t.Helper()
	res := r.a.Run(context.Background(), q)
	if loaded := r.m.Loaded(); len(loaded) != 0 {
		t.Errorf("hives still loaded after the run: %v", loaded)
	}
	return res
}

// assertClosed checks what every run must leave behind: the disk offline with its original
// identity, no letter of the agent's left.
func assertClosed(t *testing.T, d *wintest.Disk, identity string, res agent.Result) {
	t.Helper()
	if !d.Offline() {
		t.Error("disk left online")
	}
	if d.Identity() != identity {
		t.Errorf("disk identity %s, want the original %s", d.Identity(), identity)
	}
	for _, p := range d.Partitions {
		if p.Letter() != "" {
			t.Errorf("partition %d keeps letter %s", p.Number, p.Letter())
		}
	}
	if res.Disk != nil && !res.Disk.LeftOffline {
		t.Error("result says the disk was left online")
	}
}

func hash(b []byte) string { s := sha256.Sum256(b); return fmt.Sprintf("%x", s[:8]) }

func diskFiles(d *wintest.Disk) (hive, bcd string) {
	for _, p := range d.Partitions {
		if f := p.File(`Windows\System32\config\SYSTEM`); f != nil {
			hive = hash(f.Bytes())
		}
		for _, path := range []string{`Boot\BCD`, `EFI\Microsoft\Boot\BCD`} {
			if f := p.File(path); f != nil {
				bcd = hash(f.Bytes())
			}
		}
	}
	return hive, bcd
}

func TestInspectGen1Collision(t *testing.T) {
	t.Parallel()
	r, d := gen1Rig(t, wintest.WindowsDiskSpec{})
	r.m.AutoMount = false // as on rescue VMs with automount disabled: the agent adds every letter
	orig := d.Identity()
	if orig != fmt.Sprintf("%08X", wintest.RescueSignature) {
		t.Fatalf("fixture: %s", orig)
	}
	res := r.run(t, req(agent.CommandInspect))
	if !res.OK {
		t.Fatalf("inspect failed: %s", res.Error)
	}
	assertClosed(t, d, orig, res)
	c := res.Disk.Collision
	if c == nil || !c.Restored || c.Kind != agent.CollisionMBRSignature || c.Original != orig || c.Temporary == orig || c.WithDisk != 0 {
		t.Errorf("collision = %+v", c)
	}
	if res.Disk.Generation != agent.Gen1 || !res.Disk.WasOffline || res.Disk.OfflineReason != agent.OfflineCollision {
		t.Errorf("disk = %+v", res.Disk)
	}
	if res.Windows.BCDStore != `Y:\Boot\BCD` || res.Windows.Volume != "Z:" || len(res.Windows.TempLetters) != 2 {
		t.Errorf("windows = %+v", res.Windows)
	}
	if cc := res.CrashControl; cc.Current != "ControlSet001" || *cc.Sets[0].CrashDumpEnabled != 7 {
		t.Errorf("crash control = %+v", cc)
	}
	if b := res.Boot; b.DefaultLoader != wintest.DefaultLoaderID || b.LoaderCount != 1 || b.BootEMS != nil || b.EMS != nil || *b.Timeout != 30 {
		t.Errorf("boot = %+v", b)
	}
	if res.Dumps.MemoryDump != nil || res.HasMemoryDump() {
		t.Error("found a dump on a clean disk")
	}
	if _, err := r.m.ReadFile(`C:\ProgramData\vmrescue\identity-` + incidentID + ".json"); err == nil {
		t.Error("identity record left behind")
	}
	checkResultGolden(t, "inspect", res)
}

func TestInspectFindsDumps(t *testing.T) {
	t.Parallel()
	r, d := gen1Rig(t, wintest.WindowsDiskSpec{})
	win := d.WindowsPartition()
	writeDump(t, win, `Windows\MEMORY.DMP`, 0xEF, 64<<20, clock.Add(-time.Hour))
	writeDump(t, win, `Windows\Minidump\112026-10000-01.dmp`, 0xEF, 1<<20, clock.Add(-time.Hour))
	writeDump(t, win, `Windows\Minidump\111926-9000-01.dmp`, 0x7E, 1<<20, clock.Add(-25*time.Hour))
	if err := win.WriteFile(`Windows\Minidump\notes.txt`, []byte("x"), 1, clock); err != nil {
		t.Fatal(err)
	}
	res := r.run(t, req(agent.CommandInspect))
	if !res.OK || !res.HasMemoryDump() {
		t.Fatalf("inspect: %+v", res)
	}
	md := res.Dumps.MemoryDump
	if md.Size != 64<<20 || md.BugCheck.Code != 0xEF || md.BugCheck.Name != "CRITICAL_PROCESS_DIED" || md.DumpType != "bitmap-kernel" {
		t.Errorf("memory dump = %+v", md)
	}
	if res.Dumps.MinidumpCount != 2 || !strings.HasSuffix(res.Dumps.Minidumps[0].Path, "112026-10000-01.dmp") || res.Dumps.Minidumps[1].BugCheck.Code != 0x7E {
		t.Errorf("minidumps = %+v", res.Dumps.Minidumps)
	}
}

// TestPatchUnlessDump: patch with UnlessDump does inspect's work first; a disk that already holds
// MEMORY.DMP is reported and left exactly as it was, and a disk without one is patched.
func TestPatchUnlessDump(t *testing.T) {
	t.Parallel()
	for _, withDump := range []bool{true, false} {
		t.Run(fmt.Sprint("dump ", withDump), func(t *testing.T) {
			t.Parallel()
			r, d := gen1Rig(t, wintest.WindowsDiskSpec{})
			if withDump {
				writeDump(t, d.WindowsPartition(), `Windows\MEMORY.DMP`, 0xEF, 64<<20, clock.Add(-time.Hour))
			}
			hive, bcd := diskFiles(d)
			q := req(agent.CommandPatch)
			q.UnlessDump = true
			res := r.run(t, q)
			if !res.OK {
				t.Fatalf("patch: %s", res.Error)
			}
			h2, b2 := diskFiles(d)
			switch {
			case withDump && (!res.HasMemoryDump() || res.Patch != nil):
				t.Errorf("dump found: want it reported and no patch, got dumps %+v patch %+v", res.Dumps, res.Patch)
			case withDump && (h2 != hive || b2 != bcd):
				t.Error("a disk with a dump was changed")
			case !withDump && (res.HasMemoryDump() || res.Patch == nil || !res.Patch.Verified):
				t.Errorf("no dump: want the disk patched, got %+v", res.Patch)
			case !withDump && (h2 == hive || b2 == bcd):
				t.Error("the hive or the BCD store is unchanged after the patch")
			}
		})
	}
}

func TestPatchThenInspect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec wintest.WindowsDiskSpec
		lun  int
	}{
		{"gen1", wintest.WindowsDiskSpec{}, 0},
		{"gen1 without System Reserved", wintest.WindowsDiskSpec{NoSystemReserved: true}, 0},
		{"gen2", wintest.WindowsDiskSpec{Generation: agent.Gen2}, 0},
		{"two control sets, current 2", wintest.WindowsDiskSpec{ControlSets: []int{1, 2}, Current: 2}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, d := gen1Rig(t, tc.spec)
			orig := d.Identity()
			res := r.run(t, req(agent.CommandPatch))
			if !res.OK {
				t.Fatalf("patch failed: %s", res.Error)
			}
			assertClosed(t, d, orig, res)
			p := res.Patch
			if !p.Verified || p.DumpType != agent.DumpComplete || p.CrashDumpEnabled != 1 || p.DumpFile != agent.DefaultDumpFile ||
				p.BCDChanges != 5 || p.UnloadAttempts != 1 || p.RolledBack {
				t.Errorf("patch = %+v", p)
			}
			sets := len(tc.spec.ControlSets)
			if sets == 0 {
				sets = 1
			}
			// CrashDumpEnabled, NMICrashDump and AlwaysKeepMemoryDump change; DumpFile, AutoReboot
			// and Overwrite already hold what patch wants and are not rewritten.
			if len(p.ControlSets) != sets || p.RegistryChanges != 3*sets {
				t.Errorf("control sets %v, %d registry changes", p.ControlSets, p.RegistryChanges)
			}
			if tc.spec.Current == 2 && p.ControlSets[0] != "ControlSet002" {
				t.Errorf("current set not first: %v", p.ControlSets)
			}

			// What a VM booting from this disk would see.
			h := d.SystemHive()
			for _, set := range p.ControlSets {
				cc := set + `\Control\CrashControl`
				for name, want := range map[string]uint32{"CrashDumpEnabled": 1, "NMICrashDump": 1, "AutoReboot": 1, "Overwrite": 1, "AlwaysKeepMemoryDump": 1} {
					if v, ok := h.DWORD(cc, name); !ok || v != want {
						t.Errorf("%s %s = %d, %t", set, name, v, ok)
					}
				}
				if v, _ := h.Get(cc, "DumpFile"); v.Type != "REG_EXPAND_SZ" || v.Data != agent.DefaultDumpFile {
					t.Errorf("%s DumpFile = %+v", set, v)
				}
			}
			store := d.BCDStore()
			bm, loader, ems := store.Entry("{bootmgr}"), store.Entry(wintest.DefaultLoaderID), store.Entry("{emssettings}")
			for _, c := range []struct {
				e          *agent.BCDEntry
				name, want string
			}{{bm, "displaybootmenu", "Yes"}, {bm, "timeout", "5"}, {bm, "bootems", "Yes"}, {loader, "ems", "Yes"},
				{ems, "emsport", "1"}, {ems, "emsbaudrate", "115200"}} {
				if v, _ := c.e.Get(c.name); v != c.want {
					t.Errorf("BCD %s %s = %q, want %q", c.e.ID, c.name, v, c.want)
				}
			}
			if v, _ := store.Entry(wintest.RecoveryID).Get("ems"); v != "" {
				t.Error("EMS turned on for the recovery loader")
			}

			// inspect reads it all back; a second patch changes nothing and keeps the first backup.
			in := r.run(t, req(agent.CommandInspect))
			if !in.OK || *in.Boot.EMS != true || *in.Boot.Timeout != 5 || *in.CrashControl.Sets[0].NMICrashDump != 1 {
				t.Fatalf("inspect after patch: %+v", in)
			}
			again := r.run(t, req(agent.CommandPatch))
			if !again.OK || again.Patch.RegistryChanges != 0 || again.Patch.BCDChanges != 0 || !strings.Contains(strings.Join(again.Warnings, ";"), "kept the backup") {
				t.Errorf("second patch = %+v, warnings %v", again.Patch, again.Warnings)
			}
			assertClosed(t, d, orig, again)
			if tc.name == "gen1" {
				checkResultGolden(t, "patch", res)
			}
		})
	}
}

func TestPatchDumpPlacement(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		freeGB   float64
		data     []agent.DataVolume
		dumpType string
		typ      string
		file     string
	}{
		{"room on the OS volume", 40, nil, "", agent.DumpComplete, agent.DefaultDumpFile},
		{"data volume", 10, []agent.DataVolume{{Volume: "E:", FreeBytes: 200 << 30}}, "", agent.DumpComplete, `E:\MEMORY.DMP`},
		{"kernel for lack of room", 10, nil, "", agent.DumpKernel, agent.DefaultDumpFile},
		{"kernel asked for", 40, nil, agent.DumpKernel, agent.DumpKernel, agent.DefaultDumpFile},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, d := gen1Rig(t, wintest.WindowsDiskSpec{FreeGB: tc.freeGB})
			q := req(agent.CommandPatch)
			q.DataVolumes, q.DumpType = tc.data, tc.dumpType
			res := r.run(t, q)
			if !res.OK {
				t.Fatal(res.Error)
			}
			if res.Patch.DumpType != tc.typ || res.Patch.DumpFile != tc.file || res.Patch.Reason == "" {
				t.Errorf("patch = %+v", res.Patch)
			}
			v, _ := d.SystemHive().Get(`ControlSet001\Control\CrashControl`, "DumpFile")
			n, _ := d.SystemHive().DWORD(`ControlSet001\Control\CrashControl`, "CrashDumpEnabled")
			if v.Data != tc.file || (tc.typ == agent.DumpKernel) != (n == 2) {
				t.Errorf("hive holds %s, %d", v.Data, n)
			}
			var space int
			for _, vol := range res.Space.Volumes {
				if vol.Role == agent.RoleOS && vol.FitsComplete != (tc.freeGB >= 17) {
					t.Errorf("OS volume fits = %t", vol.FitsComplete)
				}
				space++
			}
			if space != 2+len(tc.data) {
				t.Errorf("%d volumes reported", space)
			}
		})
	}
}

func TestPatchRollsBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(m *wintest.Machine)
		inError string
	}{
		{"reg add fails", func(m *wintest.Machine) { m.Fail("/v NMICrashDump", 1, "Access is denied.") }, "NMICrashDump"},
		{"bcdedit /ems fails", func(m *wintest.Machine) { m.Fail("bcdedit /ems", 1, "The parameter is incorrect.") }, "loader ems"},
		{"bcdedit /emssettings fails", func(m *wintest.Machine) { m.Fail("bcdedit /emssettings", 1, "An error occurred.") }, "emssettings"},
		{"read back of the store fails", func(m *wintest.Machine) { m.FailAfter("bcdedit /enum", 1, 1, "The store is locked.") }, "read back"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, d := gen1Rig(t, wintest.WindowsDiskSpec{ControlSets: []int{1, 2}})
			hive0, bcd0 := diskFiles(d)
			orig := d.Identity()
			tc.setup(r.m)
			res := r.run(t, req(agent.CommandPatch))
			if res.OK || res.Refused || !strings.Contains(res.Error, tc.inError) {
				t.Fatalf("result ok=%t refused=%t error=%q", res.OK, res.Refused, res.Error)
			}
			if !res.Patch.RolledBack || res.Patch.RollbackError != "" || res.Patch.Verified {
				t.Errorf("patch = %+v", res.Patch)
			}
			if hive, bcd := diskFiles(d); hive != hive0 || bcd != bcd0 {
				t.Errorf("files not restored: hive %s→%s, BCD %s→%s", hive0, hive, bcd0, bcd)
			}
			assertClosed(t, d, orig, res)
		})
	}
}

func TestUnloadRetries(t *testing.T) {
	t.Parallel()
	r, d := gen1Rig(t, wintest.WindowsDiskSpec{})
	r.m.UnloadFailures = 2
	res := r.run(t, req(agent.CommandPatch))
	if !res.OK {
		t.Fatal(res.Error)
	}
	if fmt.Sprint(r.sleeps) != "[1s 2s]" {
		t.Errorf("waits %v, want [1s 2s]", r.sleeps)
	}

	// A hive that never lets go: the run fails (not refused) and leaves the files as they were.
	r2, d2 := gen1Rig(t, wintest.WindowsDiskSpec{})
	hive0, bcd0 := diskFiles(d2)
	r2.m.UnloadFailures = 100
	res = r2.a.Run(context.Background(), req(agent.CommandPatch))
	if res.OK || res.Refused || !strings.Contains(res.Error, "after 6 attempts") {
		t.Fatalf("result %+v", res)
	}
	if fmt.Sprint(r2.sleeps) != "[1s 2s 4s 8s 8s]" {
		t.Errorf("waits %v", r2.sleeps)
	}
	if hive, bcd := diskFiles(d2); hive != hive0 || bcd != bcd0 {
		t.Error("files changed")
	}
	// The next run unloads the hive the last one left, and works.
	r2.m.UnloadFailures = 0
	res = r2.run(t, req(agent.CommandPatch))
	if !res.OK || !strings.Contains(strings.Join(res.Warnings, ";"), "left loaded by an earlier run") {
		t.Fatalf("next run: %s %v", res.Error, res.Warnings)
	}
	_ = d
}

func TestPatchRollbackWhenUnloadFailsLate(t *testing.T) {
	t.Parallel()
	r, d := gen1Rig(t, wintest.WindowsDiskSpec{})
	hive0, bcd0 := diskFiles(d)
	orig := d.Identity()
	// inspect's unload succeeds; patch's fails all six times after the writes; the rollback's
	// unload then succeeds and the backups go back.
	r.m.FailAfter("reg unload", 1, 6, "ERROR: Access is denied.")
	res := r.run(t, req(agent.CommandPatch))
	if res.OK || res.Refused || !strings.Contains(res.Error, "after 6 attempts") || !res.Patch.RolledBack {
		t.Fatalf("result %q %+v", res.Error, res.Patch)
	}
	if res.Patch.RegistryChanges == 0 {
		t.Error("the failure came before the writes")
	}
	if hive, bcd := diskFiles(d); hive != hive0 || bcd != bcd0 {
		t.Error("files not restored")
	}
	if fmt.Sprint(r.sleeps) != "[1s 2s 4s 8s 8s]" {
		t.Errorf("waits %v", r.sleeps)
	}
	assertClosed(t, d, orig, res)
}

func TestRestore(t *testing.T) {
	t.Parallel()
	r, d := gen1Rig(t, wintest.WindowsDiskSpec{Generation: agent.Gen2})
	hive0, bcd0 := diskFiles(d)
	if res := r.run(t, req(agent.CommandRestore)); res.OK || !res.Refused || !strings.Contains(res.Error, "no backup") {
		t.Fatalf("restore before patch: %+v", res)
	}
	if res := r.run(t, req(agent.CommandPatch)); !res.OK {
		t.Fatal(res.Error)
	}
	if hive, bcd := diskFiles(d); hive == hive0 || bcd == bcd0 {
		t.Fatal("patch changed nothing")
	}
	res := r.run(t, req(agent.CommandRestore))
	if !res.OK || !res.Restore.Verified || len(res.Restore.Restored) != 2 {
		t.Fatalf("restore: %+v %+v", res, res.Restore)
	}
	if hive, bcd := diskFiles(d); hive != hive0 || bcd != bcd0 {
		t.Error("restore did not bring the original files back")
	}
	checkResultGolden(t, "restore", res)
	if again := r.run(t, req(agent.CommandRestore)); !again.OK {
		t.Errorf("second restore: %s", again.Error)
	}
	// A damaged backup is refused, not restored.
	win := d.WindowsPartition()
	if err := win.WriteFile(`vmrescue\backup\SYSTEM`, []byte("garbage"), 7, clock); err != nil {
		t.Fatal(err)
	}
	if bad := r.run(t, req(agent.CommandRestore)); bad.OK || !strings.Contains(bad.Error, "damaged") {
		t.Errorf("damaged backup: %+v", bad)
	}
}

func TestCollisions(t *testing.T) {
	t.Parallel()
	t.Run("Windows picks the identity", func(t *testing.T) {
		t.Parallel()
		r, d := gen1Rig(t, wintest.WindowsDiskSpec{})
		r.m.RefuseOfflineIdentityChange, r.m.ResignOnOnline = true, true
		orig := d.Identity()
		res := r.run(t, req(agent.CommandPatch))
		if !res.OK {
			t.Fatal(res.Error)
		}
		c := res.Disk.Collision
		if c == nil || !c.Restored || c.Temporary == "" || c.Temporary == orig {
			t.Errorf("collision = %+v", c)
		}
		assertClosed(t, d, orig, res)
	})
	t.Run("disk cannot come online", func(t *testing.T) {
		t.Parallel()
		r, d := gen1Rig(t, wintest.WindowsDiskSpec{})
		r.m.RefuseOfflineIdentityChange = true
		orig := d.Identity()
		hive0, bcd0 := diskFiles(d)
		res := r.run(t, req(agent.CommandPatch))
		if res.OK || !strings.Contains(res.Error, "online") {
			t.Fatalf("result %+v", res)
		}
		assertClosed(t, d, orig, res)
		if hive, bcd := diskFiles(d); hive != hive0 || bcd != bcd0 {
			t.Error("files changed")
		}
	})
	t.Run("Windows changes the identity unasked", func(t *testing.T) {
		t.Parallel()
		m := machineFromListing(t, "gen2-offline.json")
		d := m.DiskAt(1)
		_ = wintest.InstallWindows(d, wintest.WindowsDiskSpec{})
		m.AlwaysResign = true
		orig := d.Identity()
		res := newRig(m).run(t, agent.Request{Command: agent.CommandInspect, LUN: 1, MemoryGB: 8})
		if !res.OK {
			t.Fatal(res.Error)
		}
		if c := res.Disk.Collision; c == nil || c.WithDisk != -1 || !c.Restored || c.Original != orig {
			t.Errorf("collision = %+v", c)
		}
		assertClosed(t, d, orig, res)
	})
	t.Run("gen2 GUID collision", func(t *testing.T) {
		t.Parallel()
		m := machineFromListing(t, "gen2-collision.json")
		d := m.DiskAt(1)
		if err := wintest.InstallWindows(d, wintest.WindowsDiskSpec{}); err != nil {
			t.Fatal(err)
		}
		r := newRig(m)
		orig := d.Identity()
		q := req(agent.CommandPatch)
		q.LUN = 1
		res := r.run(t, q)
		if !res.OK {
			t.Fatal(res.Error)
		}
		if c := res.Disk.Collision; c == nil || c.Kind != agent.CollisionGPTGUID || !c.Restored {
			t.Errorf("collision = %+v", c)
		}
		if res.Windows.BCDStore != `Z:\EFI\Microsoft\Boot\BCD` {
			t.Errorf("store %s", res.Windows.BCDStore)
		}
		assertClosed(t, d, orig, res)
	})
	t.Run("unexplained collision is refused", func(t *testing.T) {
		t.Parallel()
		m := machineFromListing(t, "collision-unexplained.json")
		d := m.DiskAt(0)
		_ = wintest.InstallWindows(d, wintest.WindowsDiskSpec{})
		res := newRig(m).run(t, req(agent.CommandPatch))
		if res.OK || !res.Refused || !strings.Contains(res.Error, "no disk shares") {
			t.Fatalf("result %+v", res)
		}
		if !d.Offline() {
			t.Error("refused disk brought online")
		}
	})
	t.Run("an earlier run died with the identity changed", func(t *testing.T) {
		t.Parallel()
		r, d := gen1Rig(t, wintest.WindowsDiskSpec{})
		orig := d.Identity()
		d.Signature = 0x12345678 // the temporary identity the dead run wrote
		rec := fmt.Sprintf(`{"disk":2,"withDisk":0,"kind":"mbr-signature","original":%q}`, orig)
		if err := r.m.MkdirAll(`C:\ProgramData\vmrescue`); err != nil {
			t.Fatal(err)
		}
		if err := r.m.WriteFile(`C:\ProgramData\vmrescue\identity-`+incidentID+".json", []byte(rec)); err != nil {
			t.Fatal(err)
		}
		res := r.run(t, req(agent.CommandInspect))
		if !res.OK || res.Disk.Collision == nil || !res.Disk.Collision.Restored {
			t.Fatalf("result %+v", res)
		}
		assertClosed(t, d, orig, res)
		if _, err := r.m.Stat(`C:\ProgramData\vmrescue\identity-` + incidentID + ".json"); err == nil {
			t.Error("record kept")
		}
	})
}

func machineFromListing(t *testing.T, name string) *wintest.Machine {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "disks", name))
	if err != nil {
		t.Fatal(err)
	}
	m, err := wintest.NewMachineFromListing(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEFIPartitionWithoutLetter(t *testing.T) {
	t.Parallel()
	m := machineFromListing(t, "gen2-esp-noletter.json")
	d := m.DiskAt(1)
	if err := wintest.InstallWindows(d, wintest.WindowsDiskSpec{}); err != nil {
		t.Fatal(err)
	}
	res := newRig(m).run(t, agent.Request{Command: agent.CommandInspect, LUN: 1, MemoryGB: 8})
	if !res.OK {
		t.Fatal(res.Error)
	}
	if res.Disk.WasOffline || res.Windows.Volume != "F:" || len(res.Windows.TempLetters) != 1 || res.Windows.BCDStore != res.Windows.TempLetters[0]+`\EFI\Microsoft\Boot\BCD` {
		t.Errorf("windows = %+v", res.Windows)
	}
	if res.Windows.Loader != "winload.efi" || res.Disk.Generation != agent.Gen2 {
		t.Errorf("loader %s, generation %s", res.Windows.Loader, res.Disk.Generation)
	}
	if d.Partition(1).Letter() != "" {
		t.Error("the EFI partition keeps its temporary letter")
	}
}

func TestOfflineDiskByPolicy(t *testing.T) {
	t.Parallel()
	m := machineFromListing(t, "gen2-offline.json")
	d := m.DiskAt(1)
	_ = wintest.InstallWindows(d, wintest.WindowsDiskSpec{})
	res := newRig(m).run(t, agent.Request{Command: agent.CommandPatch, LUN: 1, MemoryGB: 8})
	if !res.OK || res.Disk.Collision != nil || !res.Disk.WasOffline || res.Disk.OfflineReason != "Policy" {
		t.Fatalf("result %s %+v", res.Error, res.Disk)
	}
	assertClosed(t, d, d.Identity(), res)
}

func TestLoaderChoiceOnDisk(t *testing.T) {
	t.Parallel()
	load := func(name string) *wintest.BCDStore {
		raw, err := os.ReadFile(filepath.Join("testdata", "bcd", name))
		if err != nil {
			t.Fatal(err)
		}
		s, err := wintest.LoadBCD(string(raw))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("the default, not the first in displayorder", func(t *testing.T) {
		t.Parallel()
		r, d := gen1Rig(t, wintest.WindowsDiskSpec{BCD: load("several-loaders.txt")})
		res := r.run(t, req(agent.CommandPatch))
		if !res.OK {
			t.Fatal(res.Error)
		}
		store := d.BCDStore()
		if v, _ := store.Entry("{d91e0c44-5a7b-11ea-8c1e-000d3a6b2f08}").Get("ems"); v != "Yes" {
			t.Error("EMS not on for the default loader")
		}
		if v, _ := store.Entry("{c7b5a8e1-3f21-11e9-9d2a-000d3a4f7b91}").Get("ems"); v != "" {
			t.Error("EMS turned on for the first loader of displayorder")
		}
	})
	t.Run("no default among several: refused, nothing written", func(t *testing.T) {
		t.Parallel()
		r, d := gen1Rig(t, wintest.WindowsDiskSpec{BCD: load("no-default.txt")})
		hive0, bcd0 := diskFiles(d)
		res := r.run(t, req(agent.CommandPatch))
		if res.OK || !res.Refused || !strings.Contains(res.Error, "refusing to guess") {
			t.Fatalf("result %+v", res)
		}
		if hive, bcd := diskFiles(d); hive != hive0 || bcd != bcd0 {
			t.Error("files changed")
		}
		if _, err := r.m.Stat(res.Windows.Volume + `\vmrescue\backup`); err == nil {
			t.Error("a backup was made for a refused patch")
		}
	})
	t.Run("EMS already on", func(t *testing.T) {
		t.Parallel()
		r, _ := gen1Rig(t, wintest.WindowsDiskSpec{BCD: load("ems-on.txt")})
		res := r.run(t, req(agent.CommandPatch))
		if !res.OK || res.Patch.BCDChanges != 0 || !res.Patch.Verified {
			t.Fatalf("result %s %+v", res.Error, res.Patch)
		}
	})
}

// TestArguments checks the calls the agent makes: reg and bcdedit get each value as its own
// argument, the store is always named (the rescue VM's own is never touched), and hives load
// under the agent's prefix.
func TestArguments(t *testing.T) {
	t.Parallel()
	r, _ := gen1Rig(t, wintest.WindowsDiskSpec{})
	q := req(agent.CommandPatch)
	q.DataVolumes = []agent.DataVolume{{Volume: "E:", FreeBytes: 1 << 40}}
	if res := r.run(t, q); !res.OK {
		t.Fatal(res.Error)
	}
	load := regexp.MustCompile(`^reg load HKLM\\VMRESCUE_[0-9A-F]{8} [E-Z]:\\Windows\\System32\\config\\SYSTEM$`)
	add := regexp.MustCompile(`^reg add HKLM\\VMRESCUE_[0-9A-F]{8}\\ControlSet001\\Control\\CrashControl /v [A-Za-z]+ /t REG_(DWORD|EXPAND_SZ) /d \S+ /f$`)
	var loads, adds, bcd int
	for _, c := range r.m.Calls() {
		switch {
		case strings.HasPrefix(c, "reg load"):
			loads++
			if !load.MatchString(c) {
				t.Errorf("call %q", c)
			}
		case strings.HasPrefix(c, "reg add"):
			adds++
			if !add.MatchString(c) {
				t.Errorf("call %q", c)
			}
		case strings.HasPrefix(c, "bcdedit"):
			bcd++
		}
		if strings.ContainsAny(c, "\"'&|;`$") {
			t.Errorf("call %q holds shell syntax", c)
		}
	}
	if loads != 2 || adds != 3 || bcd != 7 { // inspect's and patch's loads; 3 values; 2 enums and 5 settings
		t.Errorf("%d loads, %d adds, %d bcdedit calls", loads, adds, bcd)
	}
}

func TestCLI(t *testing.T) {
	t.Parallel()
	r, _ := gen1Rig(t, wintest.WindowsDiskSpec{})
	tests := []struct {
		name string
		args []string
		env  map[string]string
		code int
		ok   bool
	}{
		{"refused: nothing to restore", []string{"restore", "--lun", "0"}, nil, agent.ExitRefused, false},
		{"inspect", []string{"inspect", "--lun", "0", "--memory-gb", "16", "--incident", incidentID}, nil, agent.ExitOK, true},
		{"request in the environment", []string{"--request-env"}, map[string]string{agent.RequestEnv: `{"command":"patch","lun":0,"memoryGB":16}`}, agent.ExitOK, true},
		{"failed: nothing at the LUN", []string{"inspect", "--lun", "9", "--memory-gb", "16"}, nil, agent.ExitFailed, false},
		{"bad flag", []string{"patch", "--lun", "0", "--memory-gb", "16", "--dump-type", "full"}, nil, agent.ExitUsage, false},
		{"unknown command", []string{"format", "--lun", "0"}, nil, agent.ExitUsage, false},
		{"empty environment", []string{"--request-env"}, nil, agent.ExitUsage, false},
		{"bad data volume", []string{"patch", "--lun", "0", "--memory-gb", "1", "--data-volume", "E:"}, nil, agent.ExitUsage, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := r.a.CLI(context.Background(), tc.args, func(k string) string { return tc.env[k] }, &out, &errOut)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tc.code, errOut.String())
			}
			res, err := agent.ParseResult(out.String())
			if err != nil {
				t.Fatalf("no result line: %v\n%s", err, out.String())
			}
			if res.OK != tc.ok {
				t.Errorf("ok %t: %s", res.OK, res.Error)
			}
			// The full result precedes the line and is valid JSON.
			full := strings.TrimSuffix(out.String(), res.Line()+"\n")
			var again agent.Result
			if err := json.Unmarshal([]byte(full), &again); err != nil || again.Command != res.Command {
				t.Errorf("full result: %v", err)
			}
		})
	}
}

// checkResultGolden compares the result's full JSON and its line with testdata/results.
func checkResultGolden(t *testing.T, name string, res agent.Result) {
	t.Helper()
	full, _ := json.MarshalIndent(res, "", "  ")
	for file, got := range map[string]string{name + ".json": string(full) + "\n", name + ".line": res.Line() + "\n"} {
		path := filepath.Join("testdata", "results", file)
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		if got != string(want) {
			t.Errorf("%s differs from the golden file:\n%s", file, got)
		}
	}
}
