package azsim

import (
	"cmp"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
)

const gib = int64(1) << 30

func (st *State) diskARMLocked(d *Disk) armcompute.Disk {
	state := armcompute.DiskStateUnattached
	if v, ok := st.vms[key(d.ManagedBy)]; ok {
		state = armcompute.DiskStateReserved
		if v.Power == PowerRunning || v.Power == PowerStarting || v.Power == PowerStopping {
			state = armcompute.DiskStateAttached
		}
	}
	props := &armcompute.DiskProperties{
		CreationData:      &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOption(d.CreateOption))},
		DiskSizeGB:        to.Ptr(d.SizeGB),
		DiskSizeBytes:     to.Ptr(int64(d.SizeGB) * gib),
		ProvisioningState: to.Ptr(d.ProvisioningState),
		TimeCreated:       to.Ptr(d.TimeCreated),
		UniqueID:          to.Ptr(d.UniqueID),
		DiskState:         to.Ptr(state),
	}
	if d.SourceID != "" {
		props.CreationData.SourceResourceID = to.Ptr(d.SourceID)
	}
	if d.OSType != "" {
		props.OSType = to.Ptr(armcompute.OperatingSystemTypes(d.OSType))
	}
	if d.HyperVGeneration != "" {
		props.HyperVGeneration = to.Ptr(armcompute.HyperVGeneration(d.HyperVGeneration))
	}
	if d.Encrypted {
		props.EncryptionSettingsCollection = &armcompute.EncryptionSettingsCollection{Enabled: to.Ptr(true),
			EncryptionSettingsVersion: to.Ptr("1.1")}
	}
	out := armcompute.Disk{
		ID: to.Ptr(d.ID), Name: to.Ptr(d.Name), Type: to.Ptr("Microsoft.Compute/disks"), Location: to.Ptr(d.Location),
		Tags: strTags(d.Tags), Zones: zones(d.Zone), Properties: props,
		SKU: &armcompute.DiskSKU{Name: to.Ptr(armcompute.DiskStorageAccountTypes(d.SKU))},
	}
	if d.ManagedBy != "" {
		out.ManagedBy = to.Ptr(d.ManagedBy)
	}
	return out
}

func (st *State) snapARMLocked(s *Snapshot) armcompute.Snapshot {
	props := &armcompute.SnapshotProperties{
		CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionCopy),
			SourceResourceID: to.Ptr(s.SourceID)},
		DiskSizeGB:        to.Ptr(s.SizeGB),
		DiskSizeBytes:     to.Ptr(int64(s.SizeGB) * gib),
		Incremental:       to.Ptr(s.Incremental),
		ProvisioningState: to.Ptr(s.ProvisioningState),
		TimeCreated:       to.Ptr(s.TimeCreated),
		UniqueID:          to.Ptr(s.UniqueID),
		DiskState:         to.Ptr(armcompute.DiskStateUnattached),
	}
	if src, ok := st.disks[key(s.SourceID)]; ok {
		props.CreationData.SourceUniqueID = to.Ptr(src.UniqueID)
	}
	if s.OSType != "" {
		props.OSType = to.Ptr(armcompute.OperatingSystemTypes(s.OSType))
	}
	if s.HyperVGeneration != "" {
		props.HyperVGeneration = to.Ptr(armcompute.HyperVGeneration(s.HyperVGeneration))
	}
	if s.Encrypted {
		props.EncryptionSettingsCollection = &armcompute.EncryptionSettingsCollection{Enabled: to.Ptr(true)}
	}
	sku := armcompute.SnapshotStorageAccountTypesStandardLRS
	if s.Incremental {
		props.CompletionPercent = to.Ptr(st.completionLocked(s))
		props.IncrementalSnapshotFamilyID = to.Ptr(stableUUID("family|" + key(s.SourceID)))
		sku = armcompute.SnapshotStorageAccountTypesStandardZRS
	}
	return armcompute.Snapshot{
		ID: to.Ptr(s.ID), Name: to.Ptr(s.Name), Type: to.Ptr("Microsoft.Compute/snapshots"), Location: to.Ptr(s.Location),
		Tags: strTags(s.Tags), Properties: props, SKU: &armcompute.SnapshotSKU{Name: to.Ptr(sku)},
	}
}

