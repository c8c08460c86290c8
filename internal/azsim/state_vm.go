package azsim

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
)

func strTags(m map[string]string) map[string]*string {
	out := make(map[string]*string, len(m))
	for k, v := range m {
		out[k] = to.Ptr(v)
	}
	return out
}

func plainTags(m map[string]*string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if v != nil {
			out[k] = *v
		} else {
			out[k] = ""
		}
	}
	return out
}

func zones(z string) []*string {
	if z == "" {
		return nil
	}
	return []*string{to.Ptr(z)}
}

func zoneOf(zs []*string) string {
	if len(zs) == 0 || zs[0] == nil {
		return ""
	}
	return *zs[0]
}

// generation normalizes a hyperVGeneration; Azure treats a missing one as V1.
func generation(g string) string { return cmp.Or(strings.ToUpper(g), "V1") }

func powerDisplay(p PowerState) string { return "VM " + string(p) }

func status(code, display string, t *time.Time) *armcompute.InstanceViewStatus {
	return &armcompute.InstanceViewStatus{Code: to.Ptr(code), DisplayStatus: to.Ptr(display),
		Level: to.Ptr(armcompute.StatusLevelTypesInfo), Time: t}
}

func provisioningStatus(p string, t *time.Time) *armcompute.InstanceViewStatus {
	if p == ProvisioningSucceeded {
		return status("ProvisioningState/succeeded", "Provisioning succeeded", t)
	}
	return status("ProvisioningState/"+strings.ToLower(p), p, t)
}

// vmARMLocked renders a VM as ARM returns it, with its instance view when expand is set.
func (st *State) vmARMLocked(v *VM, expand bool) armcompute.VirtualMachine {
	osDisk := &armcompute.OSDisk{
		OSType:       to.Ptr(armcompute.OperatingSystemTypes(v.OSType)),
		Name:         to.Ptr(v.OSDiskName),
		CreateOption: to.Ptr(armcompute.DiskCreateOptionTypesFromImage),
		Caching:      to.Ptr(armcompute.CachingTypesReadWrite),
		DeleteOption: to.Ptr(armcompute.DiskDeleteOptionTypesDetach),
	}
	if v.OSDiskVHD != "" {
		osDisk.Vhd = &armcompute.VirtualHardDisk{URI: to.Ptr(v.OSDiskVHD)}
		osDisk.DiskSizeGB = to.Ptr(v.Spec.osDiskSizeGB())
	} else if d, ok := st.disks[key(v.OSDiskID)]; ok {
		osDisk.DiskSizeGB = to.Ptr(d.SizeGB)
		osDisk.ManagedDisk = &armcompute.ManagedDiskParameters{ID: to.Ptr(d.ID),
			StorageAccountType: to.Ptr(armcompute.StorageAccountTypes(d.SKU))}
		if d.CreateOption != "FromImage" {
			osDisk.CreateOption = to.Ptr(armcompute.DiskCreateOptionTypesAttach)
		}
	} else {
		osDisk.ManagedDisk = &armcompute.ManagedDiskParameters{ID: to.Ptr(v.OSDiskID)}
	}
	var data []*armcompute.DataDisk
	for _, dd := range v.DataDisks {
		disk := &armcompute.DataDisk{
			Lun: to.Ptr(dd.LUN), Name: to.Ptr(dd.Name), CreateOption: to.Ptr(armcompute.DiskCreateOptionTypesAttach),
			Caching:      to.Ptr(armcompute.CachingTypes(cmp.Or(dd.Caching, "None"))),
			ManagedDisk:  &armcompute.ManagedDiskParameters{ID: to.Ptr(dd.DiskID)},
			ToBeDetached: to.Ptr(false), DeleteOption: to.Ptr(armcompute.DiskDeleteOptionTypesDetach),
		}
		if d, ok := st.disks[key(dd.DiskID)]; ok {
			disk.DiskSizeGB = to.Ptr(d.SizeGB)
			disk.ManagedDisk.StorageAccountType = to.Ptr(armcompute.StorageAccountTypes(d.SKU))
		}
		data = append(data, disk)
	}
	props := &armcompute.VirtualMachineProperties{
		HardwareProfile:    &armcompute.HardwareProfile{VMSize: to.Ptr(armcompute.VirtualMachineSizeTypes(v.Size))},
		StorageProfile:     &armcompute.StorageProfile{OSDisk: osDisk, DataDisks: data},
		DiagnosticsProfile: &armcompute.DiagnosticsProfile{BootDiagnostics: &armcompute.BootDiagnostics{Enabled: to.Ptr(v.BootDiagnostics)}},
		OSProfile:          &armcompute.OSProfile{ComputerName: to.Ptr(v.Name)},
		ProvisioningState:  to.Ptr(v.ProvisioningState),
		VMID:               to.Ptr(v.VMID),
		TimeCreated:        to.Ptr(v.TimeCreated),
	}
	vm := armcompute.VirtualMachine{
		ID: to.Ptr(v.ID), Name: to.Ptr(v.Name), Type: to.Ptr("Microsoft.Compute/virtualMachines"),
		Location: to.Ptr(v.Location), Tags: strTags(v.Tags), Zones: zones(v.Zone), Properties: props,
	}
	if v.DiskEncryption {
		vm.Resources = []*armcompute.VirtualMachineExtension{{
			ID:   to.Ptr(v.ID + "/extensions/AzureDiskEncryption"),
			Name: to.Ptr("AzureDiskEncryption"), Type: to.Ptr("Microsoft.Compute/virtualMachines/extensions"),
			Location: to.Ptr(v.Location),
			Properties: &armcompute.VirtualMachineExtensionProperties{
				Publisher: to.Ptr("Microsoft.Azure.Security"), Type: to.Ptr("AzureDiskEncryption"),
				TypeHandlerVersion: to.Ptr("2.2"), ProvisioningState: to.Ptr(ProvisioningSucceeded),
			},
		}}
	}
	if expand {
		iv := st.instanceViewLocked(v)
		props.InstanceView = &iv
	}
	return vm
}

