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

func osDisk(t *testing.T, spec azsim.VMSpec) *winsim.Disk {
	t.Helper()
	c := winsim.OSDiskFor(spec, winsim.DefaultDumpScale, time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC))
	d, ok := c.(*winsim.Disk)
	if !ok {
		t.Fatalf("OSDiskFor(%s) = %T", spec.Name, c)
	}
	return d
}

func TestOSDiskFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		spec      azsim.VMSpec
		wantStyle string
		wantBCD   string // path of the store on its partition
		wantCDE   uint32 // CrashDumpEnabled in both control sets
		wantDump  bool
	}{
		{name: "gen2", spec: azsim.VMSpec{Name: "a", OSType: "Windows", HyperVGeneration: "V2", Size: "Standard_D2s_v5", OSDiskFreeGB: 40, BugCheck: 0x7E},
			wantStyle: "GPT", wantBCD: `EFI\Microsoft\Boot\BCD`, wantCDE: 0},
		{name: "gen1", spec: azsim.VMSpec{Name: "b", OSType: "Windows", HyperVGeneration: "V1", Size: "Standard_D2s_v3", OSDiskFreeGB: 0, OSDiskSizeGB: 64},
			wantStyle: "MBR", wantBCD: `Boot\BCD`, wantCDE: 0},
		{name: "dump present", spec: azsim.VMSpec{Name: "c", OSType: "Windows", HyperVGeneration: "V1", Size: "Standard_E8s_v5", OSDiskFreeGB: 60, DumpPresent: true, BugCheck: 0x3B},
			wantStyle: "MBR", wantBCD: `Boot\BCD`, wantCDE: 7, wantDump: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			osDisk(t, tc.spec).View(func(d *wintest.Disk) {
				size := tc.spec.OSDiskSizeGB
				if size == 0 {
					size = 127
				}
				if d.Style != tc.wantStyle || d.Size != int64(size)<<30 {
					t.Errorf("disk %s of %d bytes, want %s of %d GiB", d.Style, d.Size, tc.wantStyle, size)
				}
				if d.Style == "MBR" && d.Signature != wintest.RescueSignature || d.Style == "GPT" && d.GUID != wintest.DefaultGUID {
					t.Errorf("identity %s is not the image's", d.Identity())
				}
				win := d.WindowsPartition()
				if win == nil || win.Free != int64(tc.spec.OSDiskFreeGB*(1<<30)) {
					t.Fatalf("Windows partition %+v, want %v GiB free", win, tc.spec.OSDiskFreeGB)
				}
				found := false
				for _, p := range d.Partitions {
					if f := p.File(tc.wantBCD); f != nil && f.BCD != nil {
						found = true
					}
				}
				if !found || d.BCDStore() == nil {
					t.Errorf("no BCD store at %s", tc.wantBCD)
				}
				if _, _, err := agent.ChooseLoader(d.BCDStore().Entries); err != nil {
					t.Errorf("the store has no default loader: %v", err)
				}
				h := d.SystemHive()
				if cur, ok := h.DWORD("Select", "Current"); !ok || cur != 1 {
					t.Errorf(`Select\Current = %d, %v`, cur, ok)
				}
				for _, set := range []string{"ControlSet001", "ControlSet002"} {
					cc := set + `\Control\CrashControl`
					if v, ok := h.DWORD(cc, "CrashDumpEnabled"); !ok || v != tc.wantCDE {
						t.Errorf("%s CrashDumpEnabled = %d, %v; want %d", set, v, ok, tc.wantCDE)
					}
					if v, ok := h.Get(cc, "DumpFile"); !ok || v.Data != agent.DefaultDumpFile {
						t.Errorf("%s DumpFile = %+v", set, v)
					}
				}
				f := win.File(`Windows\MEMORY.DMP`)
				if (f != nil) != tc.wantDump {
					t.Fatalf("MEMORY.DMP present = %v, want %v", f != nil, tc.wantDump)
				}
				if f != nil {
					hd, err := dumpfile.ParseBytes(f.Data)
					mem := int64(64) << 30
					if err != nil || hd.BugCheckCode != uint32(tc.spec.BugCheck) || hd.RequiredBytes != uint64(mem/3) ||
						f.Size != int64(float64(mem/3)*winsim.DefaultDumpScale) {
						t.Errorf("MEMORY.DMP %d bytes, header %+v (%v)", f.Size, hd, err)
					}
					if len(win.Files()) == 0 || !strings.Contains(strings.Join(win.Files(), ","), `Windows\Minidump\`) {
						t.Errorf("no minidump beside the dump: %v", win.Files())
					}
				}
			})
		})
	}
	if c := winsim.OSDiskFor(azsim.VMSpec{Name: "l", OSType: "Linux", HyperVGeneration: "V2"}, 1, time.Now()); c != nil {
		t.Errorf("a Linux VM got %T", c)
	}
}

// TestDiskHash: any change to files, hive values, BCD elements, free space or identity changes
// the hash; a clone hashes the same and is independent; attaching to and detaching from a
// rescue VM's Windows does not count as a change.
func TestDiskHash(t *testing.T) {
	t.Parallel()
	spec := azsim.VMSpec{Name: "a", OSType: "Windows", HyperVGeneration: "V2", Size: "Standard_D2s_v5", OSDiskFreeGB: 40}
	changes := []struct {
		name string
		edit func(d *wintest.Disk)
	}{
		{"file written", func(d *wintest.Disk) {
			_ = d.WindowsPartition().WriteFile(`vmrescue\backup\x`, []byte("x"), 1, time.Unix(0, 0))
		}},
		{"hive value", func(d *wintest.Disk) {
			d.SystemHive().SetDWORD(`ControlSet002\Control\CrashControl`, "NMICrashDump", 1)
		}},
		{"BCD element", func(d *wintest.Disk) {
			e := d.BCDStore().Entry(agent.BCDBootMgr)
			e.Elements = append(e.Elements, agent.BCDElement{Name: "bootems", Values: []string{"Yes"}})
		}},
		{"free space", func(d *wintest.Disk) { d.WindowsPartition().Free-- }},
		{"identity", func(d *wintest.Disk) { d.GUID = "{00000000-0000-4000-8000-000000000001}" }},
	}
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			orig := osDisk(t, spec)
			before := orig.Hash()
			clone := orig.Clone().(*winsim.Disk)
			if clone.Hash() != before {
				t.Fatal("a clone hashes differently")
			}
			clone.View(tc.edit)
			if clone.Hash() == before {
				t.Errorf("%s: hash unchanged", tc.name)
			}
			if orig.Hash() != before {
				t.Errorf("%s on the clone changed the original", tc.name)
			}
			orig.View(tc.edit)
			if orig.Hash() != clone.Hash() {
				t.Error("the same change gives different hashes")
			}
		})
	}
	t.Run("attachment is not content", func(t *testing.T) {
		t.Parallel()
		d := osDisk(t, spec)
		before := d.Hash()
		m := wintest.NewMachine()
		d.View(func(wd *wintest.Disk) {
			if _, err := m.Attach(wd, 0); err != nil {
				t.Fatal(err)
			}
		})
		if err := m.SetDiskOffline(t.Context(), m.DiskAt(0).Number(), false); err != nil {
			t.Fatal(err)
		}
		if d.Hash() != before {
			t.Error("bringing the disk online (letters) changed its hash")
		}
		d.View(func(*wintest.Disk) { m.Detach(0) })
		if d.Hash() != before {
			t.Error("detach changed the hash")
		}
	})
}
