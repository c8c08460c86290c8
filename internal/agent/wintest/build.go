package wintest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
)

// WindowsDiskSpec describes a copy of a Windows VM's OS disk. Zero fields take the defaults
// noted.
type WindowsDiskSpec struct {
	Generation string  // agent.Gen1 (MBR, default) or agent.Gen2 (GPT)
	SizeGB     int     // default 127, as Azure's Windows images
	FreeGB     float64 // free space of the Windows volume; default 80
	Signature  uint32  // gen1 identity; default RescueSignature (the same image as the rescue VM)
	GUID       string  // gen2 identity; default DefaultGUID
	// BCD is the boot store; default DefaultBCD(Generation).
	BCD *BCDStore
	// ControlSets present in the SYSTEM hive; default {1}. Current is Select\Current (default
	// the first); NoSelect leaves the Select key out.
	ControlSets []int
	Current     int
	NoSelect    bool
	// CrashDumpEnabled is the value in every control set; default 7 (automatic memory dump).
	CrashDumpEnabled uint32
	// NoSystemReserved puts a gen1 disk's \Boot\BCD on the Windows partition, with no System
	// Reserved partition.
	NoSystemReserved bool
	// Modified stamps the files; default 2026-11-01.
	Modified time.Time
}

// DefaultGUID is the GPT disk GUID of a gen2 disk made with the defaults.
const DefaultGUID = "{6a1f3e52-8c0d-4b7e-9f21-3d5c7a9e0b14}"

// Identifiers of the entries DefaultBCD makes.
const (
	DefaultLoaderID = "{3c8d1f0e-7b2a-11ee-9a4c-000d3a5f1b2c}"
	RecoveryID      = "{3c8d1f0f-7b2a-11ee-9a4c-000d3a5f1b2c}"
	resumeID        = "{3c8d1f10-7b2a-11ee-9a4c-000d3a5f1b2c}"
	ramdiskID       = "{3c8d1f11-7b2a-11ee-9a4c-000d3a5f1b2c}"
)

const gib = 1 << 30

func (s WindowsDiskSpec) withDefaults() WindowsDiskSpec {
	if s.Generation == "" {
		s.Generation = agent.Gen1
	}
	if s.SizeGB == 0 {
		s.SizeGB = 127
	}
	if s.FreeGB == 0 {
		s.FreeGB = 80
	}
	if s.Signature == 0 {
		s.Signature = RescueSignature
	}
	if s.GUID == "" {
		s.GUID = DefaultGUID
	}
	if s.BCD == nil {
		s.BCD = DefaultBCD(s.Generation)
	}
	if len(s.ControlSets) == 0 {
		s.ControlSets = []int{1}
	}
	if s.Current == 0 {
		s.Current = s.ControlSets[0]
	}
	if s.CrashDumpEnabled == 0 {
		s.CrashDumpEnabled = 7
	}
	if s.Modified.IsZero() {
		s.Modified = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	}
	return s
}

// NewWindowsDisk makes a copy of a Windows OS disk laid out as Azure's images are: gen1 a System
// Reserved partition (active, with \Boot\BCD) and the Windows partition; gen2 an EFI system
// partition (with \EFI\Microsoft\Boot\BCD), an MSR, the Windows partition and a recovery one.
func NewWindowsDisk(spec WindowsDiskSpec) *Disk {
	s := spec.withDefaults()
	size := int64(s.SizeGB) * gib
	d := &Disk{Size: size}
	if s.Generation == agent.Gen2 {
		d.Style, d.GUID = "GPT", strings.ToLower(s.GUID)
		d.Partitions = []*Partition{
			{Number: 1, Size: 100 << 20, Free: 70 << 20, GPTType: agent.GPTTypeESP, GUID: "{0f1e2d3c-0001-4000-8000-000000000001}"},
			{Number: 2, Size: 16 << 20, GPTType: agent.GPTTypeMSR, GUID: "{0f1e2d3c-0002-4000-8000-000000000002}"},
			{Number: 3, Size: size - 2*gib, GPTType: agent.GPTTypeBasic, GUID: "{0f1e2d3c-0003-4000-8000-000000000003}"},
			{Number: 4, Size: 900 << 20, Free: 400 << 20, GPTType: agent.GPTTypeRecovery, Hidden: true, GUID: "{0f1e2d3c-0004-4000-8000-000000000004}"},
		}
	} else {
		d.Style, d.Signature = "MBR", s.Signature
		if s.NoSystemReserved {
			d.Partitions = []*Partition{{Number: 1, Size: size - gib, MBRType: 7, Active: true}}
		} else {
			d.Partitions = []*Partition{
				{Number: 1, Size: 500 << 20, Free: 460 << 20, MBRType: 7, Active: true},
				{Number: 2, Size: size - gib, MBRType: 7},
			}
		}
	}
	if err := InstallWindows(d, spec); err != nil {
		panic(err) // the layout above always has the partitions InstallWindows needs
	}
	return d
}

