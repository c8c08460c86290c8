package agent

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func isRefusal(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}

func TestParseBCDEnumRecorded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file    string
		entries int
		loaders int
		def     string
	}{
		{"gen1.txt", 13, 1, "{c7b5a8e1-3f21-11e9-9d2a-000d3a4f7b91}"},
		{"gen2.txt", 10, 1, "{4f0e9d2a-0a4d-11ec-8f3d-806e6f6e6963}"},
		{"several-loaders.txt", 14, 2, "{d91e0c44-5a7b-11ea-8c1e-000d3a6b2f08}"},
		{"ems-on.txt", 13, 1, "{c7b5a8e1-3f21-11e9-9d2a-000d3a4f7b91}"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			text := readTestdata(t, "bcd/"+tc.file)
			for _, variant := range []string{text, strings.ReplaceAll(text, "\n", "\r\n")} {
				entries, err := ParseBCDEnum(variant)
				if err != nil {
					t.Fatal(err)
				}
				if len(entries) != tc.entries {
					t.Errorf("%d entries, want %d", len(entries), tc.entries)
				}
				n := 0
				for _, e := range entries {
					if e.IsWindowsLoader() {
						n++
					}
				}
				if n != tc.loaders {
					t.Errorf("%d Windows loaders, want %d", n, tc.loaders)
				}
				bm, ok := FindBCDEntry(entries, "{bootmgr}")
				if !ok {
					t.Fatal("no boot manager")
				}
				if d, _ := bm.Get("default"); d != tc.def {
					t.Errorf("default %q, want %q", d, tc.def)
				}
			}
		})
	}
	entries, _ := ParseBCDEnum(readTestdata(t, "bcd/gen1.txt"))
	global, _ := FindBCDEntry(entries, "{globalsettings}")
	inherit := global.Elements[1]
	if inherit.Name != "inherit" || len(inherit.Values) != 3 || inherit.Values[1] != BCDEMSSettings {
		t.Errorf("multi-valued element: %+v", inherit)
	}
}

