// Package dumpfile reads the header of a Windows kernel crash dump (MEMORY.DMP, or a kernel
// minidump from Windows\Minidump): the bug check code and its parameters, the dump type, the
// architecture, the processor count and the time of the crash. It reads both the 64-bit header
// (PAGE/DU64, 0x2000 bytes) and the 32-bit one (PAGE/DUMP, 0x1000 bytes), and can write a valid
// synthetic header for tests and the simulator.
package dumpfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/vmrescue/vmrescue/internal/bugcheck"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// Header sizes and the signatures at the start of each header.
const (
	HeaderSize64 = 0x2000
	HeaderSize32 = 0x1000

	sigPAGE = "PAGE"
	sigDU64 = "DU64"
	sigDUMP = "DUMP"
	// The bitmap header that follows a 64-bit header for bitmap dumps.
	bitmapOffset     = 0x2000
	bitmapHeaderSize = 0x38
	sigSDMP          = "SDMP" // kernel (summary) bitmap dump
	sigFDMP          = "FDMP" // full bitmap dump
)

// Field offsets of the 64-bit header (_DUMP_HEADER64).
const (
	off64Major        = 0x08
	off64Minor        = 0x0C
	off64Machine      = 0x30
	off64Processors   = 0x34
	off64BugCheck     = 0x38
	off64Parameters   = 0x40 // 4 × uint64
	off64DumpType     = 0xF98
	off64RequiredSize = 0xFA0
	off64SystemTime   = 0xFA8
)

// Field offsets of the 32-bit header (_DUMP_HEADER32).
const (
	off32Major        = 0x08
	off32Minor        = 0x0C
	off32Machine      = 0x20
	off32Processors   = 0x24
	off32BugCheck     = 0x28
	off32Parameters   = 0x2C // 4 × uint32
	off32DumpType     = 0xF88
	off32RequiredSize = 0xFA0
	off32SystemTime   = 0xFC0
)

// DumpType is the header's DumpType field.
type DumpType uint32

// Dump types.
const (
	TypeFull         DumpType = 1 // complete memory dump
	TypeKernel       DumpType = 2 // kernel (summary) dump
	TypeHeaderOnly   DumpType = 3
	TypeTriage       DumpType = 4 // small memory dump (Minidump\*.dmp)
	TypeBitmapFull   DumpType = 5 // complete memory dump, bitmap form (FDMP)
	TypeBitmapKernel DumpType = 6 // kernel or automatic dump, bitmap form (SDMP)
	TypeAutomatic    DumpType = 7
)

func (t DumpType) String() string {
	switch t {
	case TypeFull:
		return "full"
	case TypeKernel:
		return "kernel"
	case TypeHeaderOnly:
		return "header-only"
	case TypeTriage:
		return "triage"
	case TypeBitmapFull:
		return "bitmap-full"
	case TypeBitmapKernel:
		return "bitmap-kernel"
	case TypeAutomatic:
		return "automatic"
	}
	return fmt.Sprintf("unknown(%d)", uint32(t))
}

// Machine types (IMAGE_FILE_MACHINE_*).
const (
	MachineI386  = 0x014C
	MachineAMD64 = 0x8664
	MachineARM64 = 0xAA64
	MachineARMNT = 0x01C4
)

// Architecture names a machine type.
func Architecture(machine uint32) string {
	switch machine {
	case MachineI386:
		return "x86"
	case MachineAMD64:
		return "x64"
	case MachineARM64:
		return "arm64"
	case MachineARMNT:
		return "arm"
	}
	return fmt.Sprintf("unknown(0x%X)", machine)
}

