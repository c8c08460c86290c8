package azsim

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// maxLUN is the highest LUN Azure accepts for a data disk (LUNs are 0..63 on every size).
const maxLUN = 63

// PowerState is a VM's power state as its instance view reports it (PowerState/<value>).
type PowerState string

// Power states.
const (
	PowerRunning      PowerState = "running"
	PowerStopped      PowerState = "stopped"
	PowerDeallocated  PowerState = "deallocated"
	PowerStarting     PowerState = "starting"
	PowerStopping     PowerState = "stopping"
	PowerDeallocating PowerState = "deallocating"
)

// Provisioning states.
const (
	ProvisioningSucceeded = "Succeeded"
	ProvisioningUpdating  = "Updating"
	ProvisioningCreating  = "Creating"
	ProvisioningDeleting  = "Deleting"
)

// VM is a simulated virtual machine.
type VM struct {
	ID                string
	Name              string
	ResourceGroup     string
	Location          string
	Zone              string // "" when regional
	Size              string
	OSType            string // Windows or Linux
	HyperVGeneration  string // V1 or V2
	Power             PowerState
	ProvisioningState string
	OSDiskID          string // managed OS disk; "" when unmanaged
	OSDiskName        string
	OSDiskVHD         string // unmanaged OS disk's VHD URI
	DiskEncryption    bool   // Azure Disk Encryption extension and encryptionSettingsCollection
	DataDisks         []DataDiskRef
	Tags              map[string]string
	BootDiagnostics   bool
	Rescue            bool   // a VM of the rescue pool
	Spec              VMSpec // the fleet entry (zero for rescue VMs)
	VMID              string
	TimeCreated       time.Time
	// AgentNotReady: the VM agent has not reported since the VM last started (only with
	// Options.GuestReportsAgent; SetAgentReady clears it).
	AgentNotReady bool
}

// DataDiskRef is a data disk attached to a VM.
type DataDiskRef struct {
	LUN     int32
	DiskID  string
	Name    string
	Caching string
}

// Disk is a simulated managed disk.
type Disk struct {
	ID                string
	Name              string
	ResourceGroup     string
	Location          string
	Zone              string
	SizeGB            int32
	SKU               string
	OSType            string
	HyperVGeneration  string
	CreateOption      string // FromImage, Copy, Empty
	SourceID          string // creationData.sourceResourceId
	Tags              map[string]string
	ManagedBy         string // the VM it is attached to
	ProvisioningState string
	TimeCreated       time.Time
	Encrypted         bool // encryptionSettingsCollection.enabled (Azure Disk Encryption)
	Original          bool // the OS disk a fleet VM was seeded with
	UniqueID          string
}

// Snapshot is a simulated managed disk snapshot.
type Snapshot struct {
	ID                string
	Name              string
	ResourceGroup     string
	Location          string
	Incremental       bool
	SourceID          string
	SizeGB            int32
	OSType            string
	HyperVGeneration  string
	Tags              map[string]string
	ProvisioningState string
	TimeCreated       time.Time
	CompletionPercent float32 // computed from the clock when read
	Encrypted         bool
	UniqueID          string

	copyDone time.Time // when CompletionPercent reaches 100
}

// Violation is a breach of vmrescue's safety rule that the simulator saw (and refused).
type Violation struct {
	Time       time.Time
	Kind       string // delete-original-disk, modify-original-disk, attach-original-disk
	ResourceID string
	Detail     string
}

// Violation kinds.
const (
	ViolationDeleteOriginal = "delete-original-disk"
	ViolationModifyOriginal = "modify-original-disk"
	ViolationAttachOriginal = "attach-original-disk"
)

// Operation is the simulated time one long-running operation or background process took: from
// its start to when it was due (at the time scale). Operations lists them; the demo sums them
// into an incident's critical path.
type Operation struct {
	Name     string // the operation ("VirtualMachines.BeginStart") or a pseudo-operation of the latency table
	Resource string // the resource id it held, lower-cased
	Start    time.Time
	End      time.Time
}