func (st *State) instanceViewLocked(v *VM) armcompute.VirtualMachineInstanceView {
	now := st.now()
	iv := armcompute.VirtualMachineInstanceView{
		ComputerName:     to.Ptr(v.Name),
		HyperVGeneration: to.Ptr(armcompute.HyperVGenerationType(v.HyperVGeneration)),
		Statuses: []*armcompute.InstanceViewStatus{
			provisioningStatus(v.ProvisioningState, &now),
			status("PowerState/"+string(v.Power), powerDisplay(v.Power), nil),
		},
	}
	if v.OSType == "Windows" {
		iv.OSName, iv.OSVersion = to.Ptr("Windows Server 2022 Datacenter"), to.Ptr("10.0.20348")
	}
	switch {
	case v.Power == PowerRunning && v.AgentNotReady:
		// What Azure shows for a guest whose agent has not reported, such as one that
		// crash-loops at boot.
		iv.VMAgent = &armcompute.VirtualMachineAgentInstanceView{VMAgentVersion: to.Ptr("Unknown"),
			Statuses: []*armcompute.InstanceViewStatus{{Code: to.Ptr("ProvisioningState/Unavailable"),
				Level: to.Ptr(armcompute.StatusLevelTypesWarning), DisplayStatus: to.Ptr("Not Ready"),
				Message: to.Ptr("VM status blob is found but not yet populated."), Time: &now}}}
	case v.Power == PowerRunning:
		iv.VMAgent = &armcompute.VirtualMachineAgentInstanceView{VMAgentVersion: to.Ptr("2.7.41491.1102"),
			Statuses: []*armcompute.InstanceViewStatus{status("ProvisioningState/succeeded", "Ready", &now)}}
	}
	disk := func(name string, d *Disk) *armcompute.DiskInstanceView {
		dv := &armcompute.DiskInstanceView{Name: to.Ptr(name),
			Statuses: []*armcompute.InstanceViewStatus{provisioningStatus(ProvisioningSucceeded, &now)}}
		if d != nil && d.Encrypted {
			dv.EncryptionSettings = []*armcompute.DiskEncryptionSettings{{Enabled: to.Ptr(true)}}
		}
		return dv
	}
	iv.Disks = append(iv.Disks, disk(v.OSDiskName, st.disks[key(v.OSDiskID)]))
	for _, dd := range v.DataDisks {
		iv.Disks = append(iv.Disks, disk(dd.Name, st.disks[key(dd.DiskID)]))
	}
	if v.BootDiagnostics {
		iv.BootDiagnostics = &armcompute.BootDiagnosticsInstanceView{}
	}
	if v.DiskEncryption {
		iv.Extensions = []*armcompute.VirtualMachineExtensionInstanceView{{
			Name: to.Ptr("AzureDiskEncryption"), Type: to.Ptr("Microsoft.Azure.Security.AzureDiskEncryption"),
			TypeHandlerVersion: to.Ptr("2.2.0.38"),
			Statuses:           []*armcompute.InstanceViewStatus{status("ProvisioningState/succeeded", "Provisioning succeeded", &now)},
		}}
	}
	return iv
}

