package agent

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/incident"
)

// The agent's result contract. The agent prints its full result (indented JSON, every list whole)
// to stdout, which Run Command copies to the output blob, and then, as the very last line, one
// compact line: ResultMarker followed by the JSON of the same Result trimmed to MaxResultLine
// bytes. Run Command's instance view keeps only the last 4 KB of output; the line fits in it.
//
// Version 1. Fields are only ever added; a change in meaning bumps ResultVersion and the marker.
const (
	// ResultVersion is the version of Result this build writes and reads.
	ResultVersion = 1
	// ResultMarker starts the result line. It carries the version so that an old parser never
	// mistakes a newer result for one it understands.
	ResultMarker = "VMRESCUE-RESULT v1 "
	// MaxResultLine bounds the result line, marker included, so that it survives Run Command's
	// 4 KB output tail together with a trailing newline and a few lines of noise.
	MaxResultLine = 3072
)

// Command is an agent subcommand.
type Command string

// The agent's subcommands.
const (
	CommandInspect Command = "inspect"
	CommandPatch   Command = "patch"
	CommandHarvest Command = "harvest"
	CommandRestore Command = "restore"
)

// Valid reports whether c is one of the agent's subcommands.
func (c Command) Valid() bool {
	switch c {
	case CommandInspect, CommandPatch, CommandHarvest, CommandRestore:
		return true
	}
	return false
}

// Result is what one agent run reports. Sections that the command did not reach are nil.
type Result struct {
	Version int     `json:"version"`
	Command Command `json:"command"`
	// OK is true when the command did all it was asked to do and verified it.
	OK bool `json:"ok"`
	// Refused marks a terminal refusal: the disk is unsafe or unsupported (an identity collision
	// the agent cannot undo, no Windows partition, no default loader among several). Retrying
	// the same disk gives the same answer. OK=false without Refused is a failure that a retry
	// may cure (a hive still in use, a transient upload error).
	Refused bool `json:"refused,omitempty"`
	// Error says why OK is false, in one sentence.
	Error      string `json:"error,omitempty"`
	IncidentID string `json:"incidentId,omitempty"`
	DurationMS int64  `json:"durationMs"`

	Disk         *DiskResult         `json:"disk,omitempty"`
	Windows      *WindowsResult      `json:"windows,omitempty"`
	Dumps        *DumpsResult        `json:"dumps,omitempty"`
	CrashControl *CrashControlResult `json:"crashControl,omitempty"`
	Boot         *BootResult         `json:"boot,omitempty"`
	Space        *SpaceResult        `json:"space,omitempty"`
	Patch        *PatchResult        `json:"patch,omitempty"`
	Harvest      *HarvestResult      `json:"harvest,omitempty"`
	Restore      *RestoreResult      `json:"restore,omitempty"`

	Warnings []string `json:"warnings,omitempty"`
	// Truncated is set on the result line when detail was dropped to fit; the output blob has
	// the whole result.
	Truncated bool `json:"truncated,omitempty"`
}

// DiskResult is the attached copy of the VM's OS disk as the rescue VM sees it.
type DiskResult struct {
	Number         int    `json:"number"`         // Windows disk number on the rescue VM
	LUN            int    `json:"lun"`            // the SCSI LUN it was attached at
	SizeBytes      int64  `json:"sizeBytes"`      //
	PartitionStyle string `json:"partitionStyle"` // MBR or GPT
	Generation     string `json:"generation"`     // gen1 (MBR, BIOS boot) or gen2 (GPT, UEFI boot)
	WasOffline     bool   `json:"wasOffline"`     // it came up offline
	OfflineReason  string `json:"offlineReason,omitempty"`
	// Collision is set when the disk's MBR signature or GPT GUID equalled another disk's (or
	// Windows changed it on its own when the disk came online).
	Collision *Collision `json:"collision,omitempty"`
	// LeftOffline is true when the agent took the disk offline again at the end.
	LeftOffline bool `json:"leftOffline"`
}

// Collision records a disk identity clash and its temporary resolution.
type Collision struct {
	WithDisk  int    `json:"withDisk"`  // the disk it clashed with; -1 when Windows changed the identity unasked
	Kind      string `json:"kind"`      // mbr-signature or gpt-guid
	Original  string `json:"original"`  // the identity the disk had (and has again at the end)
	Temporary string `json:"temporary"` // the identity used while the agent worked
	// Restored is true when the original identity was written back and read back equal.
	Restored bool `json:"restored"`
}

// Collision kinds.
const (
	CollisionMBRSignature = "mbr-signature"
	CollisionGPTGUID      = "gpt-guid"
)

