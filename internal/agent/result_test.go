package agent

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vmrescue/vmrescue/internal/incident"
)

func u32(v uint32) *uint32 { return &v }

// worstCase is a result with every list long and every string long.
func worstCase() Result {
	long := strings.Repeat("é", 400) // two bytes each, six when escaped
	r := Result{Version: ResultVersion, Command: CommandHarvest, OK: false, Refused: true, Error: long, IncidentID: "inc-20261120-031407-7f3c",
		Disk:    &DiskResult{Number: 2, LUN: 0, PartitionStyle: "GPT", Generation: Gen2, Collision: &Collision{Original: long, Temporary: long}},
		Windows: &WindowsResult{Volume: "F:", SystemHive: long, BCDStore: long, TempLetters: []string{"Z:", "Y:", "X:", "W:"}},
		Dumps:   &DumpsResult{MemoryDump: &DumpFile{Path: long, Size: 1 << 40, BugCheck: &incident.BugCheck{Code: 0xC000021A, Name: "WINLOGON_FATAL_ERROR"}}},
		Boot:    &BootResult{DefaultLoader: long, LoaderChoice: long},
		Patch:   &PatchResult{Reason: long, RollbackError: long},
		Harvest: &HarvestResult{Prefix: long},
		Space:   &SpaceResult{},
		Restore: &RestoreResult{BackupDir: long},
	}
	for i := range 60 {
		r.Dumps.Minidumps = append(r.Dumps.Minidumps, DumpFile{Path: fmt.Sprintf(`F:\Windows\Minidump\%d.dmp`, i), BugCheck: &incident.BugCheck{Code: 0x50}})
		r.Harvest.Uploaded = append(r.Harvest.Uploaded, HarvestedFile{Blob: fmt.Sprintf("inc/Minidump/%d.dmp", i), SHA256: strings.Repeat("a", 64)})
		r.Warnings = append(r.Warnings, long)
		r.Space.Volumes = append(r.Space.Volumes, VolumeSpace{Volume: "E:", Role: RoleData})
		r.Restore.Restored = append(r.Restore.Restored, long)
	}
	r.Dumps.MinidumpCount = 60
	for i := range 10 {
		r.CrashControl = &CrashControlResult{Current: "ControlSet001", SetCount: 10}
		r.CrashControl.Sets = append(r.CrashControl.Sets, CrashControl{ControlSet: fmt.Sprintf("ControlSet%03d", i), DumpFile: long, CrashDumpEnabled: u32(1)})
	}
	return r
}

func TestLineFits(t *testing.T) {
	t.Parallel()
	for name, r := range map[string]Result{
		"worst case": worstCase(),
		"small":      {Version: ResultVersion, Command: CommandInspect, OK: true, Dumps: &DumpsResult{}},
	} {
		line := r.Line()
		if len(line) > MaxResultLine {
			t.Errorf("%s: line is %d bytes, over %d", name, len(line), MaxResultLine)
		}
		if strings.ContainsAny(line, "\r\n") {
			t.Errorf("%s: line holds a newline", name)
		}
		for _, c := range []byte(line) {
			if c >= 0x80 {
				t.Fatalf("%s: non-ASCII byte in the line", name)
			}
		}
		got, err := ParseResult("noise\n" + line + "\n")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Command != r.Command || got.OK != r.OK || got.Refused != r.Refused {
			t.Errorf("%s: round trip lost the verdict: %+v", name, got)
		}
		if name == "worst case" {
			if !got.Truncated || got.Dumps == nil || got.Dumps.MemoryDump == nil || got.Dumps.MinidumpCount != 60 {
				t.Errorf("worst case lost what the pipeline needs: %+v", got.Dumps)
			}
			if !strings.HasPrefix(got.Error, "ééé") {
				t.Errorf("error not kept: %q", got.Error[:20])
			}
		} else if got.Truncated {
			t.Error("small result truncated")
		}
	}
}

func TestParseResult(t *testing.T) {
	t.Parallel()
	ok := Result{Version: ResultVersion, Command: CommandPatch, OK: true}.Line()
	failed := Result{Version: ResultVersion, Command: CommandPatch, Error: "boom"}.Line()
	tests := []struct {
		name    string
		output  string
		wantOK  bool
		wantErr error
		anyErr  bool
	}{
		{"alone", ok, true, nil, false},
		{"last wins", failed + "\n" + ok + "\n", true, nil, false},
		{"last wins the other way", ok + "\r\n" + failed + "\r\n", false, nil, false},
		{"after the full JSON", "{\n  \"version\": 1\n}\n" + ok + "\n", true, nil, false},
		{"tail cut mid-JSON before it", `ion": 1, "garbage` + "\n" + ok, true, nil, false},
		{"marker not at line start is ignored", "log: " + ok, false, ErrNoResult, false},
		{"nothing", "", false, ErrNoResult, false},
		{"newer version", "VMRESCUE-RESULT v2 {}\n", false, ErrUnsupportedVersion, false},
		{"version field mismatch", ResultMarker + `{"version":2,"command":"patch","ok":true}`, false, ErrUnsupportedVersion, false},
		{"cut line", ok[:len(ok)-5], false, nil, true},
		{"unknown command", ResultMarker + `{"version":1,"command":"format","ok":true}`, false, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseResult(tc.output)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
			case tc.anyErr:
				if err == nil {
					t.Fatal("parsed")
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if r.OK != tc.wantOK {
					t.Errorf("OK %t", r.OK)
				}
			}
		})
	}
}

func TestASCIIJSON(t *testing.T) {
	t.Parallel()
	got := string(asciiJSON([]byte(`{"a":"é😀x"}`)))
	if got != `{"a":"\u00e9\ud83d\ude00x"}` {
		t.Errorf("got %s", got)
	}
}