func TestParseBCDEnumRefuses(t *testing.T) {
	t.Parallel()
	for name, text := range map[string]string{
		"empty":           "",
		"message only":    "The boot configuration data store could not be opened.\r\n",
		"no identifier":   "\nWindows Boot Manager\n--------------------\ndevice  partition=C:\n",
		"orphan continue": "\nWindows Boot Manager\n--------------------\n   {x}\n",
	} {
		if _, err := ParseBCDEnum(text); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestChooseLoader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file    string
		want    string // loader id, or "" for a refusal
		inWhy   string
		refusal string
	}{
		{"gen1.txt", "{c7b5a8e1-3f21-11e9-9d2a-000d3a4f7b91}", "bootmgr default", ""},
		{"gen2.txt", "{4f0e9d2a-0a4d-11ec-8f3d-806e6f6e6963}", "bootmgr default", ""},
		// displayorder lists the other loader first; the default decides.
		{"several-loaders.txt", "{d91e0c44-5a7b-11ea-8c1e-000d3a6b2f08}", "bootmgr default", ""},
		{"no-default-one-loader.txt", "{c7b5a8e1-3f21-11e9-9d2a-000d3a4f7b91}", "one Windows loader", ""},
		{"no-default.txt", "", "", "2 Windows loaders"},
		{"default-missing.txt", "", "", "names no entry"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			entries, err := ParseBCDEnum(readTestdata(t, "bcd/"+tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, why, err := ChooseLoader(entries)
			if tc.want == "" {
				if !isRefusal(err) || !strings.Contains(err.Error(), tc.refusal) {
					t.Fatalf("err %v, want a refusal with %q", err, tc.refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tc.want || !strings.Contains(why, tc.inWhy) {
				t.Errorf("chose %s (%s), want %s", got.ID, why, tc.want)
			}
		})
	}
	// A default that names the recovery loader is refused.
	entries, _ := ParseBCDEnum(strings.Replace(readTestdata(t, "bcd/gen1.txt"),
		"default                 {c7b5a8e1", "default                 {c7b5a8e2", 1))
	if _, _, err := ChooseLoader(entries); !isRefusal(err) {
		t.Errorf("default on WinRE: %v", err)
	}
	if _, _, err := ChooseLoader(nil); !isRefusal(err) {
		t.Errorf("empty store: %v", err)
	}
}

func TestPlanBCD(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file    string
		pending []string
	}{
		{"gen1.txt", []string{"bootmgr displaybootmenu", "bootmgr timeout", "bootmgr bootems", "loader ems", "emssettings"}},
		{"ems-on.txt", nil},
	} {
		entries, _ := ParseBCDEnum(readTestdata(t, "bcd/"+tc.file))
		loader, _, err := ChooseLoader(entries)
		if err != nil {
			t.Fatal(err)
		}
		var pending []string
		for _, c := range planBCD(entries, loader) {
			if !c.ok {
				pending = append(pending, c.what)
			}
			for _, a := range c.args {
				if strings.ContainsAny(a, " \"'&|;") {
					t.Errorf("%s: argument %q is not a single token", c.what, a)
				}
			}
		}
		if !reflect.DeepEqual(pending, tc.pending) {
			t.Errorf("%s: pending %v, want %v", tc.file, pending, tc.pending)
		}
	}
}

func TestParseRegQueryRecorded(t *testing.T) {
	t.Parallel()
	sel, err := ParseRegQuery(readTestdata(t, "reg/select.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := sel.Value("current"); !ok || v.Type != "REG_DWORD" || v.Data != "0x2" {
		t.Errorf("Current = %+v", v)
	}
	root, err := ParseRegQuery(readTestdata(t, "reg/root.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(root.Values) != 0 || len(root.Subkeys) != 19 || root.Subkeys[1] != "ControlSet001" || root.Subkeys[7] != "Keyboard Layout" {
		t.Errorf("root = %+v", root)
	}
	cc, err := ParseRegQuery(readTestdata(t, "reg/crashcontrol.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got := crashControlFrom("ControlSet002", cc)
	if got.CrashDumpEnabled == nil || *got.CrashDumpEnabled != 7 || got.DumpFile != `%SystemRoot%\MEMORY.DMP` ||
		got.MinidumpDir != `%SystemRoot%\Minidump` || got.NMICrashDump != nil || *got.AutoReboot != 1 {
		t.Errorf("crash control = %+v", got)
	}
	if v, _ := cc.Value("DedicatedDumpFile"); v.Type != "REG_SZ" || v.Data != "" {
		t.Errorf("empty REG_SZ = %+v", v)
	}
	if len(cc.Subkeys) != 1 || cc.Subkeys[0] != "StorageTelemetry" {
		t.Errorf("subkeys %v", cc.Subkeys)
	}
	if _, err := ParseRegQuery("\r\nHKEY_LOCAL_MACHINE\\X\r\n    broken line\r\n"); err == nil {
		t.Error("unreadable value line accepted")
	}
}

func regKey(values map[string]uint32) RegKey {
	var k RegKey
	for name, v := range values {
		k.Values = append(k.Values, RegValue{Name: name, Type: "REG_DWORD", Data: "0x" + strings.ToLower(strings.TrimLeft(hex32(v), "0"))})
	}
	return k
}

func hex32(v uint32) string {
	const digits = "0123456789ABCDEF"
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = digits[v&0xF]
		v >>= 4
	}
	if s := string(b); strings.Trim(s, "0") == "" {
		return "00000000"
	}
	return string(b)
}

func TestChooseControlSets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		sel     map[string]uint32
		subkeys []string
		current string
		all     []string
		inWhy   string
	}{
		{"current is 1", map[string]uint32{"Current": 1, "Default": 1}, []string{"ControlSet001", "Select"}, "ControlSet001", []string{"ControlSet001"}, `Select\Current=1`},
		{"current is 2, not 001", map[string]uint32{"Current": 2, "Default": 2, "LastKnownGood": 3}, []string{"ControlSet001", "ControlSet002", "ControlSet003"},
			"ControlSet002", []string{"ControlSet002", "ControlSet001", "ControlSet003"}, `Select\Current=2`},
		{"names are case-insensitive", map[string]uint32{"Current": 1}, []string{"controlset001", "CONTROLSET002"}, "ControlSet001", []string{"ControlSet001", "ControlSet002"}, ""},
		{"current names an absent set", map[string]uint32{"Current": 4, "Default": 2}, []string{"ControlSet001", "ControlSet002"}, "ControlSet002", []string{"ControlSet002", "ControlSet001"}, `Select\Default=2`},
		{"no Select, one set", nil, []string{"ControlSet001"}, "ControlSet001", []string{"ControlSet001"}, "one control set"},
		{"no Select, two sets", nil, []string{"ControlSet001", "ControlSet002"}, "", nil, ""},
		{"no control set", map[string]uint32{"Current": 1}, []string{"Setup", "Select"}, "", nil, ""},
		{"ignores look-alikes", map[string]uint32{"Current": 1}, []string{"ControlSet001", "ControlSet01", "ControlSet0001", "CurrentControlSet"}, "ControlSet001", []string{"ControlSet001"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cur, all, why, err := ChooseControlSets(regKey(tc.sel), tc.subkeys)
			if tc.current == "" {
				if !isRefusal(err) {
					t.Fatalf("err %v, want a refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cur != tc.current || !reflect.DeepEqual(all, tc.all) || !strings.Contains(why, tc.inWhy) {
				t.Errorf("got %s %v (%s), want %s %v", cur, all, why, tc.current, tc.all)
			}
		})
	}
}

func TestPlanDump(t *testing.T) {
	t.Parallel()
	const g = int64(1) << 30
	tests := []struct {
		name     string
		in       SpaceInput
		typ      string
		file     string
		vol      string
		inReason string
	}{
		{"OS volume fits", SpaceInput{MemoryBytes: 16 * g, MarginBytes: g, OSFreeBytes: 80 * g}, DumpComplete, DefaultDumpFile, RoleOS, "≥"},
		{"exactly memory plus margin", SpaceInput{MemoryBytes: 16 * g, MarginBytes: g, OSFreeBytes: 17 * g}, DumpComplete, DefaultDumpFile, RoleOS, ""},
		{"one byte short goes to the data disk", SpaceInput{MemoryBytes: 16 * g, MarginBytes: g, OSFreeBytes: 17*g - 1,
			Data: []DataVolume{{"E:", 100 * g}}}, DumpComplete, `E:\MEMORY.DMP`, "E:", "data volume E:"},
		{"roomiest data volume wins", SpaceInput{MemoryBytes: 64 * g, MarginBytes: g, OSFreeBytes: 10 * g,
			Data: []DataVolume{{"e:", 70 * g}, {"F:", 500 * g}, {"G:", 66 * g}}}, DumpComplete, `F:\MEMORY.DMP`, "F:", ""},
		{"nothing fits: kernel on OS", SpaceInput{MemoryBytes: 64 * g, MarginBytes: g, OSFreeBytes: 30 * g,
			Data: []DataVolume{{"E:", 40 * g}}}, DumpKernel, DefaultDumpFile, RoleOS, "no volume has 65.0 GiB"},
		{"nothing fits, kernel fits only on data", SpaceInput{MemoryBytes: 64 * g, MarginBytes: g, OSFreeBytes: 5 * g,
			Data: []DataVolume{{"E:", 40 * g}}}, DumpKernel, `E:\MEMORY.DMP`, "E:", "kernel dump on data volume E:"},
		{"nothing fits at all", SpaceInput{MemoryBytes: 64 * g, MarginBytes: g, OSFreeBytes: 2 * g}, DumpKernel, DefaultDumpFile, RoleOS, "may not fit"},
		{"kernel override", SpaceInput{MemoryBytes: 16 * g, MarginBytes: g, OSFreeBytes: 80 * g, Override: DumpKernel}, DumpKernel, DefaultDumpFile, RoleOS, "requested"},
		{"complete override without room", SpaceInput{MemoryBytes: 64 * g, MarginBytes: g, OSFreeBytes: 2 * g, Override: DumpComplete}, DumpComplete, DefaultDumpFile, RoleOS, "may not be written"},
		{"complete override with data room", SpaceInput{MemoryBytes: 64 * g, MarginBytes: g, OSFreeBytes: 2 * g, Override: DumpComplete,
			Data: []DataVolume{{"E:", 70 * g}}}, DumpComplete, `E:\MEMORY.DMP`, "E:", "requested"},
		{"auto override is auto", SpaceInput{MemoryBytes: 16 * g, MarginBytes: g, OSFreeBytes: 80 * g, Override: DumpTypeAuto}, DumpComplete, DefaultDumpFile, RoleOS, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := PlanDump(tc.in)
			if p.Type != tc.typ || p.DumpFile != tc.file || p.DumpVolume != tc.vol || !strings.Contains(p.Reason, tc.inReason) {
				t.Errorf("got %+v", p)
			}
			if want := map[string]uint32{DumpComplete: 1, DumpKernel: 2}[tc.typ]; p.CrashDumpEnabled != want {
				t.Errorf("CrashDumpEnabled %d, want %d", p.CrashDumpEnabled, want)
			}
			if p.Reason == "" {
				t.Error("no reason")
			}
			override := tc.in.Override == DumpKernel || tc.in.Override == DumpComplete
			if p.Overridden != override {
				t.Errorf("Overridden %t", p.Overridden)
			}
		})
	}
}

func TestParseDisksRecorded(t *testing.T) {
	t.Parallel()
	disks, err := ParseDisks([]byte(readTestdata(t, "disks/gen1-collision.json")))
	if err != nil {
		t.Fatal(err)
	}
	d := disks[2]
	if d.OfflineReason != OfflineCollision || d.Identity() != "5EED0001" || d.Generation() != Gen1 || d.Partitions[0].Letter() != "" {
		t.Errorf("disk 2 = %+v", d)
	}
	if disks[0].Partitions[1].Letter() != "C:" {
		t.Errorf("letter %q", disks[0].Partitions[1].Letter())
	}
	// One disk comes as an object, not an array.
	one, err := ParseDisks([]byte(`{"Number":3,"PartitionStyle":"2","Guid":"6A1F3E52-8C0D-4B7E-9F21-3D5C7A9E0B14","OfflineReason":"1","Partitions":[{"PartitionNumber":1,"DriveLetter":"\u0000","GptType":"{C12A7328-F81F-11D2-BA4B-00A0C93EC93B}"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if o := one[0]; o.PartitionStyle != "GPT" || o.GUID != "{6a1f3e52-8c0d-4b7e-9f21-3d5c7a9e0b14}" || o.OfflineReason != "Policy" ||
		!o.Partitions[0].IsESP() || o.Partitions[0].Letter() != "" {
		t.Errorf("single disk = %+v", o)
	}
	for _, bad := range []string{"", "   ", "[{", "\"text\""} {
		if _, err := ParseDisks([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestFindDisk(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file    string
		lun     int
		sizeGB  int
		want    int // disk number, -1 for an error
		refused bool
	}{
		{"gen1-collision.json", 0, 0, 2, false}, // LUN 0 is also the OS disk's, on the other controller
		{"gen1-collision.json", 0, 127, 2, false},
		{"gen1-collision.json", 0, 128, -1, true}, // wrong size
		{"gen1-collision.json", 1, 0, -1, false},  // LUN 1 is only the temporary disk's
		{"gen2-offline.json", 1, 0, 2, false},
		{"two-at-lun.json", 0, 0, -1, true},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			disks, err := ParseDisks([]byte(readTestdata(t, "disks/"+tc.file)))
			if err != nil {
				t.Fatal(err)
			}
			d, err := FindDisk(disks, tc.lun, tc.sizeGB)
			if tc.want < 0 {
				if err == nil || isRefusal(err) != tc.refused {
					t.Fatalf("err %v, refused want %t", err, tc.refused)
				}
				return
			}
			if err != nil || d.Number != tc.want {
				t.Fatalf("disk %d, err %v; want %d", d.Number, err, tc.want)
			}
		})
	}
	// Without SCSI ports the boot disk can match; it is refused.
	lun := 0
	if _, err := FindDisk([]DiskInfo{{Number: 0, Lun: &lun, IsBoot: true, PartitionStyle: "MBR"}}, 0, 0); !isRefusal(err) {
		t.Errorf("boot disk: %v", err)
	}
	if _, err := FindDisk([]DiskInfo{{Number: 4, Lun: &lun, PartitionStyle: "RAW"}}, 0, 0); !isRefusal(err) {
		t.Errorf("raw disk: %v", err)
	}
}

func TestFindClash(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file    string
		lun     int
		kind    string // "" for no clash
		with    int
		refused bool
	}{
		{"gen1-collision.json", 0, CollisionMBRSignature, 0, false},
		{"gen2-collision.json", 1, CollisionGPTGUID, 0, false},
		{"gen2-offline.json", 1, "", 0, false},
		{"collision-unexplained.json", 0, "", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			disks, _ := ParseDisks([]byte(readTestdata(t, "disks/"+tc.file)))
			d, err := FindDisk(disks, tc.lun, 0)
			if err != nil {
				t.Fatal(err)
			}
			c, err := FindClash(disks, d)
			if tc.refused {
				if !isRefusal(err) {
					t.Fatalf("err %v, want a refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.kind == "" {
				if c != nil {
					t.Fatalf("clash %+v", c)
				}
				return
			}
			if c == nil || c.Kind != tc.kind || c.With.Number != tc.with || c.Identity != d.Identity() {
				t.Fatalf("clash %+v", c)
			}
		})
	}
	// No identity at all while Windows reports a collision: refused.
	if _, err := FindClash(nil, DiskInfo{Number: 2, PartitionStyle: "MBR", IsOffline: true, OfflineReason: OfflineCollision}); !isRefusal(err) {
		t.Errorf("no identity: %v", err)
	}
}

func TestFreeLetters(t *testing.T) {
	t.Parallel()
	free := FreeLetters([]string{"C:", "d", "Z:\\", "Y:", "\x00"})
	if free[0] != "X:" || free[len(free)-1] != "E:" || len(free) != 20 {
		t.Errorf("free = %v", free)
	}
	for _, l := range free {
		if l == "C:" || l == "D:" || l == "A:" || l == "B:" {
			t.Errorf("handed out %s", l)
		}
	}
}

func TestPaths(t *testing.T) {
	t.Parallel()
	if got := JoinPath("F:", `Windows\System32`, `\config\`, "SYSTEM"); got != `F:\Windows\System32\config\SYSTEM` {
		t.Errorf("JoinPath = %q", got)
	}
	for in, want := range map[string]string{
		`%SystemRoot%\MEMORY.DMP`:   `F:\Windows\MEMORY.DMP`,
		`%systemroot%\Minidump`:     `F:\Windows\Minidump`,
		`C:\dumps\MEMORY.DMP`:       `F:\dumps\MEMORY.DMP`,
		`E:\MEMORY.DMP`:             "",
		`\\server\share\MEMORY.DMP`: "",
	} {
		got, ok := expandSystemRoot(in, "F:")
		if (want == "") == ok || (ok && got != want) {
			t.Errorf("expandSystemRoot(%q) = %q, %t", in, got, ok)
		}
	}
}

func TestRequestValidate(t *testing.T) {
	t.Parallel()
	good := Request{Command: CommandPatch, IncidentID: "inc-20261120-031407-7f3c", LUN: 2, MemoryGB: 16}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := []Request{
		{Command: "format", LUN: 1, MemoryGB: 1},
		{Command: CommandPatch, LUN: 64, MemoryGB: 1},
		{Command: CommandInspect, LUN: 1},
		{Command: CommandPatch, LUN: 1, MemoryGB: 1, DumpType: "full"},
		{Command: CommandPatch, LUN: 1, MemoryGB: 1, IncidentID: "inc-x; rm -rf"},
		{Command: CommandPatch, LUN: 1, MemoryGB: 1, DataVolumes: []DataVolume{{"EE:", 1}}},
		{Command: CommandPatch, LUN: 1, MemoryGB: 1, DataVolumes: []DataVolume{{"E:", 1}, {"e:", 2}}},
		{Command: CommandHarvest, LUN: 1},
		{Command: CommandInspect, LUN: 1, MemoryGB: 1, UnlessDump: true},
	}
	for _, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	// Every problem is reported at once.
	err := Request{Command: "x", LUN: -1, MemoryGB: -1}.Validate()
	if n := strings.Count(err.Error(), "\n") + 1; n < 3 {
		t.Errorf("only %d problems reported: %v", n, err)
	}
	if _, err := DecodeRequest([]byte(`{"command":"inspect","lun":1,"memoryGB":4,"extra":1}`)); err == nil {
		t.Error("unknown field accepted")
	}
	if s := (Request{Command: CommandHarvest, SASURL: "https://a.blob.core.windows.net/dumps/x?sv=1&sig=SECRET"}).String(); strings.Contains(s, "SECRET") {
		t.Errorf("SAS in %s", s)
	}
}
