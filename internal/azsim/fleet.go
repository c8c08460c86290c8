package azsim

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Fleet describes the simulated subscription: its region, the rescue VMs of the pool and the VMs
// that may crash. It is the JSON file `handler local --fleet` reads; fleets/default.json is the
// default and fleets/fleet.schema.json its JSON Schema.
type Fleet struct {
	SubscriptionID string         `json:"subscriptionId"`
	Location       string         `json:"location"`
	RescueVMs      []RescueVMSpec `json:"rescueVms"`
	VMs            []VMSpec       `json:"vms"`
}

// RescueVMSpec is a VM of the rescue pool: a running Windows VM with boot diagnostics, whose data
// disk LUNs receive the copies of crashed OS disks.
type RescueVMSpec struct {
	Name             string            `json:"name"`
	ResourceGroup    string            `json:"resourceGroup"`
	Size             string            `json:"size"`
	Zone             string            `json:"zone,omitempty"`
	HyperVGeneration string            `json:"hyperVGeneration,omitempty"` // V1 or V2 (default V2)
	Tags             map[string]string `json:"tags,omitempty"`
}

// Behaviour is what a fleet VM does when started after its OS disk was patched.
type Behaviour string

// Behaviours.
const (
	// BehaviourCrashOnBoot crashes again at boot and, with crash dumps enabled, writes MEMORY.DMP.
	BehaviourCrashOnBoot Behaviour = "crash-on-boot"
	// BehaviourHealthyAfterPatch boots normally after the patch (the stop was transient).
	BehaviourHealthyAfterPatch Behaviour = "healthy-after-patch"
	// BehaviourCrashWithoutDump crashes again but never writes a dump.
	BehaviourCrashWithoutDump Behaviour = "crash-without-dump"
)

// VMSpec is a fleet VM. The fields after Tags describe the Windows volume on its OS disk; the
// simulator stores them with the VM (VM.Spec) for the simulated Windows disk to use.
type VMSpec struct {
	Name             string            `json:"name"`
	ResourceGroup    string            `json:"resourceGroup"`
	Size             string            `json:"size,omitempty"`     // a size of Sizes; or give MemoryGB
	MemoryGB         float64           `json:"memoryGB,omitempty"` // picks the smallest size with this memory
	OSType           string            `json:"osType"`             // Windows or Linux
	HyperVGeneration string            `json:"hyperVGeneration"`   // V1 or V2
	Zone             string            `json:"zone,omitempty"`     // "", "1", "2" or "3"
	Tags             map[string]string `json:"tags,omitempty"`
	PowerState       PowerState        `json:"powerState,omitempty"` // running (default), stopped, deallocated

	OSDiskSizeGB    int32          `json:"osDiskSizeGB,omitempty"` // default 127
	OSDiskFreeGB    float64        `json:"osDiskFreeGB"`
	DataDisks       []DataDiskSpec `json:"dataDisks,omitempty"`
	DumpPresent     bool           `json:"dumpPresent,omitempty"` // Windows\MEMORY.DMP already there
	BugCheck        BugCheckCode   `json:"bugCheck,omitempty"`    // the stop code the VM crashes with
	Behaviour       Behaviour      `json:"behaviour,omitempty"`   // default crash-on-boot
	UnmanagedOSDisk bool           `json:"unmanagedOsDisk,omitempty"`
	DiskEncryption  bool           `json:"diskEncryption,omitempty"`  // Azure Disk Encryption enabled
	BootDiagnostics *bool          `json:"bootDiagnostics,omitempty"` // default true
}

// DataDiskSpec is a data disk of a fleet VM.
type DataDiskSpec struct {
	LUN    int32   `json:"lun"`
	SizeGB int32   `json:"sizeGB"`
	FreeGB float64 `json:"freeGB"`
}

// BugCheckCode is a stop code. In JSON it is a hex string ("0x0000007E" or "0x7E") or a number.
type BugCheckCode uint32

// MarshalJSON writes the code as 0x%08X.
func (c BugCheckCode) MarshalJSON() ([]byte, error) {
	return json.Marshal(fmt.Sprintf("0x%08X", uint32(c)))
}

// UnmarshalJSON accepts a hex string or a number.
func (c *BugCheckCode) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 32)
		if err != nil {
			return fmt.Errorf("bug check code %q: %w", s, err)
		}
		*c = BugCheckCode(v)
		return nil
	}
	var v uint32
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("bug check code: %w", err)
	}
	*c = BugCheckCode(v)
	return nil
}

//go:embed fleets/default.json
var defaultFleetJSON []byte

// DefaultFleet returns the fleet that ships with vmrescue (fleets/default.json).
func DefaultFleet() *Fleet {
	f, err := ParseFleet(defaultFleetJSON)
	if err != nil {
		panic("azsim: embedded default fleet: " + err.Error())
	}
	return f
}

// LoadFleet reads and validates a fleet file.
func LoadFleet(path string) (*Fleet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	f, err := ParseFleet(b)
	if err != nil {
		return nil, fmt.Errorf("fleet %s: %w", path, err)
	}
	return f, nil
}