// operation is a long-running operation in progress on one resource. Its effects that ARM shows
// at once (the new model, "Updating", "deallocating") are applied when it begins; finish applies
// the rest when it is due.
type operation struct {
	name    string
	key     string // the resource it holds
	started time.Time
	due     time.Time
	waiting bool // due not known yet (a Run Command still executing)
	finish  func()
	done    bool
}

// State is the simulated subscription. All methods are safe for concurrent use.
type State struct {
	mu       sync.Mutex
	sub      string
	location string
	clock    Clock
	timing   *timing
	log      *slog.Logger

	rgs        map[string]string // lower name -> name
	vms        map[string]*VM
	disks      map[string]*Disk
	snaps      map[string]*Snapshot
	content    map[string]Content // lower disk or snapshot id
	originals  map[string]string  // lower disk id -> content hash at seeding
	runCmds    map[string]*RunCommand
	tickets    map[string]*Ticket
	bootDiag   map[string]*bootDiagnostics
	ops        map[string]*operation
	opLog      []Operation
	violations []Violation
	ticketSeq  int
	strictCopy bool
	publicURL  string

	executor  RunCommandExecutor
	onStarted func(vmID string)
	// guestAgent: a started fleet VM's agent is Not Ready until SetAgentReady.
	guestAgent bool
	blobs      blobAppender
}

func newState(sub, location string, clock Clock, tm *timing, log *slog.Logger) *State {
	return &State{
		sub: sub, location: location, clock: clock, timing: tm, log: log,
		rgs: map[string]string{}, vms: map[string]*VM{}, disks: map[string]*Disk{},
		snaps: map[string]*Snapshot{}, content: map[string]Content{}, originals: map[string]string{},
		runCmds: map[string]*RunCommand{}, tickets: map[string]*Ticket{},
		bootDiag: map[string]*bootDiagnostics{}, ops: map[string]*operation{},
	}
}

// Resource ids, in ARM's canonical casing.

func vmID(sub, rg, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s", sub, rg, name)
}

func diskID(sub, rg, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/disks/%s", sub, rg, name)
}

func snapshotID(sub, rg, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/snapshots/%s", sub, rg, name)
}

// ResourceID builds the id of a resource of this subscription. kind is "virtualMachines", "disks"
// or "snapshots".
func (st *State) ResourceID(kind, resourceGroup, name string) string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/%s/%s", st.sub, resourceGroup, kind, name)
}

func key(id string) string { return strings.ToLower(id) }

func lastSegment(id string) string { return id[strings.LastIndex(id, "/")+1:] }

func resourceGroupOf(id string) string {
	parts := strings.Split(id, "/")
	for i := 0; i+1 < len(parts); i++ {
		if strings.EqualFold(parts[i], "resourceGroups") {
			return parts[i+1]
		}
	}
	return ""
}

// stableHex is a deterministic hex string derived from s, for names and ids Azure would randomize.
func stableHex(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}