func (st *State) getVM(rg, name string, expand bool) (armcompute.VirtualMachine, *armError) {
	st.lock()
	defer st.unlock()
	v, err := st.vmLocked(rg, name)
	if err != nil {
		return armcompute.VirtualMachine{}, err
	}
	return st.vmARMLocked(v, expand), nil
}

func (st *State) vmInstanceView(rg, name string) (armcompute.VirtualMachineInstanceView, *armError) {
	st.lock()
	defer st.unlock()
	v, err := st.vmLocked(rg, name)
	if err != nil {
		return armcompute.VirtualMachineInstanceView{}, err
	}
	return st.instanceViewLocked(v), nil
}

// listVMs lists the VMs of a resource group, or of the subscription when rg is "".
func (st *State) listVMs(rg string) ([]*armcompute.VirtualMachine, *armError) {
	st.lock()
	defer st.unlock()
	if rg != "" {
		canon, err := st.rgLocked(rg)
		if err != nil {
			return nil, err
		}
		rg = canon
	}
	var out []*armcompute.VirtualMachine
	for _, v := range st.sortedVMsLocked() {
		if rg == "" || strings.EqualFold(v.ResourceGroup, rg) {
			vm := st.vmARMLocked(v, false)
			out = append(out, &vm)
		}
	}
	return out, nil
}

func (st *State) sortedVMsLocked() []*VM {
	vs := slices.Collect(maps.Values(st.vms))
	slices.SortFunc(vs, func(a, b *VM) int { return cmp.Compare(key(a.ID), key(b.ID)) })
	return vs
}

// powerTransition says how a power operation moves a VM.
type powerTransition struct {
	from    []PowerState // states it acts on; any other settled state is already the target
	during  PowerState
	target  PowerState
	started bool // the VM boots at the end
}

var (
	transDeallocate = powerTransition{from: []PowerState{PowerRunning, PowerStopped}, during: PowerDeallocating, target: PowerDeallocated}
	transPowerOff   = powerTransition{from: []PowerState{PowerRunning}, during: PowerStopping, target: PowerStopped}
	transStart      = powerTransition{from: []PowerState{PowerDeallocated, PowerStopped}, during: PowerStarting, target: PowerRunning, started: true}
)

// power runs a power operation. A VM already in the target state answers at once (nil op), as
// ARM does.
func (st *State) power(op, rg, name string, tr powerTransition) (*operation, *armError) {
	st.lock()
	defer st.unlock()
	v, err := st.vmLocked(rg, name)
	if err != nil {
		return nil, err
	}
	if err := st.busyLocked(v.ID); err != nil {
		return nil, err
	}
	if !slices.Contains(tr.from, v.Power) {
		if v.Power == tr.target || (tr.target == PowerStopped && v.Power == PowerDeallocated) {
			return nil, nil
		}
		return nil, newARMError(http.StatusConflict, CodeOperationNotAllowed,
			"Operation '%s' is not allowed on VM '%s' since the VM is %s.", opVerb(op), v.Name, v.Power)
	}
	v.Power, v.ProvisioningState = tr.during, ProvisioningUpdating
	id := v.ID
	return st.beginLocked(op, v.ID, st.timing.of(op, LatencyWrite), func() {
		v.Power, v.ProvisioningState = tr.target, ProvisioningSucceeded
		if tr.started {
			v.AgentNotReady = st.guestAgent && !v.Rescue
		}
		if tr.started && st.onStarted != nil {
			go st.onStarted(id)
		}
	}), nil
}