// InstallWindows puts a Windows installation on a disk whose partitions exist: the SYSTEM hive
// and winload on the largest basic data (or MBR NTFS) partition, the BCD store on the EFI system
// partition (GPT) or the active partition (MBR). Layouts loaded from recorded disk listings get
// their files this way.
func InstallWindows(d *Disk, spec WindowsDiskSpec) error {
	if spec.Generation == "" && d.Style == "GPT" {
		spec.Generation = agent.Gen2
	}
	s := spec.withDefaults()
	var win, boot *Partition
	for _, p := range d.Partitions {
		isData := (d.Style == "MBR" && p.MBRType == 7) || strings.EqualFold(p.GPTType, agent.GPTTypeBasic)
		if isData && !p.Hidden && (win == nil || p.Size > win.Size) {
			win = p
		}
		if (d.Style == "GPT" && strings.EqualFold(p.GPTType, agent.GPTTypeESP)) || (d.Style == "MBR" && p.Active) {
			boot = p
		}
	}
	if win == nil || boot == nil {
		return errors.New("the disk has no partition for Windows or for its boot store")
	}
	win.Free = int64(s.FreeGB * gib)
	hive := NewSystemHive(s)
	win.Put(`Windows\System32\config\SYSTEM`, &File{Hive: hive, Modified: s.Modified})
	win.Put(`Windows\System32\winload.exe`, &File{Data: []byte("MZ winload.exe"), Size: 1 << 20, Modified: s.Modified})
	win.Put(`Windows\System32\winload.efi`, &File{Data: []byte("MZ winload.efi"), Size: 1 << 20, Modified: s.Modified})
	win.Put(`Windows\System32\ntoskrnl.exe`, &File{Data: []byte("MZ ntoskrnl.exe"), Size: 10 << 20, Modified: s.Modified})
	store := `Boot\BCD`
	if d.Style == "GPT" {
		store = `EFI\Microsoft\Boot\BCD`
		boot.Put(`EFI\Microsoft\Boot\bootmgfw.efi`, &File{Data: []byte("MZ bootmgfw"), Size: 1 << 20, Modified: s.Modified})
	} else {
		boot.Put(`bootmgr`, &File{Data: []byte("bootmgr"), Size: 400 << 10, Modified: s.Modified})
	}
	boot.Put(store, &File{BCD: s.BCD.Clone(), Modified: s.Modified})
	return nil
}

// NewSystemHive makes a SYSTEM hive with the spec's control sets, each with Azure's default
// CrashControl values.
func NewSystemHive(spec WindowsDiskSpec) *Hive {
	s := spec.withDefaults()
	h := NewHive()
	for _, k := range []string{"DriverDatabase", "HardwareConfig", "MountedDevices", "Setup", "Software", "WPA"} {
		h.MakeKey(k)
	}
	sets := append([]int(nil), s.ControlSets...)
	sort.Ints(sets)
	for _, n := range sets {
		cc := fmt.Sprintf(`ControlSet%03d\Control\CrashControl`, n)
		h.SetDWORD(cc, "AutoReboot", 1)
		h.SetDWORD(cc, "CrashDumpEnabled", s.CrashDumpEnabled)
		_ = h.Set(cc, "DumpFile", "REG_EXPAND_SZ", `%SystemRoot%\MEMORY.DMP`)
		h.SetDWORD(cc, "LogEvent", 1)
		_ = h.Set(cc, "MinidumpDir", "REG_EXPAND_SZ", `%SystemRoot%\Minidump`)
		h.SetDWORD(cc, "Overwrite", 1)
		h.MakeKey(fmt.Sprintf(`ControlSet%03d\Services`, n))
	}
	if !s.NoSelect {
		h.SetDWORD("Select", "Current", uint32(s.Current))
		h.SetDWORD("Select", "Default", uint32(s.Current))
		h.SetDWORD("Select", "Failed", 0)
		h.SetDWORD("Select", "LastKnownGood", uint32(s.Current))
	}
	return h
}