func stableUUID(s string) string {
	h := stableHex(s, 32)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func (st *State) now() time.Time { return st.clock.Now() }

// settleLocked completes every operation that is due, oldest first.
func (st *State) settleLocked() {
	now := st.now()
	var due []*operation
	for _, op := range st.ops {
		if !op.waiting && !now.Before(op.due) {
			due = append(due, op)
		}
	}
	slices.SortFunc(due, func(a, b *operation) int { return a.due.Compare(b.due) })
	for _, op := range due {
		op.done = true
		delete(st.ops, op.key)
		if op.finish != nil {
			op.finish()
		}
	}
}

// lock takes the state lock and completes what is due. Every method that reads or writes the
// model starts with it.
func (st *State) lock() {
	st.mu.Lock()
	st.settleLocked()
}

func (st *State) unlock() { st.mu.Unlock() }

// busyLocked is the 409 for a write on a resource whose operation is still running.
func (st *State) busyLocked(id string) *armError {
	if _, ok := st.ops[key(id)]; ok {
		return conflictInProgress()
	}
	return nil
}

// beginLocked registers an operation that holds resource id for d.
func (st *State) beginLocked(name, id string, d time.Duration, finish func()) *operation {
	now := st.now()
	op := &operation{name: name, key: key(id), started: now, due: now.Add(d), finish: finish}
	st.ops[op.key] = op
	st.logOpLocked(name, op.key, op.started, op.due)
	st.wakeAt(op.due)
	return op
}

// logOpLocked records an operation's simulated span for Operations.
func (st *State) logOpLocked(name, resource string, start, end time.Time) {
	st.opLog = append(st.opLog, Operation{Name: name, Resource: resource, Start: start, End: end})
}

// Operations lists every long-running operation begun so far, with its simulated span, in the
// order they began; a Run Command's execution is listed when its duration is known, and an
// incremental snapshot's background copy (LatencySnapshotCopy) when the snapshot is created.
func (st *State) Operations() []Operation {
	st.mu.Lock()
	defer st.mu.Unlock()
	return slices.Clone(st.opLog)
}

// wakeAt completes what is due at t even if no client looks: a VM whose start nobody polls still
// boots (and OnVMStarted still fires).
func (st *State) wakeAt(t time.Time) {
	time.AfterFunc(max(t.Sub(st.now()), 0), func() {
		st.lock()
		st.unlock()
	})
}

// opState reports whether op is done and, if not, how long until it is due (0 when unknown).
func (st *State) opState(op *operation) (bool, time.Duration) {
	st.lock()
	defer st.unlock()
	if op.done {
		return true, 0
	}
	if op.waiting {
		return false, 0
	}
	return false, op.due.Sub(st.now())
}

func (st *State) rgLocked(rg string) (string, *armError) {
	if name, ok := st.rgs[strings.ToLower(rg)]; ok {
		return name, nil
	}
	return "", newARMError(http.StatusNotFound, CodeResourceGroupNotFound, "Resource group '%s' could not be found.", rg)
}

func (st *State) vmLocked(rg, name string) (*VM, *armError) {
	canon, err := st.rgLocked(rg)
	if err != nil {
		return nil, err
	}
	v, ok := st.vms[key(vmID(st.sub, canon, name))]
	if !ok {
		return nil, notFound("Microsoft.Compute/virtualMachines", vmID(st.sub, canon, name))
	}
	return v, nil
}

func (st *State) violationLocked(kind, id, format string, args ...any) {
	v := Violation{Time: st.now(), Kind: kind, ResourceID: id, Detail: fmt.Sprintf(format, args...)}
	st.violations = append(st.violations, v)
	st.log.Error("azsim: safety violation", "kind", kind, "resource", id, "detail", v.Detail)
}

// Getters. Each returns a copy.

func cloneVM(v *VM) VM {
	c := *v
	c.DataDisks = slices.Clone(v.DataDisks)
	c.Tags = maps.Clone(v.Tags)
	c.Spec.Tags = maps.Clone(v.Spec.Tags)
	c.Spec.DataDisks = slices.Clone(v.Spec.DataDisks)
	return c
}

func cloneDisk(d *Disk) Disk { c := *d; c.Tags = maps.Clone(d.Tags); return c }

func (st *State) cloneSnapLocked(s *Snapshot) Snapshot {
	c := *s
	c.Tags = maps.Clone(s.Tags)
	c.CompletionPercent = st.completionLocked(s)
	return c
}

func (st *State) completionLocked(s *Snapshot) float32 {
	if s.ProvisioningState != ProvisioningSucceeded {
		return 0
	}
	now := st.now()
	if !now.Before(s.copyDone) {
		return 100
	}
	total := s.copyDone.Sub(s.TimeCreated)
	if total <= 0 {
		return 100
	}
	p := float32(float64(now.Sub(s.TimeCreated)) / float64(total) * 100)
	return min(max(p, 0), 99.9)
}

// VM returns the VM with this id (case-insensitive).
func (st *State) VM(id string) (VM, bool) {
	st.lock()
	defer st.unlock()
	v, ok := st.vms[key(id)]
	if !ok {
		return VM{}, false
	}
	return cloneVM(v), true
}

// VMs lists every VM, sorted by id.
func (st *State) VMs() []VM {
	st.lock()
	defer st.unlock()
	out := make([]VM, 0, len(st.vms))
	for _, v := range st.vms {
		out = append(out, cloneVM(v))
	}
	slices.SortFunc(out, func(a, b VM) int { return cmp.Compare(key(a.ID), key(b.ID)) })
	return out
}

// Disk returns the managed disk with this id.
func (st *State) Disk(id string) (Disk, bool) {
	st.lock()
	defer st.unlock()
	d, ok := st.disks[key(id)]
	if !ok {
		return Disk{}, false
	}
	return cloneDisk(d), true
}

// Disks lists every managed disk, sorted by id.
func (st *State) Disks() []Disk {
	st.lock()
	defer st.unlock()
	out := make([]Disk, 0, len(st.disks))
	for _, d := range st.disks {
		out = append(out, cloneDisk(d))
	}
	slices.SortFunc(out, func(a, b Disk) int { return cmp.Compare(key(a.ID), key(b.ID)) })
	return out
}

// Snapshot returns the snapshot with this id.
func (st *State) Snapshot(id string) (Snapshot, bool) {
	st.lock()
	defer st.unlock()
	s, ok := st.snaps[key(id)]
	if !ok {
		return Snapshot{}, false
	}
	return st.cloneSnapLocked(s), true
}

// Snapshots lists every snapshot, sorted by id.
func (st *State) Snapshots() []Snapshot {
	st.lock()
	defer st.unlock()
	out := make([]Snapshot, 0, len(st.snaps))
	for _, s := range st.snaps {
		out = append(out, st.cloneSnapLocked(s))
	}
	slices.SortFunc(out, func(a, b Snapshot) int { return cmp.Compare(key(a.ID), key(b.ID)) })
	return out
}

// DiskContent returns the live content of a disk or snapshot: changes to it are changes to the
// disk. Use it to inspect or, for a test, to damage a disk on purpose.
func (st *State) DiskContent(id string) (Content, bool) {
	st.lock()
	defer st.unlock()
	c, ok := st.content[key(id)]
	return c, ok
}

// ChangedOriginalDisks lists the original OS disks of fleet VMs whose content differs from what
// they were seeded with, or that no longer exist. vmrescue must never change one, so a test
// asserts this is empty.
func (st *State) ChangedOriginalDisks() []string {
	st.lock()
	defer st.unlock()
	var out []string
	for k, h := range st.originals {
		d, ok := st.disks[k]
		if !ok {
			out = append(out, k)
			continue
		}
		if c := st.content[k]; c == nil || c.Hash() != h {
			out = append(out, d.ID)
		}
	}
	slices.Sort(out)
	return out
}

// Violations lists the breaches of the safety rule the simulator refused or saw.
func (st *State) Violations() []Violation {
	st.lock()
	defer st.unlock()
	return slices.Clone(st.violations)
}

// Tagged lists the ids of the VMs, disks and snapshots that carry tag (with any value).
func (st *State) Tagged(tag string) []string {
	st.lock()
	defer st.unlock()
	var out []string
	has := func(m map[string]string) bool {
		for k := range m {
			if strings.EqualFold(k, tag) {
				return true
			}
		}
		return false
	}
	for _, v := range st.vms {
		if has(v.Tags) {
			out = append(out, v.ID)
		}
	}
	for _, d := range st.disks {
		if has(d.Tags) {
			out = append(out, d.ID)
		}
	}
	for _, s := range st.snaps {
		if has(s.Tags) {
			out = append(out, s.ID)
		}
	}
	slices.Sort(out)
	return out
}

// SetPowerState puts a VM in a power state directly, as the guest or the platform would (a crash
// loop, a failed boot). It refuses while an operation runs on the VM.
func (st *State) SetPowerState(id string, p PowerState) error {
	st.lock()
	defer st.unlock()
	v, ok := st.vms[key(id)]
	if !ok {
		return fmt.Errorf("azsim: no VM %s", id)
	}
	if err := st.busyLocked(v.ID); err != nil {
		return err
	}
	v.Power = p
	return nil
}

// SetAgentReady records that the guest of a running VM booted from osDiskID and its VM agent
// reports Ready. It refuses when the VM runs on another disk or is not running: that boot is
// no longer the VM's.
func (st *State) SetAgentReady(id, osDiskID string) error {
	st.lock()
	defer st.unlock()
	v, ok := st.vms[key(id)]
	if !ok {
		return fmt.Errorf("azsim: no VM %s", id)
	}
	if v.Power != PowerRunning {
		return fmt.Errorf("azsim: VM %s is %s, not running", v.Name, v.Power)
	}
	if !strings.EqualFold(v.OSDiskID, osDiskID) {
		return fmt.Errorf("azsim: VM %s runs on %s, not %s", v.Name, v.OSDiskID, osDiskID)
	}
	v.AgentNotReady = false
	return nil
}

// SetDiskContent replaces the content of a disk or snapshot, for seeding a simulated Windows
// volume after New. On an original OS disk it also becomes the new baseline of
// ChangedOriginalDisks.
func (st *State) SetDiskContent(id string, c Content) error {
	st.lock()
	defer st.unlock()
	k := key(id)
	_, isDisk := st.disks[k]
	_, isSnap := st.snaps[k]
	if (!isDisk && !isSnap) || c == nil {
		return fmt.Errorf("azsim: no disk or snapshot %s", id)
	}
	st.content[k] = c
	if _, ok := st.originals[k]; ok {
		st.originals[k] = c.Hash()
	}
	return nil
}

// SetVMTags replaces a VM's tags.
func (st *State) SetVMTags(id string, tags map[string]string) error {
	st.lock()
	defer st.unlock()
	v, ok := st.vms[key(id)]
	if !ok {
		return fmt.Errorf("azsim: no VM %s", id)
	}
	v.Tags = maps.Clone(tags)
	return nil
}

// seed builds the fleet's resources.
func (st *State) seed(f *Fleet, contentFor func(VMSpec) Content) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	created := st.now()
	addRG := func(rg string) { st.rgs[strings.ToLower(rg)] = rg }
	addOSDisk := func(vm *VM, sizeGB int32, c Content, original bool) {
		name := vm.Name + "_OsDisk_1_" + stableHex(vm.ID, 32)
		d := &Disk{
			ID: diskID(st.sub, vm.ResourceGroup, name), Name: name, ResourceGroup: vm.ResourceGroup,
			Location: vm.Location, Zone: vm.Zone, SizeGB: sizeGB, SKU: "Premium_LRS", OSType: vm.OSType,
			HyperVGeneration: vm.HyperVGeneration, CreateOption: "FromImage", Tags: map[string]string{},
			ManagedBy: vm.ID, ProvisioningState: ProvisioningSucceeded, TimeCreated: created,
			Encrypted: vm.DiskEncryption, Original: original, UniqueID: stableUUID(name),
		}
		st.disks[key(d.ID)] = d
		st.content[key(d.ID)] = c
		if original {
			st.originals[key(d.ID)] = c.Hash()
		}
		vm.OSDiskID, vm.OSDiskName = d.ID, name
	}
	for _, r := range f.RescueVMs {
		addRG(r.ResourceGroup)
		gen := cmp.Or(strings.ToUpper(r.HyperVGeneration), "V2")
		sz, _ := LookupSize(r.Size)
		vm := &VM{
			ID: vmID(st.sub, r.ResourceGroup, r.Name), Name: r.Name, ResourceGroup: r.ResourceGroup,
			Location: f.Location, Zone: r.Zone, Size: sz.Name, OSType: "Windows", HyperVGeneration: gen,
			Power: PowerRunning, ProvisioningState: ProvisioningSucceeded, Tags: maps.Clone(r.Tags),
			BootDiagnostics: true, Rescue: true, TimeCreated: created,
		}
		if vm.Tags == nil {
			vm.Tags = map[string]string{}
		}
		vm.VMID = stableUUID(vm.ID)
		addOSDisk(vm, 127, NewFiles(nil), false)
		st.vms[key(vm.ID)] = vm
	}
	for _, s := range f.VMs {
		addRG(s.ResourceGroup)
		sz, err := s.size()
		if err != nil {
			return fmt.Errorf("VM %s: %w", s.Name, err)
		}
		vm := &VM{
			ID: vmID(st.sub, s.ResourceGroup, s.Name), Name: s.Name, ResourceGroup: s.ResourceGroup,
			Location: f.Location, Zone: s.Zone, Size: sz.Name, OSType: s.OSType,
			HyperVGeneration: strings.ToUpper(s.HyperVGeneration), Power: cmp.Or(s.PowerState, PowerRunning),
			ProvisioningState: ProvisioningSucceeded, DiskEncryption: s.DiskEncryption,
			Tags: maps.Clone(s.Tags), BootDiagnostics: s.BootDiagnostics == nil || *s.BootDiagnostics,
			Spec: s, TimeCreated: created,
		}
		vm.Spec.Tags = maps.Clone(s.Tags)
		vm.Spec.DataDisks = slices.Clone(s.DataDisks)
		if vm.Tags == nil {
			vm.Tags = map[string]string{}
		}
		vm.VMID = stableUUID(vm.ID)
		if s.UnmanagedOSDisk {
			vm.OSDiskName = s.Name + "-osdisk"
			vm.OSDiskVHD = fmt.Sprintf("https://%s.blob.core.windows.net/vhds/%s-osdisk.vhd", "stg"+stableHex(vm.ID, 12), s.Name)
		} else {
			var c Content
			if contentFor != nil {
				c = contentFor(s)
			}
			if c == nil {
				c = defaultContent(s)
			}
			addOSDisk(vm, s.osDiskSizeGB(), c, true)
		}
		for _, dd := range s.DataDisks {
			name := fmt.Sprintf("%s_DataDisk_%d", s.Name, dd.LUN)
			d := &Disk{
				ID: diskID(st.sub, s.ResourceGroup, name), Name: name, ResourceGroup: s.ResourceGroup,
				Location: f.Location, Zone: s.Zone, SizeGB: dd.SizeGB, SKU: "Premium_LRS",
				CreateOption: "Empty", Tags: map[string]string{}, ManagedBy: vm.ID,
				ProvisioningState: ProvisioningSucceeded, TimeCreated: created, UniqueID: stableUUID(name),
			}
			st.disks[key(d.ID)] = d
			st.content[key(d.ID)] = NewFiles(nil)
			vm.DataDisks = append(vm.DataDisks, DataDiskRef{LUN: dd.LUN, DiskID: d.ID, Name: name, Caching: "ReadOnly"})
		}
		st.vms[key(vm.ID)] = vm
	}
	return nil
}

// defaultContent is the content of a seeded OS disk when Options.ContentFor gives none: one file
// describing the volume, so that the hash covers what the fleet says about it.
func defaultContent(s VMSpec) Content {
	desc := fmt.Sprintf("name=%s\nosType=%s\ngeneration=%s\nfreeGB=%v\ndumpPresent=%v\nbugCheck=0x%08X\nbehaviour=%s\n",
		s.Name, s.OSType, s.HyperVGeneration, s.OSDiskFreeGB, s.DumpPresent, uint32(s.BugCheck), s.behaviour())
	return NewFiles(map[string][]byte{"azsim/volume.txt": []byte(desc)})
}