func (st *State) getDisk(rg, name string) (armcompute.Disk, *armError) {
	st.lock()
	defer st.unlock()
	canon, err := st.rgLocked(rg)
	if err != nil {
		return armcompute.Disk{}, err
	}
	id := diskID(st.sub, canon, name)
	d, ok := st.disks[key(id)]
	if !ok {
		return armcompute.Disk{}, notFound("Microsoft.Compute/disks", id)
	}
	return st.diskARMLocked(d), nil
}

func (st *State) listDisks(rg string) ([]*armcompute.Disk, *armError) {
	st.lock()
	defer st.unlock()
	if rg != "" {
		canon, err := st.rgLocked(rg)
		if err != nil {
			return nil, err
		}
		rg = canon
	}
	ds := slices.Collect(maps.Values(st.disks))
	slices.SortFunc(ds, func(a, b *Disk) int { return cmp.Compare(key(a.ID), key(b.ID)) })
	var out []*armcompute.Disk
	for _, d := range ds {
		if rg == "" || strings.EqualFold(d.ResourceGroup, rg) {
			a := st.diskARMLocked(d)
			out = append(out, &a)
		}
	}
	return out, nil
}

func (st *State) getSnapshot(rg, name string) (armcompute.Snapshot, *armError) {
	st.lock()
	defer st.unlock()
	canon, err := st.rgLocked(rg)
	if err != nil {
		return armcompute.Snapshot{}, err
	}
	id := snapshotID(st.sub, canon, name)
	s, ok := st.snaps[key(id)]
	if !ok {
		return armcompute.Snapshot{}, notFound("Microsoft.Compute/snapshots", id)
	}
	return st.snapARMLocked(s), nil
}

func (st *State) listSnapshots(rg string) ([]*armcompute.Snapshot, *armError) {
	st.lock()
	defer st.unlock()
	if rg != "" {
		canon, err := st.rgLocked(rg)
		if err != nil {
			return nil, err
		}
		rg = canon
	}
	ss := slices.Collect(maps.Values(st.snaps))
	slices.SortFunc(ss, func(a, b *Snapshot) int { return cmp.Compare(key(a.ID), key(b.ID)) })
	var out []*armcompute.Snapshot
	for _, s := range ss {
		if rg == "" || strings.EqualFold(s.ResourceGroup, rg) {
			a := st.snapARMLocked(s)
			out = append(out, &a)
		}
	}
	return out, nil
}

// source is what a disk or snapshot can be copied from.
type source struct {
	id, location, osType, gen string
	sizeGB                    int32
	encrypted                 bool
	content                   Content
}

func (st *State) sourceLocked(id string, wantDisk bool) (source, *armError) {
	if d, ok := st.disks[key(id)]; ok {
		if err := st.busyLocked(d.ID); err != nil {
			return source{}, err
		}
		return source{d.ID, d.Location, d.OSType, d.HyperVGeneration, d.SizeGB, d.Encrypted, st.content[key(d.ID)]}, nil
	}
	if s, ok := st.snaps[key(id)]; ok && !wantDisk {
		if err := st.busyLocked(s.ID); err != nil {
			return source{}, err
		}
		if st.strictCopy && s.Incremental && st.completionLocked(s) < 100 {
			return source{}, newARMError(http.StatusConflict, CodeOperationNotAllowed,
				"The background copy of snapshot '%s' is %.1f%% complete; a disk can be created from it when it reaches 100%%.",
				s.Name, st.completionLocked(s)).withTarget("creationData.sourceResourceId")
		}
		return source{s.ID, s.Location, s.OSType, s.HyperVGeneration, s.SizeGB, s.Encrypted, st.content[key(s.ID)]}, nil
	}
	return source{}, newARMError(http.StatusNotFound, CodeNotFound, "Source resource '%s' was not found.", id).
		withTarget("creationData.sourceResourceId")
}

