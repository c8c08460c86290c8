package dumpfile

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"
)

// Spec describes a synthetic dump header. Zero fields take the defaults noted.
type Spec struct {
	Bits         int       // 64 (default) or 32
	BugCheckCode uint32    //
	Parameters   [4]uint64 // 32-bit headers keep the low 32 bits
	DumpType     DumpType  // default TypeBitmapKernel for 64-bit, TypeKernel for 32-bit
	Machine      uint32    // default MachineAMD64 for 64-bit, MachineI386 for 32-bit
	Processors   uint32    // default 2
	MajorVersion uint32    // default 0xF
	MinorVersion uint32    // default 20348 (Windows Server 2022)
	SystemTime   time.Time // default none
	// RequiredBytes is the RequiredDumpSpace field; default the header's own length.
	RequiredBytes uint64
}

func (s Spec) withDefaults() Spec {
	if s.Bits == 0 {
		s.Bits = 64
	}
	if s.DumpType == 0 {
		s.DumpType = TypeBitmapKernel
		if s.Bits == 32 {
			s.DumpType = TypeKernel
		}
	}
	if s.Machine == 0 {
		s.Machine = MachineAMD64
		if s.Bits == 32 {
			s.Machine = MachineI386
		}
	}
	if s.Processors == 0 {
		s.Processors = 2
	}
	if s.MajorVersion == 0 {
		s.MajorVersion = 0xF
	}
	if s.MinorVersion == 0 {
		s.MinorVersion = 20348
	}
	return s
}

// Synthesize returns a valid dump header as Parse reads it: 0x2000 bytes for 64-bit (plus the
// bitmap header page for bitmap types), 0x1000 for 32-bit. Unset fields hold the PAGE filler,
// as in a real dump. It panics on a Spec that cannot be written (Bits other than 32 or 64, or a
// bitmap type in a 32-bit header), which is a programming error.
func Synthesize(s Spec) []byte {
	s = s.withDefaults()
	le := binary.LittleEndian
	var b []byte
	switch s.Bits {
	case 64:
		n := HeaderSize64
		bitmap := s.DumpType == TypeBitmapFull || s.DumpType == TypeBitmapKernel
		if bitmap {
			n += 0x1000
		}
		b = filled(n)
		copy(b[0:], sigPAGE)
		copy(b[4:], sigDU64)
		le.PutUint32(b[off64Major:], s.MajorVersion)
		le.PutUint32(b[off64Minor:], s.MinorVersion)
		le.PutUint32(b[off64Machine:], s.Machine)
		le.PutUint32(b[off64Processors:], s.Processors)
		le.PutUint32(b[off64BugCheck:], s.BugCheckCode)
		le.PutUint32(b[off64BugCheck+4:], 0) // padding
		for i, p := range s.Parameters {
			le.PutUint64(b[off64Parameters+8*i:], p)
		}
		le.PutUint32(b[off64DumpType:], uint32(s.DumpType))
		le.PutUint64(b[off64RequiredSize:], required(s, n))
		le.PutUint64(b[off64SystemTime:], toFiletime(s.SystemTime))
		if bitmap {
			sig := sigSDMP
			if s.DumpType == TypeBitmapFull {
				sig = sigFDMP
			}
			bm := b[bitmapOffset:]
			clear(bm)
			copy(bm[0:], sig)
			copy(bm[4:], sigDUMP)
			le.PutUint64(bm[0x20:], uint64(n)) // FirstPage: where page data would start
			le.PutUint64(bm[0x28:], 0)         // TotalPresentPages
			le.PutUint64(bm[0x30:], 0)         // Pages (bits in the bitmap)
		}
	case 32:
		if s.DumpType == TypeBitmapFull || s.DumpType == TypeBitmapKernel {
			panic("dumpfile: bitmap dumps are 64-bit only")
		}
		b = filled(HeaderSize32)
		copy(b[0:], sigPAGE)
		copy(b[4:], sigDUMP)
		le.PutUint32(b[off32Major:], s.MajorVersion)
		le.PutUint32(b[off32Minor:], s.MinorVersion)
		le.PutUint32(b[off32Machine:], s.Machine)
		le.PutUint32(b[off32Processors:], s.Processors)
		le.PutUint32(b[off32BugCheck:], s.BugCheckCode)
		for i, p := range s.Parameters {
			le.PutUint32(b[off32Parameters+4*i:], uint32(p))
		}
		le.PutUint32(b[off32DumpType:], uint32(s.DumpType))
		le.PutUint64(b[off32RequiredSize:], required(s, HeaderSize32))
		le.PutUint64(b[off32SystemTime:], toFiletime(s.SystemTime))
	default:
		panic(fmt.Sprintf("dumpfile: %d-bit headers do not exist", s.Bits))
	}
	return b
}

func required(s Spec, n int) uint64 {
	if s.RequiredBytes != 0 {
		return s.RequiredBytes
	}
	return uint64(n)
}

func filled(n int) []byte {
	b := make([]byte, n)
	for i := 0; i+4 <= n; i += 4 {
		copy(b[i:], sigPAGE)
	}
	return b
}

// WriteFile writes a synthetic dump to path: the header, then zeros up to size bytes (a sparse
// hole where the file system supports one). size 0 means the header alone.
func WriteFile(path string, s Spec, size int64) error {
	hdr := Synthesize(s)
	if size != 0 && size < int64(len(hdr)) {
		return fmt.Errorf("synthetic dump of %d bytes is shorter than its %d-byte header", size, len(hdr))
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(hdr); err != nil {
		f.Close()
		return err
	}
	if size > int64(len(hdr)) {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