func opVerb(op string) string {
	_, m, _ := strings.Cut(op, ".")
	return strings.ToLower(strings.TrimPrefix(m, "Begin"))
}

// vmChange is what a VM PUT or PATCH asks for.
type vmChange struct {
	osDisk    *armcompute.OSDisk
	dataDisks []*armcompute.DataDisk // PUT only
	putData   bool
	tags      map[string]*string
	setTags   bool
	size      string
	zones     []*string
	setZones  bool
}

// updateVM applies a PUT or PATCH of an existing VM. The one change vmrescue makes is the OS disk
// swap; tags are replaced as asked; a data disk list that differs from the VM's is refused (the
// simulator models attach and detach only through attachDetachDataDisks).
func (st *State) updateVM(op, rg, name string, ch vmChange) (armcompute.VirtualMachine, *operation, *armError) {
	st.lock()
	defer st.unlock()
	v, err := st.vmLocked(rg, name)
	if err != nil {
		if err.Status == http.StatusNotFound && err.Code == CodeResourceNotFound {
			err = newARMError(http.StatusBadRequest, CodeInvalidParameter,
				"azsim does not create virtual machines; '%s' does not exist.", name)
		}
		return armcompute.VirtualMachine{}, nil, err
	}
	if err := st.busyLocked(v.ID); err != nil {
		return armcompute.VirtualMachine{}, nil, err
	}
	if ch.size != "" && !strings.EqualFold(ch.size, v.Size) {
		return armcompute.VirtualMachine{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
			"azsim does not model resizing VM '%s'.", v.Name).withTarget("hardwareProfile.vmSize")
	}
	if ch.setZones && zoneOf(ch.zones) != v.Zone {
		return armcompute.VirtualMachine{}, nil, newARMError(http.StatusConflict, CodePropertyChangeNotAllowed,
			"Changing property 'zones' is not allowed.").withTarget("zones")
	}
	if ch.putData && !sameDataDisks(v.DataDisks, ch.dataDisks) {
		return armcompute.VirtualMachine{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
			"azsim models attaching and detaching data disks only through attachDetachDataDisks; the data disks of VM '%s' differ from its model.", v.Name).
			withTarget("storageProfile.dataDisks")
	}
	var newDisk *Disk
	if ch.osDisk != nil && ch.osDisk.ManagedDisk != nil && ch.osDisk.ManagedDisk.ID != nil &&
		!strings.EqualFold(*ch.osDisk.ManagedDisk.ID, v.OSDiskID) {
		d, err := st.checkSwapLocked(v, *ch.osDisk.ManagedDisk.ID)
		if err != nil {
			return armcompute.VirtualMachine{}, nil, err
		}
		newDisk = d
	}
	// Apply: ARM shows the new model at once, with provisioningState Updating until done.
	if newDisk != nil {
		if old, ok := st.disks[key(v.OSDiskID)]; ok {
			old.ManagedBy = ""
		}
		newDisk.ManagedBy = v.ID
		v.OSDiskID, v.OSDiskName = newDisk.ID, newDisk.Name
	}
	if ch.setTags {
		v.Tags = plainTags(ch.tags)
	}
	v.ProvisioningState = ProvisioningUpdating
	o := st.beginLocked(op, v.ID, st.timing.of(op, LatencyWrite), func() { v.ProvisioningState = ProvisioningSucceeded })
	final := st.vmARMLocked(v, false)
	final.Properties.ProvisioningState = to.Ptr(ProvisioningSucceeded)
	return final, o, nil
}

func sameDataDisks(have []DataDiskRef, want []*armcompute.DataDisk) bool {
	if len(have) != len(want) {
		return false
	}
	for _, w := range want {
		if w == nil || w.Lun == nil || w.ManagedDisk == nil || w.ManagedDisk.ID == nil {
			return false
		}
		if !slices.ContainsFunc(have, func(h DataDiskRef) bool {
			return h.LUN == *w.Lun && strings.EqualFold(h.DiskID, *w.ManagedDisk.ID)
		}) {
			return false
		}
	}
	return true
}

