// Package vms is vmrescue's view of Azure virtual machines: the narrow client interface of the
// calls the pipeline makes, and Facts, the parts of a VM model and instance view the pipeline
// decides on.
package vms

import (
	"context"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
)

// API is the part of *armcompute.VirtualMachinesClient vmrescue calls.
type API interface {
	Get(ctx context.Context, resourceGroupName string, vmName string, options *armcompute.VirtualMachinesClientGetOptions) (armcompute.VirtualMachinesClientGetResponse, error)
	BeginDeallocate(ctx context.Context, resourceGroupName string, vmName string, options *armcompute.VirtualMachinesClientBeginDeallocateOptions) (*runtime.Poller[armcompute.VirtualMachinesClientDeallocateResponse], error)
	BeginStart(ctx context.Context, resourceGroupName string, vmName string, options *armcompute.VirtualMachinesClientBeginStartOptions) (*runtime.Poller[armcompute.VirtualMachinesClientStartResponse], error)
	BeginUpdate(ctx context.Context, resourceGroupName string, vmName string, parameters armcompute.VirtualMachineUpdate, options *armcompute.VirtualMachinesClientBeginUpdateOptions) (*runtime.Poller[armcompute.VirtualMachinesClientUpdateResponse], error)
	BeginAttachDetachDataDisks(ctx context.Context, resourceGroupName string, vmName string, parameters armcompute.AttachDetachDataDisksRequest, options *armcompute.VirtualMachinesClientBeginAttachDetachDataDisksOptions) (*runtime.Poller[armcompute.VirtualMachinesClientAttachDetachDataDisksResponse], error)
	RetrieveBootDiagnosticsData(ctx context.Context, resourceGroupName string, vmName string, options *armcompute.VirtualMachinesClientRetrieveBootDiagnosticsDataOptions) (armcompute.VirtualMachinesClientRetrieveBootDiagnosticsDataResponse, error)
}

var _ API = (*armcompute.VirtualMachinesClient)(nil)

// InstanceView asks Get for the instance view too.
var InstanceView = &armcompute.VirtualMachinesClientGetOptions{Expand: ptr(armcompute.InstanceViewTypesInstanceView)}

// Power states as the instance view's PowerState/<state> status names them.
const (
	PowerRunning      = "running"
	PowerDeallocated  = "deallocated"
	PowerDeallocating = "deallocating"
	PowerStopped      = "stopped"
	PowerStarting     = "starting"
)

// DataDisk is a data disk attached to a VM.
type DataDisk struct {
	LUN    int32
	DiskID string
}

// Facts are the parts of a VM the pipeline decides on. Fields from the instance view are empty
// when the VM was read without it.
type Facts struct {
	ID               string
	Name             string
	Location         string
	Zone             string // "" when regional
	Size             string
	OSType           string // Windows or Linux, from the OS disk
	OSDiskID         string // managed OS disk; "" when unmanaged
	OSDiskName       string
	OSDiskSKU        string // storage account type of the managed OS disk
	UnmanagedOSDisk  bool
	DiskEncryption   bool // Azure Disk Encryption (extension or encryption settings)
	HyperVGeneration string
	Tags             map[string]string
	DataDisks        []DataDisk
	Power            string // from the instance view; "" when unknown
	AgentReady       bool   // the VM agent reports Ready
	Provisioning     string
}