// Generations, as the result reports them.
const (
	Gen1 = "gen1"
	Gen2 = "gen2"
)

// WindowsResult locates the Windows installation and its boot store on the attached disk.
type WindowsResult struct {
	Volume        string `json:"volume"`        // drive letter of the Windows partition, e.g. "F:"
	Partition     int    `json:"partition"`     // its partition number
	SystemHive    string `json:"systemHive"`    // F:\Windows\System32\config\SYSTEM
	Loader        string `json:"loader"`        // winload.exe or winload.efi, as found on disk
	BootPartition int    `json:"bootPartition"` // System Reserved (gen1) or EFI system (gen2)
	BCDStore      string `json:"bcdStore"`      // G:\Boot\BCD or G:\EFI\Microsoft\Boot\BCD
	// TempLetters are the letters the agent assigned for this run; all are removed at the end.
	TempLetters []string `json:"tempLetters,omitempty"`
}

// DumpsResult lists the crash dumps found on the Windows volume.
type DumpsResult struct {
	// MemoryDump is the file CrashControl's DumpFile names (by default Windows\MEMORY.DMP);
	// nil when there is none.
	MemoryDump    *DumpFile  `json:"memoryDump,omitempty"`
	Minidumps     []DumpFile `json:"minidumps,omitempty"` // newest first
	MinidumpCount int        `json:"minidumpCount"`       // all of them, when the list is cut
}

// DumpFile is one dump file and what its header says.
type DumpFile struct {
	Path     string             `json:"path"` // as the rescue VM sees it
	Size     int64              `json:"size"`
	Modified time.Time          `json:"modified"`
	BugCheck *incident.BugCheck `json:"bugCheck,omitempty"`
	DumpType string             `json:"dumpType,omitempty"` // full, kernel, bitmap-full, bitmap-kernel, triage, ...
	// HeaderError is why the header could not be read (truncated, foreign file).
	HeaderError string `json:"headerError,omitempty"`
}

// CrashControlResult is the CrashControl key of each control set in the SYSTEM hive.
type CrashControlResult struct {
	Current   string         `json:"current"`   // e.g. ControlSet001
	Selection string         `json:"selection"` // how Current was chosen, e.g. "Select\\Current=1"
	Sets      []CrashControl `json:"sets"`      // the current set first
	SetCount  int            `json:"setCount"`
}

// CrashControl holds the values of one ControlSetNNN\Control\CrashControl. Nil means absent.
type CrashControl struct {
	ControlSet           string  `json:"controlSet"`
	CrashDumpEnabled     *uint32 `json:"crashDumpEnabled,omitempty"`
	DumpFile             string  `json:"dumpFile,omitempty"`
	MinidumpDir          string  `json:"minidumpDir,omitempty"`
	NMICrashDump         *uint32 `json:"nmiCrashDump,omitempty"`
	AutoReboot           *uint32 `json:"autoReboot,omitempty"`
	Overwrite            *uint32 `json:"overwrite,omitempty"`
	AlwaysKeepMemoryDump *uint32 `json:"alwaysKeepMemoryDump,omitempty"`
}

// BootResult is the boot manager and default loader settings from the BCD store.
type BootResult struct {
	DefaultLoader   string `json:"defaultLoader"`        // the loader's GUID
	LoaderChoice    string `json:"loaderChoice"`         // how it was chosen
	LoaderCount     int    `json:"loaderCount"`          // Windows Boot Loader entries in the store
	LoaderPath      string `json:"loaderPath,omitempty"` // \Windows\system32\winload.efi
	DisplayBootMenu *bool  `json:"displayBootMenu,omitempty"`
	Timeout         *int   `json:"timeout,omitempty"`
	BootEMS         *bool  `json:"bootEms,omitempty"`     // bootmgr bootems
	EMS             *bool  `json:"ems,omitempty"`         // ems on the default loader
	EMSPort         *int   `json:"emsPort,omitempty"`     // {emssettings}
	EMSBaudRate     *int   `json:"emsBaudRate,omitempty"` // {emssettings}
}

// SpaceResult compares the free space of each volume with the VM's memory.
type SpaceResult struct {
	MemoryBytes int64         `json:"memoryBytes"`
	MarginBytes int64         `json:"marginBytes"`
	Volumes     []VolumeSpace `json:"volumes"`
}