func sameSource(a string, cd *armcompute.CreationData) bool {
	return cd == nil || cd.SourceResourceID == nil || strings.EqualFold(a, *cd.SourceResourceID)
}

// putDisk creates a managed disk (createOption Copy from a snapshot or disk, or Empty) or updates
// the tags of an existing one.
func (st *State) putDisk(op, rg, name string, body armcompute.Disk) (armcompute.Disk, *operation, *armError) {
	st.lock()
	defer st.unlock()
	canon, err := st.rgLocked(rg)
	if err != nil {
		return armcompute.Disk{}, nil, err
	}
	id := diskID(st.sub, canon, name)
	if err := st.busyLocked(id); err != nil {
		return armcompute.Disk{}, nil, err
	}
	var cd *armcompute.CreationData
	if body.Properties != nil {
		cd = body.Properties.CreationData
	}
	if d, ok := st.disks[key(id)]; ok {
		if d.Original {
			st.violationLocked(ViolationModifyOriginal, d.ID, "PUT on an original OS disk")
			return armcompute.Disk{}, nil, newARMError(http.StatusConflict, CodeOperationNotAllowed,
				"azsim refuses to modify original OS disk '%s' (vmrescue safety rule; violation recorded).", d.Name)
		}
		if !sameSource(d.SourceID, cd) || (cd != nil && cd.CreateOption != nil && !strings.EqualFold(string(*cd.CreateOption), d.CreateOption)) {
			return armcompute.Disk{}, nil, newARMError(http.StatusConflict, CodePropertyChangeNotAllowed,
				"Changing property 'creationData' is not allowed.").withTarget("creationData")
		}
		if body.Tags != nil {
			d.Tags = plainTags(body.Tags)
		}
		d.ProvisioningState = ProvisioningUpdating
		o := st.beginLocked(op, d.ID, st.timing.of(op, LatencyWrite), func() { d.ProvisioningState = ProvisioningSucceeded })
		final := st.diskARMLocked(d)
		final.Properties.ProvisioningState = to.Ptr(ProvisioningSucceeded)
		return final, o, nil
	}
	if body.Location == nil || *body.Location == "" {
		return armcompute.Disk{}, nil, newARMError(http.StatusBadRequest, CodeLocationRequired,
			"The location property is required for this definition.")
	}
	if cd == nil || cd.CreateOption == nil {
		return armcompute.Disk{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
			"Required parameter 'creationData.createOption' is missing (null).").withTarget("creationData.createOption")
	}
	d := &Disk{
		ID: id, Name: name, ResourceGroup: canon, Location: *body.Location, Zone: zoneOf(body.Zones),
		SKU: "Standard_LRS", CreateOption: string(*cd.CreateOption), Tags: plainTags(body.Tags),
		ProvisioningState: ProvisioningCreating, TimeCreated: st.now(), UniqueID: stableUUID(id + st.now().String()),
	}
	if body.SKU != nil && body.SKU.Name != nil {
		d.SKU = string(*body.SKU.Name)
	}
	p := body.Properties
	var content Content
	switch *cd.CreateOption {
	case armcompute.DiskCreateOptionCopy:
		if cd.SourceResourceID == nil {
			return armcompute.Disk{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
				"Required parameter 'creationData.sourceResourceId' is missing (null).").withTarget("creationData.sourceResourceId")
		}
		src, err := st.sourceLocked(*cd.SourceResourceID, false)
		if err != nil {
			return armcompute.Disk{}, nil, err
		}
		if !strings.EqualFold(src.location, d.Location) {
			return armcompute.Disk{}, nil, newARMError(http.StatusBadRequest, CodeBadRequest,
				"The source '%s' is in location '%s'; a disk in '%s' cannot be copied from it.", src.id, src.location, d.Location)
		}
		d.SourceID, d.SizeGB, d.OSType, d.HyperVGeneration, d.Encrypted = src.id, src.sizeGB, src.osType, src.gen, src.encrypted
		if p.DiskSizeGB != nil {
			if *p.DiskSizeGB < src.sizeGB {
				return armcompute.Disk{}, nil, newARMError(http.StatusBadRequest, CodeBadRequest,
					"Disk size %d GB is smaller than the size of the source, %d GB.", *p.DiskSizeGB, src.sizeGB).withTarget("diskSizeGB")
			}
			d.SizeGB = *p.DiskSizeGB
		}
		if src.content != nil {
			content = src.content.Clone()
		}
	case armcompute.DiskCreateOptionEmpty:
		if p.DiskSizeGB == nil || *p.DiskSizeGB <= 0 {
			return armcompute.Disk{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
				"Required parameter 'diskSizeGB' is missing (null).").withTarget("diskSizeGB")
		}
		d.SizeGB = *p.DiskSizeGB
	default:
		return armcompute.Disk{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
			"azsim models createOption Copy and Empty, not '%s'.", *cd.CreateOption).withTarget("creationData.createOption")
	}
	if p.OSType != nil {
		d.OSType = string(*p.OSType)
	}
	if p.HyperVGeneration != nil {
		d.HyperVGeneration = string(*p.HyperVGeneration)
	}
	if content == nil {
		content = NewFiles(nil)
	}
	st.disks[key(id)] = d
	st.content[key(id)] = content
	o := st.beginLocked(op, id, st.timing.of(op, LatencyWrite), func() { d.ProvisioningState = ProvisioningSucceeded })
	final := st.diskARMLocked(d)
	final.Properties.ProvisioningState = to.Ptr(ProvisioningSucceeded)
	return final, o, nil
}

