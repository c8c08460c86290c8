package winsim

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/agent/wintest"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/dumpfile"
)

// Disk is a simulated Windows disk held by a simulated managed disk or snapshot: a
// *wintest.Disk (partitions, files, the SYSTEM hive, the BCD store) behind a lock. The
// simulator clones it when a snapshot or a disk is made from it, hashes it to detect a change
// to an original OS disk, and hands it to the executor, which attaches it to the rescue VM's
// simulated Windows at its LUN; the crash loop writes the dump into it.
type Disk struct {
	id uint64 // orders lock acquisition
	mu sync.Mutex
	d  *wintest.Disk
}

var _ azsim.Content = (*Disk)(nil)

var diskSeq atomic.Uint64

// NewDisk wraps a wintest disk. The Disk owns it from then on: use View to look inside.
func NewDisk(d *wintest.Disk) *Disk { return &Disk{id: diskSeq.Add(1), d: d} }

// Clone implements azsim.Content: a deep copy of the contents (not of the attachment).
func (d *Disk) Clone() azsim.Content {
	d.mu.Lock()
	defer d.mu.Unlock()
	return NewDisk(d.d.Clone())
}

// Hash implements azsim.Content: SHA-256 over the disk's identity and layout, each partition's
// free space, and every file (path, size, time and content; a hive or a BCD store in its
// canonical rendering, so every registry value and BCD element counts). Drive letters and the
// attachment are not content.
func (d *Disk) Hash() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	h := sha256.New()
	field := func(s string) { writeLen(h, len(s)); h.Write([]byte(s)) }
	num := func(n int64) { _ = binary.Write(h, binary.BigEndian, n) }
	field(d.d.Style)
	num(d.d.Size)
	num(int64(d.d.Signature))
	field(strings.ToLower(d.d.GUID))
	for _, p := range d.d.Partitions {
		num(int64(p.Number))
		num(p.Size)
		num(p.Free)
		num(int64(p.MBRType))
		field(strings.ToLower(p.GPTType))
		field(fmt.Sprint(p.Active, p.Hidden))
		field(strings.ToLower(p.GUID))
		files := p.Files()
		num(int64(len(files)))
		for _, path := range files {
			f := p.File(path)
			field(strings.ToLower(path))
			num(f.Size)
			num(f.Modified.UnixNano())
			b := f.Bytes()
			writeLen(h, len(b))
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeLen(h hash.Hash, n int) { _ = binary.Write(h, binary.BigEndian, int64(n)) }

// View runs fn with the disk locked. fn must not keep the *wintest.Disk.
func (d *Disk) View(fn func(*wintest.Disk)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn(d.d)
}

const gib = 1 << 30

// Paths on the Windows volume.
const (
	systemHivePath  = `Windows\System32\config\SYSTEM`
	memoryDumpPath  = `Windows\MEMORY.DMP`
	minidumpDirPath = `Windows\Minidump`
)

// Defaults of the simulated Windows installations.
const (
	defaultOSDiskSizeGB = 127
	// minidumpSize is the size of a small memory dump (Minidump\*.dmp); Windows writes one of a
	// few hundred KB next to every kernel or complete dump.
	minidumpSize = 256 << 10
)

// controlSets are the control sets of every simulated SYSTEM hive; Select\Current is the first.
var controlSets = []int{1, 2}

// OSDiskFor builds the original OS disk of a fleet VM from its spec, as azsim.Options.ContentFor
// wants it: nil (azsim's default content) for a Linux VM; for Windows a disk laid out as
// Azure's images are (gen1: MBR with System Reserved and \Boot\BCD; gen2: GPT with an EFI system
// partition and \EFI\Microsoft\Boot\BCD), the SYSTEM hive with ControlSet001 and 002 and
// Select\Current=1, the image's BCD store, and the fleet's free space. A VM with dumpPresent has
// Azure's default crash settings (CrashDumpEnabled=7, automatic) and the dump it wrote at its
// last crash, plus a minidump; any other has crash dumps turned off (CrashDumpEnabled=0), which
// is why it has none. Both generations carry the identity of the marketplace image (the MBR
// signature of wintest's rescue VM, or wintest.DefaultGUID), as copies of one image do.
//
// dumpScale and crashed are as in Options: the size of the dump kept in memory and the time of
// the crash that wrote it.
func OSDiskFor(spec azsim.VMSpec, dumpScale float64, crashed time.Time) azsim.Content {
	if !strings.EqualFold(spec.OSType, "Windows") {
		return nil
	}
	gen := agent.Gen1
	if strings.EqualFold(spec.HyperVGeneration, "V2") {
		gen = agent.Gen2
	}
	size := int(spec.OSDiskSizeGB)
	if size == 0 {
		size = defaultOSDiskSizeGB
	}
	enabled := uint32(crashDumpAutomatic)
	d := wintest.NewWindowsDisk(wintest.WindowsDiskSpec{
		Generation: gen, SizeGB: size, FreeGB: spec.OSDiskFreeGB, ControlSets: controlSets,
		CrashDumpEnabled: enabled, Modified: crashed.Add(-30 * 24 * time.Hour),
	})
	win := d.WindowsPartition()
	hive := d.SystemHive()
	if !spec.DumpPresent {
		for _, n := range controlSets {
			hive.SetDWORD(crashControlKey(n), "CrashDumpEnabled", crashDumpNone)
		}
	} else {
		mem := memoryBytes(spec)
		full := dumpBytes(crashDumpAutomatic, mem)
		code := uint32(spec.BugCheck)
		win.Put(memoryDumpPath, &wintest.File{
			Data: dumpfile.Synthesize(dumpSpec(code, crashDumpAutomatic, full, crashed)),
			Size: storedSize(full, dumpScale), Modified: crashed,
		})
		win.Put(minidumpDirPath+`\`+minidumpName(crashed, 1), &wintest.File{
			Data: dumpfile.Synthesize(minidumpSpec(code, crashed)), Size: minidumpSize, Modified: crashed,
		})
	}
	// NewWindowsDisk reads a zero FreeGB as its default; the fleet's figure is the truth.
	win.Free = int64(spec.OSDiskFreeGB * gib)
	return NewDisk(d)
}

// DataDiskFor builds a data disk of a fleet VM: GPT, one NTFS volume of the disk's size with the
// fleet's free space. The VM mounts its data volumes at E:, F:, ... in LUN order.
func DataDiskFor(vmID string, spec azsim.DataDiskSpec) *Disk {
	size := int64(spec.SizeGB) * gib
	g := sha256.Sum256([]byte(fmt.Sprintf("%s#lun%d", strings.ToLower(vmID), spec.LUN)))
	x := hex.EncodeToString(g[:])
	guid := "{" + x[0:8] + "-" + x[8:12] + "-4" + x[13:16] + "-8" + x[17:20] + "-" + x[20:32] + "}"
	return NewDisk(&wintest.Disk{Size: size, Style: "GPT", GUID: guid, Partitions: []*wintest.Partition{
		{Number: 1, Size: 16 << 20, GPTType: agent.GPTTypeMSR, GUID: "{" + x[32:40] + "-0001-4000-8000-000000000001}"},
		{Number: 2, Size: size - 17<<20, Free: int64(spec.FreeGB * gib), GPTType: agent.GPTTypeBasic,
			GUID: "{" + x[40:48] + "-0002-4000-8000-000000000002}"},
	}})
}

// dataVolume is the volume of a data disk.
func dataVolume(d *wintest.Disk) *wintest.Partition {
	for _, p := range d.Partitions {
		if strings.EqualFold(p.GPTType, agent.GPTTypeBasic) || (d.Style == "MBR" && p.MBRType == 7) {
			return p
		}
	}
	return nil
}

// memoryBytes is the VM's memory, from its size (or memoryGB).
func memoryBytes(spec azsim.VMSpec) int64 {
	if s, ok := azsim.LookupSize(spec.Size); ok {
		return int64(s.MemoryGB * gib)
	}
	if s, ok := azsim.SizeForMemory(spec.MemoryGB, spec.HyperVGeneration); ok {
		return int64(s.MemoryGB * gib)
	}
	return int64(spec.MemoryGB * gib)
}

// storedSize is the size of a simulated dump file: the real size times DumpScale, never less
// than a header.
func storedSize(full int64, scale float64) int64 {
	n := int64(float64(full) * scale)
	return max(n, int64(len(dumpfile.Synthesize(dumpfile.Spec{DumpType: dumpfile.TypeBitmapFull}))))
}

// minidumpName is the name Windows gives a minidump: MMDDYY-NNNNN-01.dmp.
func minidumpName(at time.Time, seq int) string {
	return fmt.Sprintf("%s-%d-01.dmp", at.UTC().Format("010206"), 10000+seq)
}

func crashControlKey(set int) string { return fmt.Sprintf(`ControlSet%03d\Control\CrashControl`, set) }
