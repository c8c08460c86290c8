package wintest

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
)

func TestBCDRoundTrip(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "bcd", "*.txt"))
	if len(files) < 6 {
		t.Fatalf("only %d recorded stores", len(files))
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s, err := LoadBCD(string(raw))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if got := s.Render(); got != string(raw) {
			t.Errorf("%s: rendering differs from the recording", filepath.Base(f))
		}
		again, err := LoadBCD(s.Render())
		if err != nil || !reflect.DeepEqual(again.Entries, s.Entries) {
			t.Errorf("%s: round trip changed the store", filepath.Base(f))
		}
	}
	for _, gen := range []string{agent.Gen1, agent.Gen2} {
		s := DefaultBCD(gen)
		entries, err := agent.ParseBCDEnum(s.Render())
		if err != nil || !reflect.DeepEqual(entries, s.Entries) {
			t.Errorf("%s default store does not round-trip: %v", gen, err)
		}
		if l, _, err := agent.ChooseLoader(entries); err != nil || l.ID != DefaultLoaderID {
			t.Errorf("%s default store: loader %s, %v", gen, l.ID, err)
		}
	}
}

func TestListingRoundTrip(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "disks", "*.json"))
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		want, err := agent.ParseDisks(raw)
		if err != nil {
			t.Fatal(err)
		}
		m, err := NewMachineFromListing(raw)
		if err != nil {
			t.Fatal(err)
		}
		out, err := m.ListDisks(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got, err := agent.ParseDisks(out)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			w, g := want[i], got[i]
			if w.Number != g.Number || *w.Lun != *g.Lun || *w.ScsiPort != *g.ScsiPort || w.Identity() != g.Identity() ||
				w.IsOffline != g.IsOffline || w.OfflineReason != g.OfflineReason || len(w.Partitions) != len(g.Partitions) {
				t.Errorf("%s disk %d: got %+v", filepath.Base(f), w.Number, g)
				continue
			}
			for j := range w.Partitions {
				if w.Partitions[j].Letter() != g.Partitions[j].Letter() || w.Partitions[j].IsESP() != g.Partitions[j].IsESP() ||
					w.Partitions[j].IsDataVolume() != g.Partitions[j].IsDataVolume() || w.Partitions[j].IsActive != g.Partitions[j].IsActive {
					t.Errorf("%s disk %d partition %d differs", filepath.Base(f), w.Number, j+1)
				}
			}
		}
	}
}

func TestRegRendering(t *testing.T) {
	t.Parallel()
	m := NewMachine()
	d := NewWindowsDisk(WindowsDiskSpec{ControlSets: []int{1, 2}, Current: 2})
	if _, err := m.Attach(d, 0); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m.ResignOnOnline = true
	if err := m.SetDiskOffline(ctx, d.Number(), false); err != nil {
		t.Fatal(err)
	}
	win := d.WindowsPartition().Letter()
	if _, err := m.Reg(ctx, "load", `HKLM\T`, win+`\Windows\System32\config\SYSTEM`); err != nil {
		t.Fatal(err)
	}
	// The hive file is locked while loaded.
	if _, err := m.Open(win + `\Windows\System32\config\SYSTEM`); err == nil {
		t.Error("a loaded hive opened")
	}
	if _, err := m.Reg(ctx, "load", `HKLM\U`, win+`\Windows\System32\config\SYSTEM`); err == nil {
		t.Error("a hive loaded twice")
	}
	out, err := m.Reg(ctx, "query", `HKLM\T\Select`)
	if err != nil {
		t.Fatal(err)
	}
	k, err := agent.ParseRegQuery(out)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := k.Value("Current"); v.Data != "0x2" {
		t.Errorf("Current = %+v", v)
	}
	root, _ := m.Reg(ctx, "query", `HKLM\T`)
	rk, _ := agent.ParseRegQuery(root)
	if !strings.Contains(strings.Join(rk.Subkeys, ","), "ControlSet002") {
		t.Errorf("subkeys %v", rk.Subkeys)
	}
	if _, err := m.Reg(ctx, "add", `HKLM\T\ControlSet002\Control\CrashControl`, "/v", "NMICrashDump", "/t", "REG_DWORD", "/d", "1", "/f"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Reg(ctx, "add", `HKLM\T\X`, "/v", "Y", "/d", "1"); err == nil {
		t.Error("reg add without /t and /f accepted")
	}
	_, err = m.Reg(ctx, "query", `HKLM\T\Nope`)
	if !agent.IsNotFound(err) {
		t.Errorf("missing key: %v", err)
	}
	m.UnloadFailures = 1
	if _, err := m.Reg(ctx, "unload", `HKLM\T`); err == nil {
		t.Error("unload did not fail")
	}
	if _, err := m.Reg(ctx, "unload", `HKLM\T`); err != nil {
		t.Fatal(err)
	}
	if v, ok := d.SystemHive().DWORD(`ControlSet002\Control\CrashControl`, "NMICrashDump"); !ok || v != 1 {
		t.Error("the write did not reach the hive file")
	}
}

func TestCloneIsIndependent(t *testing.T) {
	t.Parallel()
	d := NewWindowsDisk(WindowsDiskSpec{Generation: agent.Gen2})
	c := d.Clone()
	c.SystemHive().SetDWORD(`ControlSet001\Control\CrashControl`, "CrashDumpEnabled", 1)
	c.BCDStore().Entries[0].Elements[0].Values[0] = "changed"
	if v, _ := d.SystemHive().DWORD(`ControlSet001\Control\CrashControl`, "CrashDumpEnabled"); v != 7 {
		t.Error("clone shares the hive")
	}
	if d.BCDStore().Entries[0].Elements[0].Values[0] == "changed" {
		t.Error("clone shares the store")
	}
}

func TestSparseFiles(t *testing.T) {
	t.Parallel()
	m := NewMachine()
	d := NewWindowsDisk(WindowsDiskSpec{FreeGB: 5})
	win := d.WindowsPartition()
	if err := win.WriteFile(`Windows\MEMORY.DMP`, []byte("PAGEDU64"), 6<<30, time.Now()); !errors.Is(err, errNoSpace) {
		t.Errorf("a 6 GiB file on 5 GiB free: %v", err)
	}
	if err := win.WriteFile(`Windows\MEMORY.DMP`, []byte("PAGEDU64"), 2<<30, time.Now()); err != nil {
		t.Fatal(err)
	}
	if win.Free != 3<<30 {
		t.Errorf("free %d", win.Free)
	}
	if _, err := m.Attach(d, 5); err != nil {
		t.Fatal(err)
	}
	m.ResignOnOnline = true
	if err := m.SetDiskOffline(context.Background(), d.Number(), false); err != nil {
		t.Fatal(err)
	}
	f, err := m.Open(win.Letter() + `\Windows\MEMORY.DMP`)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := f.ReadAt(buf, 0); n != 16 || err != nil || string(buf[:8]) != "PAGEDU64" || buf[8] != 0 {
		t.Errorf("head: %q %v", buf[:n], err)
	}
	if n, err := f.ReadAt(buf, 2<<30-4); n != 4 || err != io.EOF {
		t.Errorf("tail: %d %v", n, err)
	}
	infos, err := m.ReadDir(win.Letter() + `\Windows`)
	if err != nil || len(infos) != 2 || !infos[1].Dir || infos[0].Name != "MEMORY.DMP" {
		t.Errorf("ReadDir = %+v %v", infos, err)
	}
}
