package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/disks"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lock"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/skus"
	"github.com/vmrescue/vmrescue/internal/vms"
)

// rescueAttach is the RescueAttach stage: pick a rescue VM with a free LUN in the VM's region and
// zone, reserve the LUN, make a disk from the backup snapshot in that zone (keeping OS type and
// hyperVGeneration), and attach it.
func (p *Pipeline) rescueAttach(ctx context.Context, r *run) error {
	a := r.msg.Artifacts
	if a.SnapshotID == "" {
		return fault.Terminal(errors.New("no backup snapshot in the artifacts"))
	}
	vm, err := p.getVM(ctx, r.vm, true) // with instance view: hyperVGeneration
	if err != nil {
		return fmt.Errorf("read VM: %w", err)
	}
	snapName := incident.BackupSnapshotName(r.msg.IncidentID)
	snap, ok, err := p.getSnapshot(ctx, r.vm.SubscriptionID, r.vm.ResourceGroup, snapName)
	switch {
	case err != nil:
		return fmt.Errorf("read backup snapshot: %w", err)
	case !ok && !r.dry:
		return fault.Terminal(fmt.Errorf("backup snapshot %s does not exist", snapName))
	case !ok: // dry run: the snapshot was only planned
		snap.OSType, snap.HyperVGeneration, snap.CompletionPercent = vm.OSType, vm.HyperVGeneration, 100
	case !snap.Complete():
		return wait(capacityWait, "backup snapshot is %.1f%% copied", snap.CompletionPercent)
	}
	az, err := p.in(r.vm.SubscriptionID)
	if err != nil {
		return err
	}
	size, err := az.SKUs.Size(ctx, vm.Location, vm.Size)
	if errors.Is(err, skus.ErrUnknownSize) {
		return fault.Terminal(fmt.Errorf("size of the VM: %w", err)) // its memory, which the dump needs, is unknown
	}
	if err != nil {
		return fmt.Errorf("size of the VM: %w", err)
	}
	r.made.MemoryGB = size.MemoryGB
	r.made.Location, r.made.Zone = vm.Location, vm.Zone

	diskName := incident.RescueDiskName(r.msg.IncidentID)
	did := diskID(r.vm, diskName)
	pick, err := p.awaitRescue(ctx, r, vm.Location, vm.Zone, did)
	if err != nil {
		return err
	}
	p.leaveBacklog(r.msg.IncidentID)
	r.made.RescueVMID, r.made.LUN = pick.vm.ID, ptr(pick.lun)

	osType, gen := cmp.Or(snap.OSType, vm.OSType), cmp.Or(snap.HyperVGeneration, vm.HyperVGeneration)
	if _, err := r.ensureDisk(ctx, diskName, a.SnapshotID, pick.vm.Location, pick.vm.Zone, osType, gen, vm.OSDiskSKU, incident.RoleRescueDisk); err != nil {
		return err
	}
	r.made.RescueDiskID = did
	if !pick.attached {
		if err := r.attach(ctx, mustVM(pick.vm.ID), did, pick.lun); err != nil {
			return fmt.Errorf("attach %s to %s: %w", diskName, pick.vm.Name, err)
		}
	} else if err := r.found(ctx, "VirtualMachines.BeginAttachDetachDataDisks", pick.vm.ID); err != nil {
		return err
	}
	return r.complete(ctx, incident.StageOfflinePatch, time.Time{}, 0)
}

