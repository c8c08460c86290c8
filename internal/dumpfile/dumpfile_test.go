package dumpfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

var crashTime = time.Date(2026, 11, 20, 3, 14, 7, 123456700, time.UTC)

// rawHeader64 builds a 64-bit header byte by byte from the documented offsets, independently of
// Synthesize, so that the parser is checked against the layout and not against its own writer.
func rawHeader64(dumpType uint32, bitmapSig string) []byte {
	b := make([]byte, 0x3000)
	le := binary.LittleEndian
	copy(b, "PAGEDU64")
	le.PutUint32(b[0x08:], 0xF)
	le.PutUint32(b[0x0C:], 17763)
	le.PutUint32(b[0x30:], 0x8664)
	le.PutUint32(b[0x34:], 8)
	le.PutUint32(b[0x38:], 0x7B)
	le.PutUint64(b[0x40:], 0xFFFFF80000000001)
	le.PutUint64(b[0x48:], 0xFFFFFFFFC0000034)
	le.PutUint64(b[0x50:], 3)
	le.PutUint64(b[0x58:], 4)
	le.PutUint32(b[0xF98:], dumpType)
	le.PutUint64(b[0xFA0:], 1<<30)
	le.PutUint64(b[0xFA8:], 134087980471234567) // 2025-11-28T10:07:27.1234567Z
	if bitmapSig != "" {
		copy(b[0x2000:], bitmapSig+"DUMP")
	}
	return b
}

func rawHeader32() []byte {
	b := make([]byte, 0x1000)
	le := binary.LittleEndian
	copy(b, "PAGEDUMP")
	le.PutUint32(b[0x08:], 0xF)
	le.PutUint32(b[0x0C:], 7601)
	le.PutUint32(b[0x20:], 0x14C)
	le.PutUint32(b[0x24:], 2)
	le.PutUint32(b[0x28:], 0xC000021A)
	le.PutUint32(b[0x2C:], 0x11111111)
	le.PutUint32(b[0x30:], 0x22222222)
	le.PutUint32(b[0x34:], 0x33333333)
	le.PutUint32(b[0x38:], 0x44444444)
	le.PutUint32(b[0xF88:], 1)
	le.PutUint64(b[0xFC0:], 134087980471234567)
	return b
}

func TestParseRawLayout(t *testing.T) {
	t.Parallel()
	wantTime := time.Date(2025, 11, 28, 10, 7, 27, 123456700, time.UTC)
	tests := []struct {
		name       string
		b          []byte
		bits       int
		code       uint32
		params     [4]uint64
		kind       string
		arch       string
		processors uint32
		bitmap     string
	}{
		{"64-full", rawHeader64(1, ""), 64, 0x7B, [4]uint64{0xFFFFF80000000001, 0xFFFFFFFFC0000034, 3, 4}, "full", "x64", 8, ""},
		{"64-kernel", rawHeader64(2, ""), 64, 0x7B, [4]uint64{0xFFFFF80000000001, 0xFFFFFFFFC0000034, 3, 4}, "kernel", "x64", 8, ""},
		{"64-bitmap-full", rawHeader64(5, "FDMP"), 64, 0x7B, [4]uint64{0xFFFFF80000000001, 0xFFFFFFFFC0000034, 3, 4}, "bitmap-full", "x64", 8, "FDMP"},
		{"64-bitmap-kernel", rawHeader64(6, "SDMP"), 64, 0x7B, [4]uint64{0xFFFFF80000000001, 0xFFFFFFFFC0000034, 3, 4}, "bitmap-kernel", "x64", 8, "SDMP"},
		{"64-triage", rawHeader64(4, ""), 64, 0x7B, [4]uint64{0xFFFFF80000000001, 0xFFFFFFFFC0000034, 3, 4}, "triage", "x64", 8, ""},
		{"32-full", rawHeader32(), 32, 0xC000021A, [4]uint64{0x11111111, 0x22222222, 0x33333333, 0x44444444}, "full", "x86", 2, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, err := Parse(bytes.NewReader(tc.b), int64(len(tc.b)))
			if err != nil {
				t.Fatal(err)
			}
			if h.Bits != tc.bits || h.BugCheckCode != tc.code || h.Parameters != tc.params ||
				h.Kind() != tc.kind || Architecture(h.Machine) != tc.arch || h.Processors != tc.processors || h.Bitmap != tc.bitmap {
				t.Errorf("got %+v", h)
			}
			if !h.SystemTime.Equal(wantTime) {
				t.Errorf("system time %v, want %v", h.SystemTime, wantTime)
			}
		})
	}
}