// checkSwapLocked applies ARM's rules for changing a VM's OS disk to diskID.
func (st *State) checkSwapLocked(v *VM, newID string) (*Disk, *armError) {
	if v.DiskEncryption {
		return nil, newARMError(http.StatusConflict, CodeOSDiskSwapEncrypted,
			"OS disk swap is not supported for VM '%s' because it uses Azure Disk Encryption.", v.Name)
	}
	if v.OSDiskVHD != "" {
		return nil, newARMError(http.StatusConflict, CodeOperationNotAllowed,
			"VM '%s' has an unmanaged OS disk; its OS disk cannot be swapped for a managed disk.", v.Name)
	}
	if v.Power != PowerDeallocated {
		return nil, newARMError(http.StatusConflict, CodeOperationNotAllowed,
			"The OS disk of VM '%s' can be changed only when the VM is stopped (deallocated). The VM is %s.", v.Name, v.Power).
			withTarget("osDisk.managedDisk.id")
	}
	d, ok := st.disks[key(newID)]
	if !ok {
		return nil, newARMError(http.StatusNotFound, CodeNotFound, "Disk '%s' was not found.", newID).withTarget("osDisk.managedDisk.id")
	}
	if err := st.busyLocked(d.ID); err != nil {
		return nil, err
	}
	if d.ManagedBy != "" && !strings.EqualFold(d.ManagedBy, v.ID) {
		return nil, attachedElsewhere(d, v.ID)
	}
	if slices.ContainsFunc(v.DataDisks, func(dd DataDiskRef) bool { return strings.EqualFold(dd.DiskID, d.ID) }) {
		return nil, newARMError(http.StatusConflict, CodeConflictingUserInput,
			"Disk '%s' is attached to VM '%s' as a data disk and cannot also be its OS disk.", d.Name, v.Name)
	}
	if !strings.EqualFold(d.OSType, v.OSType) {
		return nil, newARMError(http.StatusConflict, CodePropertyChangeNotAllowed,
			"Changing property 'osDisk.osType' is not allowed. The VM's OS type is '%s' and disk '%s' has OS type '%s'.",
			v.OSType, d.Name, cmp.Or(d.OSType, "none")).withTarget("osDisk.osType")
	}
	if generation(d.HyperVGeneration) != generation(v.HyperVGeneration) {
		return nil, newARMError(http.StatusConflict, CodePropertyChangeNotAllowed,
			"Changing property 'hyperVGeneration' is not allowed. The VM is %s and disk '%s' is %s.",
			generation(v.HyperVGeneration), d.Name, generation(d.HyperVGeneration)).withTarget("osDisk.managedDisk.id")
	}
	if d.Zone != v.Zone {
		return nil, newARMError(http.StatusConflict, CodePropertyChangeNotAllowed,
			"Changing property 'zones' is not allowed: disk '%s' is in zone '%s' and VM '%s' in zone '%s'.",
			d.Name, d.Zone, v.Name, v.Zone).withTarget("osDisk.managedDisk.id")
	}
	return d, nil
}

func attachedElsewhere(d *Disk, vmID string) *armError {
	return newARMError(http.StatusConflict, CodeConflictingUserInput,
		"Cannot attach the disk %s to VM %s because it is already attached to VM %s. A disk can be attached to only one VM at a time.",
		d.Name, vmID, d.ManagedBy).withTarget(d.ID)
}