// Header is what a dump header says.
type Header struct {
	Bits          int       // 64 (PAGEDU64) or 32 (PAGEDUMP)
	MajorVersion  uint32    // 0xF for a free build, 0xC for a checked one
	MinorVersion  uint32    // the Windows build number
	Machine       uint32    // IMAGE_FILE_MACHINE_*
	Processors    uint32    //
	BugCheckCode  uint32    //
	Parameters    [4]uint64 // the four bug check parameters (32-bit dumps: zero-extended)
	DumpType      DumpType  //
	RequiredBytes uint64    // RequiredDumpSpace: the size the dump needs
	SystemTime    time.Time // when the crash happened (UTC); zero when the header has none
	// Bitmap is "SDMP" or "FDMP" for bitmap dumps, read at 0x2000.
	Bitmap string
}

// BugCheck returns the stop code and parameters in the shape the rest of vmrescue uses.
func (h Header) BugCheck() incident.BugCheck {
	return incident.BugCheck{Code: h.BugCheckCode, Name: bugcheck.Name(h.BugCheckCode), Parameters: h.Parameters}
}

// Kind sums up the dump type as a person reads it: full, kernel, bitmap-full, bitmap-kernel,
// triage, ...
func (h Header) Kind() string { return h.DumpType.String() }

// Errors Parse returns, wrapped with detail.
var (
	ErrEmpty     = errors.New("empty file")
	ErrTruncated = errors.New("truncated dump")
	ErrForeign   = errors.New("not a Windows kernel crash dump")
	ErrCorrupt   = errors.New("corrupt dump header")
)

// Parse reads the header of a dump of the given size.
func Parse(r io.ReaderAt, size int64) (Header, error) {
	if size == 0 {
		return Header{}, ErrEmpty
	}
	n := int64(HeaderSize64 + bitmapHeaderSize)
	if size < n {
		n = size
	}
	buf := make([]byte, n)
	got, err := r.ReadAt(buf, 0)
	if err != nil && !(errors.Is(err, io.EOF) && int64(got) == n) {
		if errors.Is(err, io.EOF) {
			return Header{}, fmt.Errorf("%w: file ends at %d bytes", ErrTruncated, got)
		}
		return Header{}, fmt.Errorf("read dump header: %w", err)
	}
	return ParseBytes(buf[:got])
}

// ParseBytes reads a header from the first bytes of a dump (at least 0x2038 bytes when there
// are that many).
func ParseBytes(b []byte) (Header, error) {
	if len(b) == 0 {
		return Header{}, ErrEmpty
	}
	if len(b) < 8 {
		if string(b) == sigPAGE[:min(len(b), 4)] {
			return Header{}, fmt.Errorf("%w: %d bytes, shorter than a signature", ErrTruncated, len(b))
		}
		return Header{}, fmt.Errorf("%w: %d bytes", ErrForeign, len(b))
	}
	sig, valid := string(b[0:4]), string(b[4:8])
	switch {
	case sig == sigPAGE && valid == sigDU64:
		return parse64(b)
	case sig == sigPAGE && valid == sigDUMP:
		return parse32(b)
	case sig == "MDMP":
		return Header{}, fmt.Errorf("%w: a user-mode minidump (MDMP)", ErrForeign)
	case sig == sigPAGE:
		return Header{}, fmt.Errorf("%w: PAGE signature followed by %q", ErrCorrupt, printable(b[4:8]))
	}
	return Header{}, fmt.Errorf("%w: starts with %q", ErrForeign, printable(b[0:8]))
}