// ensureDisk finds or makes the incident's disk name from sourceID in the VM's resource group.
func (r *run) ensureDisk(ctx context.Context, name, sourceID, location, zone, osType, gen, sku, role string) (disks.Facts, error) {
	p := r.p
	rg := r.vm.ResourceGroup
	did := diskID(r.vm, name)
	d, exists, err := p.getDisk(ctx, r.vm.SubscriptionID, rg, name)
	if err != nil {
		return disks.Facts{}, fmt.Errorf("read disk %s: %w", name, err)
	}
	if exists {
		if !strings.EqualFold(d.SourceID, sourceID) {
			return disks.Facts{}, fault.Terminal(fmt.Errorf("disk %s exists with source %s, not %s", name, d.SourceID, sourceID))
		}
		return d, r.found(ctx, "Disks.BeginCreateOrUpdate", did)
	}
	if sku == "" {
		sku = string(armcompute.DiskStorageAccountTypesPremiumLRS)
	}
	body := armcompute.Disk{
		Location: &location,
		Tags:     tagsOf(r.msg.IncidentID, role, sourceID),
		SKU:      &armcompute.DiskSKU{Name: ptr(armcompute.DiskStorageAccountTypes(sku))},
		Properties: &armcompute.DiskProperties{
			CreationData: &armcompute.CreationData{CreateOption: ptr(armcompute.DiskCreateOptionCopy), SourceResourceID: &sourceID},
		},
	}
	if zone != "" {
		body.Zones = []*string{&zone}
	}
	if osType != "" {
		body.Properties.OSType = ptr(armcompute.OperatingSystemTypes(osType))
	}
	if gen != "" {
		body.Properties.HyperVGeneration = ptr(armcompute.HyperVGeneration(gen))
	}
	az, err := p.in(r.vm.SubscriptionID)
	if err != nil {
		return disks.Facts{}, err
	}
	var made armcompute.DisksClientCreateOrUpdateResponse
	err = r.write(ctx, "Disks.BeginCreateOrUpdate", did, func(ctx context.Context) error {
		var err error
		made, err = armclientLRO(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.DisksClientCreateOrUpdateResponse], error) {
			return az.Disks.BeginCreateOrUpdate(ctx, rg, name, body, nil)
		})
		return err
	})
	if armerr.IsConflict(err) {
		if again, ok, gerr := p.getDisk(ctx, r.vm.SubscriptionID, rg, name); gerr == nil && ok {
			return again, nil
		}
	}
	if err != nil {
		return disks.Facts{}, fmt.Errorf("create disk %s: %w", name, err)
	}
	if r.dry {
		return disks.Facts{ID: did, Name: name, SourceID: sourceID, Zone: zone}, nil
	}
	return disks.FactsOf(made.Disk), nil
}

// rescuePick is the rescue VM and LUN a disk goes to.
type rescuePick struct {
	vm       vms.Facts
	lun      int32
	attached bool // the disk is already attached there
}

// candidate is a rescue VM that can take the disk, and how much room it has.
type candidate struct {
	vm      vms.Facts
	holders map[int32]string
	free    int
	max     int // the size's data-disk limit
}

// awaitRescue picks where diskID goes (pickRescue). With no capacity it waits in this process's
// line for a LUN to be given back, within what is left of the invocation's time in line
// (Pipeline.LineWait); after that the stage waits by a scheduled message. A harvest's disk goes
// before a new rescue disk (wake.go).
func (p *Pipeline) awaitRescue(ctx context.Context, r *run, location, zone, diskID string) (rescuePick, error) {
	if r.dry {
		return p.pickRescue(ctx, r, location, zone, diskID)
	}
	var pick rescuePick
	var full error
	got, err := waitInLine(ctx, r.exit, &p.lines, lunLine, r.stage == incident.StageHarvestDump, p.linePoll(capacityWait), r.lineLeft(), func(ctx context.Context) (bool, error) {
		var err error
		pick, err = p.pickRescue(ctx, r, location, zone, diskID)
		var w *waitError
		if errors.As(err, &w) {
			if full == nil {
				full = err
				return false, r.note(ctx, w.reason+": waiting in line for a LUN")
			}
			return false, nil
		}
		return err == nil, err
	})
	if err == nil && !got {
		err = full
	}
	return pick, err
}

// lunLine is the line of invocations waiting for a LUN of any rescue VM.
const lunLine = "lun"

// releaseLUN gives a LUN reservation back and wakes the first invocation of this process waiting
// for a LUN. A reservation already given back or taken over is no error.
func (p *Pipeline) releaseLUN(ctx context.Context, rescueVMID string, lun int32, incidentID string) error {
	if err := p.Locks.ReleaseLUN(ctx, rescueVMID, lun, incidentID); err != nil && !isNotHolder(err) {
		return err
	}
	p.lines.wakeFirst(lunLine)
	return nil
}