// attachDetach applies attachDetachDataDisks: detaches first, then attaches.
func (st *State) attachDetach(op, rg, name string, req armcompute.AttachDetachDataDisksRequest) (armcompute.StorageProfile, *operation, *armError) {
	st.lock()
	defer st.unlock()
	v, err := st.vmLocked(rg, name)
	if err != nil {
		return armcompute.StorageProfile{}, nil, err
	}
	if err := st.busyLocked(v.ID); err != nil {
		return armcompute.StorageProfile{}, nil, err
	}
	size, _ := LookupSize(v.Size)
	final := slices.Clone(v.DataDisks)
	var detached []*Disk
	for _, dd := range req.DataDisksToDetach {
		if dd == nil || dd.DiskID == nil {
			return armcompute.StorageProfile{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
				"Required parameter 'diskId' is missing (null).").withTarget("dataDisksToDetach.diskId")
		}
		i := slices.IndexFunc(final, func(r DataDiskRef) bool { return strings.EqualFold(r.DiskID, *dd.DiskID) })
		if i < 0 {
			return armcompute.StorageProfile{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
				"Data disk '%s' is not attached to VM '%s'.", *dd.DiskID, v.Name).withTarget("dataDisksToDetach")
		}
		if d, ok := st.disks[key(final[i].DiskID)]; ok {
			detached = append(detached, d)
		}
		final = slices.Delete(final, i, i+1)
	}
	var attached []*Disk
	for _, da := range req.DataDisksToAttach {
		if da == nil || da.DiskID == nil {
			return armcompute.StorageProfile{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
				"Required parameter 'diskId' is missing (null).").withTarget("dataDisksToAttach.diskId")
		}
		d, ok := st.disks[key(*da.DiskID)]
		if !ok {
			return armcompute.StorageProfile{}, nil, newARMError(http.StatusNotFound, CodeNotFound,
				"Disk '%s' was not found.", *da.DiskID).withTarget("dataDisksToAttach.diskId")
		}
		if err := st.busyLocked(d.ID); err != nil {
			return armcompute.StorageProfile{}, nil, err
		}
		if d.ManagedBy != "" || slices.Contains(attached, d) {
			return armcompute.StorageProfile{}, nil, attachedElsewhere(d, v.ID)
		}
		if d.Zone != v.Zone {
			return armcompute.StorageProfile{}, nil, newARMError(http.StatusBadRequest, CodeBadRequest,
				"Disk %s cannot be attached to the VM because it is not in the same zone as the VM. VM zone: '%s'. Disk zone: '%s'.",
				d.ID, v.Zone, d.Zone)
		}
		var lun int32
		if da.Lun != nil {
			lun = *da.Lun
			if lun < 0 || lun > maxLUN {
				return armcompute.StorageProfile{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
					"The value %d of parameter 'dataDisk.lun' is out of range. Value must be between 0 and %d inclusive.", lun, maxLUN).
					withTarget("dataDisk.lun")
			}
			if slices.ContainsFunc(final, func(r DataDiskRef) bool { return r.LUN == lun }) {
				return armcompute.StorageProfile{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
					"A disk at LUN %d already exists.", lun).withTarget("dataDisk.lun")
			}
		} else {
			for slices.ContainsFunc(final, func(r DataDiskRef) bool { return r.LUN == lun }) {
				lun++
			}
		}
		final = append(final, DataDiskRef{LUN: lun, DiskID: d.ID, Name: d.Name,
			Caching: string(cmp.Or(ptrVal(da.Caching), armcompute.CachingTypesNone))})
		attached = append(attached, d)
	}
	if len(final) > size.MaxDataDiskCount {
		return armcompute.StorageProfile{}, nil, newARMError(http.StatusConflict, CodeOperationNotAllowed,
			"The maximum number of data disks allowed to be attached to a VM of this size is %d.", size.MaxDataDiskCount).
			withTarget("dataDisks")
	}
	for _, d := range detached {
		d.ManagedBy = ""
	}
	for _, d := range attached {
		d.ManagedBy = v.ID
		if d.Original {
			st.violationLocked(ViolationAttachOriginal, d.ID, "original OS disk attached to VM %s", v.ID)
		}
	}
	slices.SortFunc(final, func(a, b DataDiskRef) int { return cmp.Compare(a.LUN, b.LUN) })
	v.DataDisks = final
	v.ProvisioningState = ProvisioningUpdating
	o := st.beginLocked(op, v.ID, st.timing.of(op, LatencyWrite), func() { v.ProvisioningState = ProvisioningSucceeded })
	return *st.vmARMLocked(v, false).Properties.StorageProfile, o, nil
}