// VolumeSpace is one volume's free space.
type VolumeSpace struct {
	Volume string `json:"volume"` // letter on the rescue VM, or the VM's own letter for a data volume
	Role   string `json:"role"`   // os, boot, data or other
	// FreeBytes and SizeBytes: measured for volumes of the attached disk, declared by the
	// caller for data volumes of the VM (which the rescue VM cannot see).
	FreeBytes    int64 `json:"freeBytes"`
	SizeBytes    int64 `json:"sizeBytes,omitempty"`
	FitsComplete bool  `json:"fitsComplete"` // free ≥ memory + margin
}

// Volume roles.
const (
	RoleOS    = "os"
	RoleBoot  = "boot"
	RoleData  = "data"
	RoleOther = "other"
)

// PatchResult is what patch decided and wrote.
type PatchResult struct {
	DumpType         string   `json:"dumpType"`         // complete or kernel
	CrashDumpEnabled uint32   `json:"crashDumpEnabled"` // 1 (complete) or 2 (kernel)
	DumpFile         string   `json:"dumpFile"`         // as the VM will see it, e.g. %SystemRoot%\MEMORY.DMP
	DumpVolume       string   `json:"dumpVolume"`       // "os", or the VM's letter of the data volume
	Reason           string   `json:"reason"`           // why this type and place (always set)
	Overridden       bool     `json:"overridden,omitempty"`
	ControlSets      []string `json:"controlSets"`     // every set written, the current one first
	HiveKey          string   `json:"hiveKey"`         // where the hive was loaded, e.g. HKLM\VMRESCUE_1a2b3c4d
	UnloadAttempts   int      `json:"unloadAttempts"`  // reg unload tries until it succeeded
	RegistryChanges  int      `json:"registryChanges"` // values written (already-right ones are skipped)
	BCDChanges       int      `json:"bcdChanges"`      // BCD settings written (already-right ones are skipped)
	Verified         bool     `json:"verified"`        // everything read back as written
	BackupDir        string   `json:"backupDir"`       // on the Windows volume, e.g. F:\vmrescue\backup
	RolledBack       bool     `json:"rolledBack,omitempty"`
	RollbackError    string   `json:"rollbackError,omitempty"`
}

// Dump types that patch chooses.
const (
	DumpComplete = "complete"
	DumpKernel   = "kernel"
)

// HarvestResult is the progress of the dump upload. On a partial run it says how far it got;
// a rerun resumes from there.
type HarvestResult struct {
	Prefix        string          `json:"prefix"`   // container URL and incident prefix, without the SAS
	Manifest      string          `json:"manifest"` // blob name of manifest.json, e.g. <incidentId>/manifest.json
	Complete      bool            `json:"complete"` // every file and the manifest committed
	Files         int             `json:"files"`    // files to upload (manifest not counted)
	FilesDone     int             `json:"filesDone"`
	Bytes         int64           `json:"bytes"` // total size of the files
	BytesSent     int64           `json:"bytesSent"`
	BlocksSent    int             `json:"blocksSent"`
	BlocksSkipped int             `json:"blocksSkipped"` // already staged by an earlier run
	Uploaded      []HarvestedFile `json:"uploaded,omitempty"`
}

// HarvestedFile is one uploaded file.
type HarvestedFile struct {
	Blob          string `json:"blob"` // blob name, e.g. <incidentId>/MEMORY.DMP
	Size          int64  `json:"size"`
	SHA256        string `json:"sha256,omitempty"` // hex, of the whole file
	BlocksSent    int    `json:"blocksSent"`
	BlocksSkipped int    `json:"blocksSkipped"`
}

// RestoreResult is what restore put back.
type RestoreResult struct {
	BackupDir string   `json:"backupDir"`
	Restored  []string `json:"restored"` // the files put back
	Verified  bool     `json:"verified"` // each restored file's SHA-256 equals its backup's
}

// HasMemoryDump reports whether inspect found a memory dump to harvest.
func (r Result) HasMemoryDump() bool { return r.Dumps != nil && r.Dumps.MemoryDump != nil }

// Errors of ParseResult.
var (
	ErrNoResult           = errors.New("agent output holds no result line")
	ErrUnsupportedVersion = errors.New("agent result version not supported")
)