func parse64(b []byte) (Header, error) {
	if len(b) < HeaderSize64 {
		return Header{}, fmt.Errorf("%w: 64-bit header needs %#x bytes, file has %#x", ErrTruncated, HeaderSize64, len(b))
	}
	le := binary.LittleEndian
	h := Header{
		Bits:          64,
		MajorVersion:  le.Uint32(b[off64Major:]),
		MinorVersion:  le.Uint32(b[off64Minor:]),
		Machine:       le.Uint32(b[off64Machine:]),
		Processors:    le.Uint32(b[off64Processors:]),
		BugCheckCode:  le.Uint32(b[off64BugCheck:]),
		DumpType:      DumpType(le.Uint32(b[off64DumpType:])),
		RequiredBytes: le.Uint64(b[off64RequiredSize:]),
		SystemTime:    filetime(le.Uint64(b[off64SystemTime:])),
	}
	for i := range h.Parameters {
		h.Parameters[i] = le.Uint64(b[off64Parameters+8*i:])
	}
	if len(b) >= bitmapOffset+8 {
		if s, v := string(b[bitmapOffset:bitmapOffset+4]), string(b[bitmapOffset+4:bitmapOffset+8]); (s == sigSDMP || s == sigFDMP) && v == sigDUMP {
			h.Bitmap = s
		}
	}
	switch h.DumpType {
	case TypeBitmapFull, TypeBitmapKernel:
		if len(b) < bitmapOffset+8 {
			return Header{}, fmt.Errorf("%w: %s dump ends before its bitmap header at %#x", ErrTruncated, h.DumpType, bitmapOffset)
		}
		want := sigSDMP
		if h.DumpType == TypeBitmapFull {
			want = sigFDMP
		}
		if h.Bitmap != want {
			return Header{}, fmt.Errorf("%w: %s dump without its %s%s signature at %#x", ErrCorrupt, h.DumpType, want, sigDUMP, bitmapOffset)
		}
	}
	return h, validate(h)
}

func parse32(b []byte) (Header, error) {
	if len(b) < HeaderSize32 {
		return Header{}, fmt.Errorf("%w: 32-bit header needs %#x bytes, file has %#x", ErrTruncated, HeaderSize32, len(b))
	}
	le := binary.LittleEndian
	h := Header{
		Bits:          32,
		MajorVersion:  le.Uint32(b[off32Major:]),
		MinorVersion:  le.Uint32(b[off32Minor:]),
		Machine:       le.Uint32(b[off32Machine:]),
		Processors:    le.Uint32(b[off32Processors:]),
		BugCheckCode:  le.Uint32(b[off32BugCheck:]),
		DumpType:      DumpType(le.Uint32(b[off32DumpType:])),
		RequiredBytes: le.Uint64(b[off32RequiredSize:]),
		SystemTime:    filetime(le.Uint64(b[off32SystemTime:])),
	}
	for i := range h.Parameters {
		h.Parameters[i] = uint64(le.Uint32(b[off32Parameters+4*i:]))
	}
	return h, validate(h)
}

// maxProcessors bounds a believable processor count.
const maxProcessors = 4096

func validate(h Header) error {
	switch h.Machine {
	case MachineI386, MachineAMD64, MachineARM64, MachineARMNT:
	default:
		return fmt.Errorf("%w: machine type %#x", ErrCorrupt, h.Machine)
	}
	if h.Processors == 0 || h.Processors > maxProcessors {
		return fmt.Errorf("%w: %d processors", ErrCorrupt, h.Processors)
	}
	return nil
}

const pagePattern = 0x4547415045474150 // "PAGEPAGE": the filler of fields never written

// FILETIME counts 100 ns ticks from 1601-01-01 UTC; Unix time starts 11644473600 s later.
const (
	ticksPerSecond       = 10_000_000
	filetimeUnixOffset   = 11644473600
	maxFiletimeYear10000 = 2650467743999999999 // 9999-12-31T23:59:59.9999999Z
)

func filetime(ft uint64) time.Time {
	// Zero, the PAGE filler, and anything past year 9999 mean "not recorded".
	if ft == 0 || ft == pagePattern || ft > maxFiletimeYear10000 {
		return time.Time{}
	}
	secs := int64(ft/ticksPerSecond) - filetimeUnixOffset
	return time.Unix(secs, int64(ft%ticksPerSecond)*100).UTC()
}

func toFiletime(t time.Time) uint64 {
	secs := t.Unix() + filetimeUnixOffset
	if t.IsZero() || secs < 0 {
		return 0
	}
	return uint64(secs)*ticksPerSecond + uint64(t.Nanosecond()/100)
}

func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7E {
			c = '.'
		}
		out[i] = c
	}
	return string(out)
}