func ptrVal[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// bootDiagnostics holds what a VM's boot diagnostics show.
type bootDiagnostics struct {
	screenshot []byte
	serialLog  []byte
}

// SetBootDiagnostics sets the screenshot and serial log that RetrieveBootDiagnosticsData points
// at (a nil value keeps the current one).
func (st *State) SetBootDiagnostics(vmID string, screenshot, serialLog []byte) error {
	st.lock()
	defer st.unlock()
	v, ok := st.vms[key(vmID)]
	if !ok {
		return fmt.Errorf("azsim: no VM %s", vmID)
	}
	bd := st.bootDiagLocked(v)
	if screenshot != nil {
		bd.screenshot = slices.Clone(screenshot)
	}
	if serialLog != nil {
		bd.serialLog = slices.Clone(serialLog)
	}
	return nil
}

func (st *State) bootDiagLocked(v *VM) *bootDiagnostics {
	bd, ok := st.bootDiag[key(v.ID)]
	if !ok {
		log := fmt.Sprintf("Windows Boot Manager\r\n%s: starting Windows\r\n", v.Name)
		if v.Spec.BugCheck != 0 {
			log += fmt.Sprintf("*** STOP: 0x%08X\r\nYour PC ran into a problem and needs to restart.\r\n", uint32(v.Spec.BugCheck))
		}
		bd = &bootDiagnostics{screenshot: tinyBMP(), serialLog: []byte(log)}
		st.bootDiag[key(v.ID)] = bd
	}
	return bd
}

// bootDiagSig signs a boot diagnostics URI the way a SAS signs a blob URL: the handler serves
// only URIs it made and that have not expired.
func bootDiagSig(vmUUID, file, expiry string) string {
	sum := sha256.Sum256([]byte("azsim-bootdiag|" + vmUUID + "|" + file + "|" + expiry))
	return hex.EncodeToString(sum[:16])
}

const (
	bootDiagScreenshot = "screenshot.bmp"
	bootDiagSerialLog  = "serialconsole.log"
	// defaultSASMinutes is what Azure uses when sasUriExpirationTimeInMinutes is not given.
	defaultSASMinutes = 120
)

func (st *State) bootDiagnosticsURIs(base, rg, name string, minutes *int32) (armcompute.RetrieveBootDiagnosticsDataResult, *armError) {
	st.lock()
	defer st.unlock()
	v, err := st.vmLocked(rg, name)
	if err != nil {
		return armcompute.RetrieveBootDiagnosticsDataResult{}, err
	}
	if !v.BootDiagnostics {
		return armcompute.RetrieveBootDiagnosticsDataResult{}, newARMError(http.StatusConflict, CodeOperationNotAllowed,
			"Boot diagnostics is not enabled for VM '%s'.", v.Name)
	}
	st.bootDiagLocked(v)
	m := int32(defaultSASMinutes)
	if minutes != nil && *minutes > 0 {
		m = *minutes
	}
	expiry := st.now().Add(time.Duration(m) * time.Minute).UTC().Format(time.RFC3339)
	uri := func(file string) *string {
		q := url.Values{"sv": {"2021-08-06"}, "sr": {"b"}, "sp": {"r"}, "se": {expiry}, "sig": {bootDiagSig(v.VMID, file, expiry)}}
		return to.Ptr(fmt.Sprintf("%s/azsim/bootdiag/%s/%s?%s", strings.TrimRight(base, "/"), v.VMID, file, q.Encode()))
	}
	return armcompute.RetrieveBootDiagnosticsDataResult{
		ConsoleScreenshotBlobURI: uri(bootDiagScreenshot),
		SerialConsoleLogBlobURI:  uri(bootDiagSerialLog),
	}, nil
}

// bootDiagBlob returns the bytes behind a boot diagnostics URI, checking signature and expiry.
func (st *State) bootDiagBlob(vmUUID, file, expiry, sig string) ([]byte, int) {
	st.lock()
	defer st.unlock()
	if sig != bootDiagSig(vmUUID, file, expiry) {
		return nil, http.StatusForbidden
	}
	t, err := time.Parse(time.RFC3339, expiry)
	if err != nil || st.now().After(t) {
		return nil, http.StatusForbidden
	}
	for _, v := range st.vms {
		if v.VMID == vmUUID {
			bd := st.bootDiagLocked(v)
			if file == bootDiagScreenshot {
				return slices.Clone(bd.screenshot), http.StatusOK
			}
			return slices.Clone(bd.serialLog), http.StatusOK
		}
	}
	return nil, http.StatusNotFound
}

// tinyBMP is a valid 1x1 24-bit bitmap (a black pixel), the default boot screenshot.
func tinyBMP() []byte {
	b := []byte{
		'B', 'M', 58, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, // file header: size 58, pixel data at 54
		40, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 24, 0, // info header: 1x1, 1 plane, 24 bpp
		0, 0, 0, 0, 4, 0, 0, 0, 0x13, 0x0B, 0, 0, 0x13, 0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, // one pixel, padded to 4 bytes
	}
	return b
}