func TestSynthesizeRoundTrip(t *testing.T) {
	t.Parallel()
	params := [4]uint64{0xFFFFAB0C12345678, 2, 0, 0xFFFFF8033A2B1C0D}
	tests := []struct {
		name string
		spec Spec
	}{
		{"64-full", Spec{DumpType: TypeFull, BugCheckCode: 0xEF, Parameters: params, SystemTime: crashTime, Processors: 4}},
		{"64-kernel", Spec{DumpType: TypeKernel, BugCheckCode: 0x50, Parameters: params}},
		{"64-bitmap-full", Spec{DumpType: TypeBitmapFull, BugCheckCode: 0xD1, Parameters: params, SystemTime: crashTime}},
		{"64-bitmap-kernel", Spec{BugCheckCode: 0x133, Parameters: params, SystemTime: crashTime}},
		{"64-triage", Spec{DumpType: TypeTriage, BugCheckCode: 0x3B, Parameters: params}},
		{"64-arm64", Spec{DumpType: TypeFull, Machine: MachineARM64, BugCheckCode: 0x1E, Processors: 64}},
		{"32-full", Spec{Bits: 32, DumpType: TypeFull, BugCheckCode: 0x7E, Parameters: [4]uint64{1, 2, 3, 4}, SystemTime: crashTime}},
		{"32-kernel", Spec{Bits: 32, BugCheckCode: 0xC000021A, Parameters: [4]uint64{0xFFFFFFFF, 0, 0, 0}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := Synthesize(tc.spec)
			h, err := ParseBytes(b)
			if err != nil {
				t.Fatal(err)
			}
			s := tc.spec.withDefaults()
			if h.Bits != s.Bits || h.BugCheckCode != s.BugCheckCode || h.DumpType != s.DumpType ||
				h.Machine != s.Machine || h.Processors != s.Processors || h.MinorVersion != s.MinorVersion {
				t.Errorf("got %+v, want %+v", h, s)
			}
			want := s.Parameters
			if s.Bits == 32 {
				for i := range want {
					want[i] &= 0xFFFFFFFF
				}
			}
			if h.Parameters != want {
				t.Errorf("parameters %x, want %x", h.Parameters, want)
			}
			if !h.SystemTime.Equal(s.SystemTime) {
				t.Errorf("time %v, want %v", h.SystemTime, s.SystemTime)
			}
			if bc := h.BugCheck(); bc.Code != s.BugCheckCode || bc.Name == "" {
				t.Errorf("BugCheck() = %+v", bc)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	t.Parallel()
	good64 := Synthesize(Spec{BugCheckCode: 0x7B})
	good32 := Synthesize(Spec{Bits: 32, BugCheckCode: 0x7B})
	noBitmap := Synthesize(Spec{DumpType: TypeBitmapKernel})
	copy(noBitmap[0x2000:], "XXXX")
	wrongBitmap := Synthesize(Spec{DumpType: TypeBitmapFull})
	copy(wrongBitmap[0x2000:], "SDMP")
	badMachine := Synthesize(Spec{Machine: 0x1234})
	noCPU := Synthesize(Spec{DumpType: TypeFull})
	binary.LittleEndian.PutUint32(noCPU[0x34:], 0)
	mdmp := append([]byte("MDMP\x93\xa7\x00\x00"), make([]byte, 100)...)
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrEmpty},
		{"one byte", []byte("P"), ErrTruncated},
		{"signature only", []byte("PAGEDU64"), ErrTruncated},
		{"64 cut in the header", good64[:0x1000], ErrTruncated},
		{"64 cut before the bitmap", good64[:0x2000], ErrTruncated},
		{"32 cut in the header", good32[:0xFFF], ErrTruncated},
		{"text file", []byte("hello, this is not a dump at all\n"), ErrForeign},
		{"zeros", make([]byte, 0x3000), ErrForeign},
		{"user-mode minidump", mdmp, ErrForeign},
		{"PAGE then garbage", append([]byte("PAGEXXXX"), make([]byte, 0x2000)...), ErrCorrupt},
		{"bitmap type without SDMP", noBitmap, ErrCorrupt},
		{"FDMP type with SDMP", wrongBitmap, ErrCorrupt},
		{"unknown machine", badMachine, ErrCorrupt},
		{"zero processors", noCPU, ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(bytes.NewReader(tc.b), int64(len(tc.b)))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestFiletime(t *testing.T) {
	t.Parallel()
	for _, tm := range []time.Time{crashTime, time.Date(1601, 1, 1, 0, 0, 0, 100, time.UTC), time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)} {
		if got := filetime(toFiletime(tm)); !got.Equal(tm) {
			t.Errorf("round trip %v -> %v", tm, got)
		}
	}
	if !filetime(0).IsZero() || !filetime(pagePattern).IsZero() || !filetime(^uint64(0)).IsZero() {
		t.Error("unset FILETIME not zero")
	}
	// 2026-11-20T03:14:07Z is 134396180470000000 ticks after 1601.
	if got := toFiletime(time.Date(2026, 11, 20, 3, 14, 7, 0, time.UTC)); got != 134396180470000000 {
		t.Errorf("toFiletime = %d", got)
	}
}

func TestWriteFileSparse(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "MEMORY.DMP")
	const size = 64 << 20
	if err := WriteFile(path, Spec{BugCheckCode: 0xEF}, size); err != nil {
		t.Fatal(err)
	}
	info, err := ReadInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != size || info.BugCheck.Name != "CRITICAL_PROCESS_DIED" || info.DumpType != "bitmap-kernel" {
		t.Errorf("got %+v", info)
	}
	if err := WriteFile(path, Spec{}, 100); err == nil {
		t.Error("a size below the header was accepted")
	}
}

func TestInfoMain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	full := Synthesize(Spec{DumpType: TypeFull, BugCheckCode: 0x7B, Parameters: [4]uint64{0xFFFFD0012345E000, 0xFFFFFFFFC0000034, 0, 0}, SystemTime: crashTime, Processors: 4, RequiredBytes: 0x2000})
	kern32 := Synthesize(Spec{Bits: 32, BugCheckCode: 0xC000021A, SystemTime: crashTime})
	cut := Synthesize(Spec{DumpType: TypeFull, BugCheckCode: 0x50, RequiredBytes: 1 << 30})
	tests := []struct {
		name     string
		args     []string
		code     int
		golden   string // for stdout
		inStderr string
	}{
		{"64-full", []string{write("full.dmp", full)}, 0, "info-64-full.golden", ""},
		{"32-kernel", []string{write("k32.dmp", kern32)}, 0, "info-32-kernel.golden", ""},
		{"short file", []string{write("cut.dmp", cut)}, 0, "info-cut.golden", ""},
		{"empty", []string{write("empty.dmp", nil)}, 1, "", "empty file"},
		{"truncated", []string{write("trunc.dmp", full[:100])}, 1, "", "truncated dump"},
		{"foreign", []string{write("notes.txt", []byte("these are notes, not a dump........"))}, 1, "", "not a Windows kernel crash dump"},
		{"missing", []string{filepath.Join(dir, "nope.dmp")}, 1, "", "no such file"},
		{"directory", []string{dir}, 1, "", "a directory"},
		{"no file", nil, 2, "", "usage"},
		{"two files", []string{"a", "b"}, 2, "", "usage"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			if code := InfoMain(tc.args, &out, &errOut); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tc.code, errOut.String())
			}
			if tc.inStderr != "" && !strings.Contains(errOut.String(), tc.inStderr) {
				t.Errorf("stderr %q lacks %q", errOut.String(), tc.inStderr)
			}
			if tc.golden != "" {
				got := strings.ReplaceAll(out.String(), dir+string(filepath.Separator), "")
				checkGolden(t, tc.golden, got)
			}
		})
	}
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Synthesize(Spec{BugCheckCode: 0x7B}))
	f.Add(Synthesize(Spec{DumpType: TypeFull}))
	f.Add(Synthesize(Spec{Bits: 32}))
	f.Add(rawHeader64(6, "SDMP"))
	f.Add([]byte("PAGEDU64"))
	f.Add([]byte("MDMP"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseBytes(b)
		h2, err2 := Parse(bytes.NewReader(b), int64(len(b)))
		if (err == nil) != (err2 == nil) || h != h2 {
			t.Fatalf("Parse and ParseBytes disagree: %v / %v", err, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrForeign) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if h.Bits != 32 && h.Bits != 64 {
			t.Fatalf("bits %d", h.Bits)
		}
		_ = Describe("f", int64(len(b)), h)
	})
}