// FactsOf extracts the facts of a VM as ARM returned it.
func FactsOf(vm armcompute.VirtualMachine) Facts {
	f := Facts{ID: val(vm.ID), Name: val(vm.Name), Location: normLocation(val(vm.Location)), Tags: map[string]string{}}
	if len(vm.Zones) > 0 && vm.Zones[0] != nil {
		f.Zone = *vm.Zones[0]
	}
	for k, v := range vm.Tags {
		f.Tags[k] = val(v)
	}
	p := vm.Properties
	if p == nil {
		return f
	}
	f.Provisioning = val(p.ProvisioningState)
	if p.HardwareProfile != nil && p.HardwareProfile.VMSize != nil {
		f.Size = string(*p.HardwareProfile.VMSize)
	}
	if sp := p.StorageProfile; sp != nil {
		if od := sp.OSDisk; od != nil {
			if od.OSType != nil {
				f.OSType = string(*od.OSType)
			}
			f.OSDiskName = val(od.Name)
			if od.Vhd != nil && od.Vhd.URI != nil {
				f.UnmanagedOSDisk = true
			}
			if md := od.ManagedDisk; md != nil {
				f.OSDiskID = val(md.ID)
				if md.StorageAccountType != nil {
					f.OSDiskSKU = string(*md.StorageAccountType)
				}
			} else {
				f.UnmanagedOSDisk = true
			}
			if es := od.EncryptionSettings; es != nil && es.Enabled != nil && *es.Enabled {
				f.DiskEncryption = true
			}
		}
		for _, dd := range sp.DataDisks {
			if dd == nil || dd.Lun == nil {
				continue
			}
			d := DataDisk{LUN: *dd.Lun}
			if dd.ManagedDisk != nil {
				d.DiskID = val(dd.ManagedDisk.ID)
			}
			f.DataDisks = append(f.DataDisks, d)
		}
	}
	for _, ext := range vm.Resources {
		if ext != nil && isADE(val(ext.Name)) {
			f.DiskEncryption = true
		}
		if ext != nil && ext.Properties != nil && isADE(val(ext.Properties.Type)) {
			f.DiskEncryption = true
		}
	}
	if iv := p.InstanceView; iv != nil {
		if iv.HyperVGeneration != nil {
			f.HyperVGeneration = string(*iv.HyperVGeneration)
		}
		for _, s := range iv.Statuses {
			if s != nil && s.Code != nil {
				if st, ok := strings.CutPrefix(*s.Code, "PowerState/"); ok {
					f.Power = st
				}
			}
		}
		if a := iv.VMAgent; a != nil {
			for _, s := range a.Statuses {
				if s != nil && strings.EqualFold(val(s.DisplayStatus), "Ready") {
					f.AgentReady = true
				}
			}
		}
		for _, d := range iv.Disks {
			if d == nil {
				continue
			}
			for _, es := range d.EncryptionSettings {
				if es != nil && es.Enabled != nil && *es.Enabled {
					f.DiskEncryption = true
				}
			}
		}
		for _, e := range iv.Extensions {
			if e != nil && (isADE(val(e.Name)) || isADE(val(e.Type))) {
				f.DiskEncryption = true
			}
		}
	}
	return f
}

// Tag returns the value of a tag, matching its name case-insensitively as ARM does.
func (f Facts) Tag(name string) (string, bool) {
	for k, v := range f.Tags {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

// DataDiskAt returns the data disk at lun.
func (f Facts) DataDiskAt(lun int32) (DataDisk, bool) {
	for _, d := range f.DataDisks {
		if d.LUN == lun {
			return d, true
		}
	}
	return DataDisk{}, false
}

// LUNOf returns the LUN at which diskID is attached.
func (f Facts) LUNOf(diskID string) (int32, bool) {
	for _, d := range f.DataDisks {
		if strings.EqualFold(d.DiskID, diskID) {
			return d.LUN, true
		}
	}
	return 0, false
}

// isADE recognises the Azure Disk Encryption extension by name or type.
func isADE(s string) bool {
	s = strings.ToLower(s)
	return strings.HasPrefix(s, "azurediskencryption") || strings.HasSuffix(s, ".azurediskencryption") ||
		strings.HasSuffix(s, ".azurediskencryptionforlinux")
}

// normLocation puts a location in ARM's canonical form ("West Europe" -> westeurope).
func normLocation(l string) string { return strings.ToLower(strings.ReplaceAll(l, " ", "")) }

// SameLocation compares two locations the way ARM does.
func SameLocation(a, b string) bool { return normLocation(a) == normLocation(b) }

func val[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func ptr[T any](v T) *T { return &v }