// DefaultBCD makes the boot store of an Azure Windows Server image: a boot manager whose
// default is one Windows loader, a recovery (WinRE) loader, and EMS settings turned off.
func DefaultBCD(generation string) *BCDStore {
	winload, bootmgrPath := `\Windows\system32\winload.exe`, ""
	if generation == agent.Gen2 {
		winload, bootmgrPath = `\Windows\system32\winload.efi`, `\EFI\Microsoft\Boot\bootmgfw.efi`
	}
	el := func(name string, values ...string) agent.BCDElement {
		return agent.BCDElement{Name: name, Values: values}
	}
	bootmgr := agent.BCDEntry{Type: "Windows Boot Manager", ID: agent.BCDBootMgr, Elements: []agent.BCDElement{
		el("identifier", agent.BCDBootMgr),
		el("device", `partition=\Device\HarddiskVolume1`),
	}}
	if bootmgrPath != "" {
		bootmgr.Elements = append(bootmgr.Elements, el("path", bootmgrPath))
	}
	bootmgr.Elements = append(bootmgr.Elements,
		el("description", "Windows Boot Manager"),
		el("locale", "en-US"),
		el("inherit", agent.BCDGlobalSettings),
		el("bootshutdowndisabled", "Yes"),
		el("default", DefaultLoaderID),
		el("resumeobject", resumeID),
		el("displayorder", DefaultLoaderID),
		el("toolsdisplayorder", "{b2721d73-1db4-4c62-bf78-c548a880142d}"),
		el("timeout", "30"),
	)
	loader := agent.BCDEntry{Type: "Windows Boot Loader", ID: DefaultLoaderID, Elements: []agent.BCDElement{
		el("identifier", DefaultLoaderID),
		el("device", `partition=\Device\HarddiskVolume2`),
		el("path", winload),
		el("description", "Windows Server"),
		el("locale", "en-US"),
		el("inherit", "{6efb52bf-1766-41db-a6b3-0ee5eff72bd7}"),
		el("recoverysequence", RecoveryID),
		el("displaymessageoverride", "Recovery"),
		el("recoveryenabled", "Yes"),
		el("isolatedcontext", "Yes"),
		el("allowedinmemorysettings", "0x15000075"),
		el("osdevice", `partition=\Device\HarddiskVolume2`),
		el("systemroot", `\Windows`),
		el("resumeobject", resumeID),
		el("nx", "OptOut"),
		el("bootstatuspolicy", "IgnoreAllFailures"),
	}}
	recovery := agent.BCDEntry{Type: "Windows Boot Loader", ID: RecoveryID, Elements: []agent.BCDElement{
		el("identifier", RecoveryID),
		el("device", `ramdisk=[\Device\HarddiskVolume2]\Recovery\WindowsRE\Winre.wim,`+ramdiskID),
		el("path", winload),
		el("description", "Windows Recovery Environment"),
		el("locale", "en-US"),
		el("inherit", "{6efb52bf-1766-41db-a6b3-0ee5eff72bd7}"),
		el("displaymessage", "Recovery"),
		el("osdevice", `ramdisk=[\Device\HarddiskVolume2]\Recovery\WindowsRE\Winre.wim,`+ramdiskID),
		el("systemroot", `\windows`),
		el("nx", "OptIn"),
		el("bootmenupolicy", "Standard"),
		el("winpe", "Yes"),
	}}
	ems := agent.BCDEntry{Type: "EMS Settings", ID: agent.BCDEMSSettings, Elements: []agent.BCDElement{
		el("identifier", agent.BCDEMSSettings),
		el("bootems", "No"),
	}}
	global := agent.BCDEntry{Type: "Global Settings", ID: agent.BCDGlobalSettings, Elements: []agent.BCDElement{
		el("identifier", agent.BCDGlobalSettings),
		el("inherit", "{4636856e-540f-4170-a130-a84776f4c654}", agent.BCDEMSSettings, "{5189b25c-5558-4bf2-bca4-289b11bd29e2}"),
	}}
	return &BCDStore{Entries: []agent.BCDEntry{bootmgr, loader, recovery, ems, global}}
}

// NewMachineFromListing builds a machine from a recorded disk listing (the JSON the agent's
// listing script prints): disks, partitions, letters, states. The disks hold no files; use
// InstallWindows or Partition.Put to add them.
func NewMachineFromListing(raw []byte) (*Machine, error) {
	disks, err := agent.ParseDisks(raw)
	if err != nil {
		return nil, err
	}
	m := &Machine{AutoMount: true, loaded: map[string]*File{}, rnd: rand.New(rand.NewPCG(3, 4))}
	for _, di := range disks {
		d := &Disk{Size: di.Size, Style: di.PartitionStyle, GUID: di.GUID, number: di.Number,
			offline: di.IsOffline, offlineReason: di.OfflineReason, readOnly: di.IsReadOnly,
			boot: di.IsBoot || di.IsSystem, attached: true}
		if di.Signature != nil {
			d.Signature = *di.Signature
		}
		if di.Lun != nil {
			d.lun = *di.Lun
		}
		if di.ScsiPort != nil {
			d.port = *di.ScsiPort
		}
		for _, pi := range di.Partitions {
			p := &Partition{Number: pi.PartitionNumber, Size: pi.Size, Free: pi.Size / 2, GPTType: pi.GptType,
				GUID: pi.GUID, Active: pi.IsActive, Hidden: pi.IsHidden}
			if pi.MbrType != nil {
				p.MBRType = *pi.MbrType
			}
			if l := pi.Letter(); l != "" {
				p.letter = l
			}
			d.Partitions = append(d.Partitions, p)
		}
		m.disks = append(m.disks, d)
	}
	return m, nil
}