// pickRescue finds where diskID goes: where it is already attached, where the incident already
// holds a LUN, or the rescue VM in location and zone with the most free LUNs under its size's
// data-disk limit, whose lowest free LUN it then reserves. In a dry run it reserves nothing. With
// no capacity anywhere it asks to wait, without bound.
func (p *Pipeline) pickRescue(ctx context.Context, r *run, location, zone, diskID string) (rescuePick, error) {
	var cands []candidate
	var why []string
	pool := 0 // the LUNs of the rescue VMs in location and zone
	for _, id := range p.Config.RescueVMs {
		rid, err := resourceid.ParseVM(id)
		if err != nil {
			return rescuePick{}, fault.Terminal(fmt.Errorf("rescue VM %s: %w", id, err))
		}
		vm, err := p.getVM(ctx, rid, true)
		if armerr.IsNotFound(err) {
			why = append(why, rid.Name+": not found")
			continue
		}
		if err != nil {
			return rescuePick{}, fmt.Errorf("read rescue VM %s: %w", rid.Name, err)
		}
		if lun, ok := vm.LUNOf(diskID); ok {
			return rescuePick{vm: vm, lun: lun, attached: true}, nil
		}
		switch {
		case !vms.SameLocation(vm.Location, location):
			why = append(why, fmt.Sprintf("%s: in %s, not %s", vm.Name, vm.Location, location))
			continue
		case vm.Zone != zone:
			why = append(why, fmt.Sprintf("%s: zone %q, not %q", vm.Name, vm.Zone, zone))
			continue
		case vm.Power != vms.PowerRunning:
			why = append(why, fmt.Sprintf("%s: %s, not running", vm.Name, orUnknown(vm.Power)))
			continue
		}
		raz, err := p.in(rid.SubscriptionID)
		if err != nil {
			return rescuePick{}, err
		}
		size, err := raz.SKUs.Size(ctx, vm.Location, vm.Size)
		if err != nil {
			return rescuePick{}, fmt.Errorf("size of rescue VM %s: %w", vm.Name, err)
		}
		holders, err := p.Locks.LUNHolders(ctx, vm.ID)
		if err != nil {
			return rescuePick{}, fmt.Errorf("LUN reservations of %s: %w", vm.Name, err)
		}
		for lun, h := range holders {
			if h == r.msg.IncidentID {
				if _, taken := vm.DataDiskAt(lun); !taken {
					return rescuePick{vm: vm, lun: lun}, nil
				}
			}
		}
		used := map[int32]bool{}
		for _, d := range vm.DataDisks {
			used[d.LUN] = true
		}
		for lun := range holders {
			used[lun] = true
		}
		pool += size.MaxDataDiskCount
		free := size.MaxDataDiskCount - len(used)
		if free <= 0 {
			why = append(why, fmt.Sprintf("%s: %d of %d data disks in use or reserved", vm.Name, len(used), size.MaxDataDiskCount))
			continue
		}
		cands = append(cands, candidate{vm: vm, holders: holders, free: free, max: size.MaxDataDiskCount})
	}
	if !r.dry {
		p.backlog.setLUNs(placeKey(location, zone), pool)
	}
	slices.SortStableFunc(cands, func(a, b candidate) int { return b.free - a.free })
candidates:
	for _, c := range cands {
		for lun := int32(0); lun < lock.MaxLUN; lun++ {
			if _, taken := c.vm.DataDiskAt(lun); taken {
				continue
			}
			if _, held := c.holders[lun]; held {
				continue
			}
			if r.dry {
				return rescuePick{vm: c.vm, lun: lun}, r.note(ctx, fmt.Sprintf("dry run: LUN %d of %s would be reserved", lun, c.vm.Name))
			}
			ok, _, err := p.Locks.ReserveLUN(ctx, c.vm.ID, lun, r.msg.IncidentID)
			if err != nil {
				return rescuePick{}, fmt.Errorf("reserve LUN %d of %s: %w", lun, c.vm.Name, err)
			}
			if !ok {
				continue // another incident took it between the list and the reservation: try the next
			}
			// Two incidents that each saw the last free slot reserve different LUNs: count again,
			// and give the slot back if the reservations now exceed the size's limit.
			over, err := p.overCommitted(ctx, c)
			if err != nil {
				return rescuePick{}, err
			}
			if over {
				if err := p.releaseLUN(ctx, c.vm.ID, lun, r.msg.IncidentID); err != nil {
					return rescuePick{}, fmt.Errorf("release LUN %d of %s: %w", lun, c.vm.Name, err)
				}
				why = append(why, c.vm.Name+": the last free data disk slot went to another incident")
				continue candidates
			}
			return rescuePick{vm: c.vm, lun: lun}, nil
		}
	}
	reason := "no rescue capacity in " + location
	if zone != "" {
		reason += " zone " + zone
	}
	if len(why) > 0 {
		reason += " (" + strings.Join(why, "; ") + ")"
	}
	return rescuePick{}, &waitError{reason: reason, delay: capacityWait, unbounded: true}
}

// overCommitted reports whether the rescue VM's attached disks and LUN reservations, counted
// afresh, exceed its size's data-disk limit.
func (p *Pipeline) overCommitted(ctx context.Context, c candidate) (bool, error) {
	holders, err := p.Locks.LUNHolders(ctx, c.vm.ID)
	if err != nil {
		return false, fmt.Errorf("LUN reservations of %s: %w", c.vm.Name, err)
	}
	used := map[int32]bool{}
	for _, d := range c.vm.DataDisks {
		used[d.LUN] = true
	}
	for lun := range holders {
		used[lun] = true
	}
	return len(used) > c.max, nil
}

// mustVM parses a VM id vmrescue itself read from ARM or its configuration.
func mustVM(id string) resourceid.ID {
	rid, err := resourceid.ParseVM(id)
	if err != nil {
		return resourceid.ID{}
	}
	return rid
}