// ParseFleet decodes a fleet (unknown fields are an error) and validates it as a whole.
func ParseFleet(data []byte) (*Fleet, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f Fleet
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

var (
	guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	rgRE   = regexp.MustCompile(`^[-\w._()]{1,90}$`)
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
)

// Validate reports every problem of the fleet at once.
func (f *Fleet) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !guidRE.MatchString(f.SubscriptionID) {
		bad("subscriptionId %q is not a GUID", f.SubscriptionID)
	}
	if f.Location == "" {
		bad("location is empty")
	}
	seen := map[string]bool{}
	checkName := func(what, rg, name string) {
		if !rgRE.MatchString(rg) {
			bad("%s %q: resourceGroup %q is not a valid name", what, name, rg)
		}
		if !nameRE.MatchString(name) {
			bad("%s %q: not a valid VM name", what, name)
		}
		k := strings.ToLower(rg + "/" + name)
		if seen[k] {
			bad("%s %q: duplicate in resource group %q", what, name, rg)
		}
		seen[k] = true
	}
	checkZone := func(what, name, zone string) {
		switch zone {
		case "", "1", "2", "3":
		default:
			bad("%s %q: zone %q is not 1, 2 or 3", what, name, zone)
		}
	}
	checkGen := func(what, name, gen string) {
		switch strings.ToUpper(gen) {
		case "V1", "V2":
		default:
			bad("%s %q: hyperVGeneration %q is not V1 or V2", what, name, gen)
		}
	}
	if len(f.RescueVMs) == 0 {
		bad("no rescueVms")
	}
	for _, r := range f.RescueVMs {
		checkName("rescue VM", r.ResourceGroup, r.Name)
		checkZone("rescue VM", r.Name, r.Zone)
		if r.HyperVGeneration != "" {
			checkGen("rescue VM", r.Name, r.HyperVGeneration)
		}
		if _, ok := LookupSize(r.Size); !ok {
			bad("rescue VM %q: unknown size %q", r.Name, r.Size)
		}
	}
	for _, v := range f.VMs {
		checkName("VM", v.ResourceGroup, v.Name)
		checkZone("VM", v.Name, v.Zone)
		checkGen("VM", v.Name, v.HyperVGeneration)
		if v.OSType != "Windows" && v.OSType != "Linux" {
			bad("VM %q: osType %q is not Windows or Linux", v.Name, v.OSType)
		}
		if _, err := v.size(); err != nil {
			bad("VM %q: %w", v.Name, err)
		}
		switch v.PowerState {
		case "", PowerRunning, PowerStopped, PowerDeallocated:
		default:
			bad("VM %q: powerState %q is not running, stopped or deallocated", v.Name, v.PowerState)
		}
		switch v.Behaviour {
		case "", BehaviourCrashOnBoot, BehaviourHealthyAfterPatch, BehaviourCrashWithoutDump:
		default:
			bad("VM %q: behaviour %q is not %s, %s or %s", v.Name, v.Behaviour,
				BehaviourCrashOnBoot, BehaviourHealthyAfterPatch, BehaviourCrashWithoutDump)
		}
		if v.OSDiskSizeGB < 0 || float64(v.osDiskSizeGB()) < v.OSDiskFreeGB || v.OSDiskFreeGB < 0 {
			bad("VM %q: osDiskFreeGB %v does not fit osDiskSizeGB %d", v.Name, v.OSDiskFreeGB, v.osDiskSizeGB())
		}
		luns := map[int32]bool{}
		for _, d := range v.DataDisks {
			if d.LUN < 0 || d.LUN > maxLUN || luns[d.LUN] {
				bad("VM %q: data disk LUN %d is out of range or repeated", v.Name, d.LUN)
			}
			luns[d.LUN] = true
			if d.SizeGB <= 0 || d.FreeGB < 0 || d.FreeGB > float64(d.SizeGB) {
				bad("VM %q: data disk LUN %d: freeGB %v does not fit sizeGB %d", v.Name, d.LUN, d.FreeGB, d.SizeGB)
			}
		}
		if sz, err := v.size(); err == nil && len(v.DataDisks) > sz.MaxDataDiskCount {
			bad("VM %q: %d data disks exceed %s's limit of %d", v.Name, len(v.DataDisks), sz.Name, sz.MaxDataDiskCount)
		}
	}
	return errors.Join(errs...)
}

// VMID is the resource id of the fleet VM or rescue VM with this name ("" if none).
func (f *Fleet) VMID(name string) string {
	for _, v := range f.VMs {
		if strings.EqualFold(v.Name, name) {
			return vmID(f.SubscriptionID, v.ResourceGroup, v.Name)
		}
	}
	for _, r := range f.RescueVMs {
		if strings.EqualFold(r.Name, name) {
			return vmID(f.SubscriptionID, r.ResourceGroup, r.Name)
		}
	}
	return ""
}

func (v VMSpec) size() (VMSize, error) {
	if v.Size != "" {
		s, ok := LookupSize(v.Size)
		if !ok {
			return VMSize{}, fmt.Errorf("unknown size %q", v.Size)
		}
		return s, nil
	}
	if v.MemoryGB <= 0 {
		return VMSize{}, errors.New("give size or memoryGB")
	}
	s, ok := SizeForMemory(v.MemoryGB, v.HyperVGeneration)
	if !ok {
		return VMSize{}, fmt.Errorf("no size has %v GB of memory", v.MemoryGB)
	}
	return s, nil
}

func (v VMSpec) osDiskSizeGB() int32 {
	if v.OSDiskSizeGB == 0 {
		return 127
	}
	return v.OSDiskSizeGB
}

func (v VMSpec) behaviour() Behaviour {
	if v.Behaviour == "" {
		return BehaviourCrashOnBoot
	}
	return v.Behaviour
}