// deleteDisk deletes an unattached disk. A disk that does not exist answers at once (nil op), as
// ARM's 204 does.
func (st *State) deleteDisk(op, rg, name string) (*operation, *armError) {
	st.lock()
	defer st.unlock()
	canon, err := st.rgLocked(rg)
	if err != nil {
		return nil, err
	}
	id := diskID(st.sub, canon, name)
	d, ok := st.disks[key(id)]
	if !ok {
		return nil, nil
	}
	if err := st.busyLocked(id); err != nil {
		return nil, err
	}
	if d.Original {
		st.violationLocked(ViolationDeleteOriginal, d.ID, "DELETE of an original OS disk")
		return nil, newARMError(http.StatusConflict, CodeOperationNotAllowed,
			"azsim refuses to delete original OS disk '%s' (vmrescue safety rule; violation recorded).", d.Name)
	}
	if d.ManagedBy != "" {
		return nil, newARMError(http.StatusConflict, CodeOperationNotAllowed, "Disk %s is attached to VM %s.", d.Name, d.ManagedBy)
	}
	d.ProvisioningState = ProvisioningDeleting
	return st.beginLocked(op, id, st.timing.of(op, LatencyWrite), func() {
		delete(st.disks, key(id))
		delete(st.content, key(id))
	}), nil
}