// ParseResult finds the last result line in Run Command output (which may be only its tail)
// and decodes it.
func ParseResult(output string) (Result, error) {
	var last string
	found, other := false, false
	sc := bufio.NewScanner(strings.NewReader(output))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(line, ResultMarker):
			last, found = line, true
		case strings.HasPrefix(line, "VMRESCUE-RESULT v"):
			other = true
		}
	}
	if err := sc.Err(); err != nil {
		return Result{}, fmt.Errorf("read agent output: %w", err)
	}
	if !found {
		if other {
			return Result{}, fmt.Errorf("%w: a result line of another version is present", ErrUnsupportedVersion)
		}
		return Result{}, ErrNoResult
	}
	var r Result
	if err := json.Unmarshal([]byte(strings.TrimPrefix(last, ResultMarker)), &r); err != nil {
		return Result{}, fmt.Errorf("decode agent result: %w", err)
	}
	if r.Version != ResultVersion {
		return Result{}, fmt.Errorf("%w: %d", ErrUnsupportedVersion, r.Version)
	}
	if !r.Command.Valid() {
		return Result{}, fmt.Errorf("decode agent result: unknown command %q", r.Command)
	}
	return r, nil
}

// Line renders the result line: ResultMarker and compact JSON, at most MaxResultLine bytes.
// Lists are cut (their counts stay) and then whole sections dropped until the line fits; the
// Truncated flag says so. The line never holds a newline.
func (r Result) Line() string {
	for level := 0; ; level++ {
		c, more := r.shrunk(level)
		b, err := json.Marshal(c)
		if err != nil { // cannot happen with these types; keep the contract anyway
			b = []byte(fmt.Sprintf(`{"version":%d,"command":%q,"ok":false,"error":"encode result"}`, ResultVersion, r.Command))
		}
		if line := ResultMarker + string(asciiJSON(b)); len(line) <= MaxResultLine || !more {
			return line
		}
	}
}

// Limits applied to the result line.
const (
	lineListMax   = 4   // entries kept per list at the first level
	lineStringMax = 300 // bytes kept of free text
)

// shrunk returns a copy of r trimmed for the given level, and whether a higher level trims more.
func (r Result) shrunk(level int) (Result, bool) {
	c := r
	c.Error = clip(c.Error, 2*lineStringMax)
	if level == 0 {
		return c, true
	}
	c.Truncated = true
	n := lineListMax
	if level >= 2 {
		n = 1
	}
	c.Warnings = clipStrings(c.Warnings, n)
	if c.Dumps != nil {
		d := *c.Dumps
		d.Minidumps = clipList(d.Minidumps, n)
		if level >= 3 {
			d.Minidumps = nil
		}
		c.Dumps = &d
	}
	if c.CrashControl != nil {
		cc := *c.CrashControl
		cc.Sets = clipList(cc.Sets, n)
		c.CrashControl = &cc
	}
	if c.Space != nil {
		s := *c.Space
		s.Volumes = clipList(s.Volumes, n)
		c.Space = &s
	}
	if c.Harvest != nil {
		h := *c.Harvest
		h.Uploaded = clipList(h.Uploaded, n)
		c.Harvest = &h
	}
	if c.Patch != nil {
		p := *c.Patch
		p.Reason = clip(p.Reason, lineStringMax)
		p.RollbackError = clip(p.RollbackError, lineStringMax)
		p.ControlSets = clipStrings(p.ControlSets, n)
		c.Patch = &p
	}
	if c.Windows != nil && level >= 2 {
		w := *c.Windows
		w.TempLetters = nil
		c.Windows = &w
	}
	if level >= 3 {
		c.Space, c.Warnings = nil, nil
		if c.CrashControl != nil {
			cc := *c.CrashControl
			cc.Sets = nil
			c.CrashControl = &cc
		}
	}
	if level >= 4 { // the bare verdict and what the pipeline acts on
		c.Error = clip(c.Error, lineStringMax)
		c.Windows, c.CrashControl, c.Boot = nil, nil, nil
		if c.Harvest != nil {
			h := *c.Harvest
			h.Uploaded = nil
			c.Harvest = &h
		}
	}
	if level >= 5 {
		min := Result{Version: c.Version, Command: c.Command, OK: c.OK, Refused: c.Refused,
			Error: clip(c.Error, lineStringMax), IncidentID: c.IncidentID, DurationMS: c.DurationMS, Truncated: true}
		if c.Dumps != nil && c.Dumps.MemoryDump != nil {
			m := *c.Dumps.MemoryDump
			m.Path, m.HeaderError = clip(m.Path, 100), clip(m.HeaderError, 100)
			min.Dumps = &DumpsResult{MemoryDump: &m, MinidumpCount: c.Dumps.MinidumpCount}
		}
		return min, false
	}
	return c, true
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

func clipStrings(s []string, n int) []string {
	s = clipList(s, n)
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = clip(v, lineStringMax)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func clipList[T any](s []T, n int) []T {
	if len(s) <= n {
		return s
	}
	return append([]T(nil), s[:n]...)
}