// putSnapshot creates a snapshot of a disk (createOption Copy) or updates an existing one's tags.
// The content is copied when the request is accepted: a snapshot is a point in time.
func (st *State) putSnapshot(op, rg, name string, body armcompute.Snapshot) (armcompute.Snapshot, *operation, *armError) {
	st.lock()
	defer st.unlock()
	canon, err := st.rgLocked(rg)
	if err != nil {
		return armcompute.Snapshot{}, nil, err
	}
	id := snapshotID(st.sub, canon, name)
	if err := st.busyLocked(id); err != nil {
		return armcompute.Snapshot{}, nil, err
	}
	var cd *armcompute.CreationData
	if body.Properties != nil {
		cd = body.Properties.CreationData
	}
	if s, ok := st.snaps[key(id)]; ok {
		if !sameSource(s.SourceID, cd) {
			return armcompute.Snapshot{}, nil, newARMError(http.StatusConflict, CodePropertyChangeNotAllowed,
				"Changing property 'creationData' is not allowed.").withTarget("creationData")
		}
		if body.Tags != nil {
			s.Tags = plainTags(body.Tags)
		}
		final := st.snapARMLocked(s)
		return final, nil, nil
	}
	if body.Location == nil || *body.Location == "" {
		return armcompute.Snapshot{}, nil, newARMError(http.StatusBadRequest, CodeLocationRequired,
			"The location property is required for this definition.")
	}
	if cd == nil || cd.CreateOption == nil || *cd.CreateOption != armcompute.DiskCreateOptionCopy || cd.SourceResourceID == nil {
		return armcompute.Snapshot{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
			"azsim models snapshots with createOption Copy and a sourceResourceId.").withTarget("creationData")
	}
	src, aerr := st.sourceLocked(*cd.SourceResourceID, true)
	if aerr != nil {
		return armcompute.Snapshot{}, nil, aerr
	}
	if !strings.EqualFold(src.location, *body.Location) {
		return armcompute.Snapshot{}, nil, newARMError(http.StatusBadRequest, CodeBadRequest,
			"The source disk '%s' is in location '%s'; a snapshot in '%s' cannot be taken of it.", src.id, src.location, *body.Location)
	}
	s := &Snapshot{
		ID: id, Name: name, ResourceGroup: canon, Location: *body.Location, SourceID: src.id, SizeGB: src.sizeGB,
		OSType: src.osType, HyperVGeneration: src.gen, Tags: plainTags(body.Tags), Encrypted: src.encrypted,
		ProvisioningState: ProvisioningCreating, TimeCreated: st.now(), UniqueID: stableUUID(id + st.now().String()),
	}
	p := body.Properties
	s.Incremental = p.Incremental != nil && *p.Incremental
	if p.OSType != nil {
		s.OSType = string(*p.OSType)
	}
	if p.HyperVGeneration != nil {
		s.HyperVGeneration = string(*p.HyperVGeneration)
	}
	var content Content = NewFiles(nil)
	if src.content != nil {
		content = src.content.Clone()
	}
	st.snaps[key(id)] = s
	st.content[key(id)] = content
	copyTime := st.timing.of(LatencySnapshotCopy, LatencySnapshotCopy)
	o := st.beginLocked(op, id, st.timing.of(op, LatencyWrite), func() {
		s.ProvisioningState = ProvisioningSucceeded
		s.TimeCreated = st.now()
		s.copyDone = s.TimeCreated
		if s.Incremental {
			s.copyDone = s.TimeCreated.Add(copyTime)
			st.logOpLocked(LatencySnapshotCopy, key(id), s.TimeCreated, s.copyDone)
		}
	})
	final := st.snapARMLocked(s)
	final.Properties.ProvisioningState = to.Ptr(ProvisioningSucceeded)
	if s.Incremental {
		final.Properties.CompletionPercent = to.Ptr(float32(0))
	}
	return final, o, nil
}

func (st *State) deleteSnapshot(op, rg, name string) (*operation, *armError) {
	st.lock()
	defer st.unlock()
	canon, err := st.rgLocked(rg)
	if err != nil {
		return nil, err
	}
	id := snapshotID(st.sub, canon, name)
	s, ok := st.snaps[key(id)]
	if !ok {
		return nil, nil
	}
	if err := st.busyLocked(id); err != nil {
		return nil, err
	}
	s.ProvisioningState = ProvisioningDeleting
	return st.beginLocked(op, id, st.timing.of(op, LatencyWrite), func() {
		delete(st.snaps, key(id))
		delete(st.content, key(id))
	}), nil
}
