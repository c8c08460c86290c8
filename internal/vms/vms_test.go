package vms_test

import (
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/vms"
)

func TestFactsOf(t *testing.T) {
	t.Parallel()
	managed := func() *armcompute.VirtualMachine {
		return &armcompute.VirtualMachine{
			ID: to.Ptr("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"), Name: to.Ptr("vm"),
			Location: to.Ptr("West Europe"), Zones: []*string{to.Ptr("2")}, Tags: map[string]*string{"VMRescue-OptOut": to.Ptr("")},
			Properties: &armcompute.VirtualMachineProperties{
				HardwareProfile: &armcompute.HardwareProfile{VMSize: to.Ptr(armcompute.VirtualMachineSizeTypesStandardD2SV3)},
				StorageProfile: &armcompute.StorageProfile{
					OSDisk: &armcompute.OSDisk{OSType: to.Ptr(armcompute.OperatingSystemTypesWindows), Name: to.Ptr("os"),
						ManagedDisk: &armcompute.ManagedDiskParameters{ID: to.Ptr("/d/os"), StorageAccountType: to.Ptr(armcompute.StorageAccountTypesPremiumLRS)}},
					DataDisks: []*armcompute.DataDisk{{Lun: to.Ptr[int32](3), ManagedDisk: &armcompute.ManagedDiskParameters{ID: to.Ptr("/d/data")}}},
				},
				InstanceView: &armcompute.VirtualMachineInstanceView{
					HyperVGeneration: to.Ptr(armcompute.HyperVGenerationTypeV2),
					Statuses:         []*armcompute.InstanceViewStatus{{Code: to.Ptr("ProvisioningState/succeeded")}, {Code: to.Ptr("PowerState/deallocated")}},
				},
			},
		}
	}
	cases := []struct {
		name   string
		mutate func(*armcompute.VirtualMachine)
		check  func(vms.Facts) bool
	}{
		{"plain", func(*armcompute.VirtualMachine) {}, func(f vms.Facts) bool {
			lun, ok := f.LUNOf("/D/DATA")
			_, opt := f.Tag("vmrescue-optout")
			return f.Location == "westeurope" && f.Zone == "2" && f.OSType == "Windows" && f.OSDiskID == "/d/os" &&
				f.OSDiskSKU == "Premium_LRS" && f.Power == vms.PowerDeallocated && f.HyperVGeneration == "V2" &&
				ok && lun == 3 && opt && !f.DiskEncryption && !f.UnmanagedOSDisk
		}},
		{"unmanaged", func(vm *armcompute.VirtualMachine) {
			od := vm.Properties.StorageProfile.OSDisk
			od.ManagedDisk, od.Vhd = nil, &armcompute.VirtualHardDisk{URI: to.Ptr("https://a.blob.core.windows.net/vhds/os.vhd")}
		}, func(f vms.Facts) bool { return f.UnmanagedOSDisk && f.OSDiskID == "" }},
		{"ADE extension", func(vm *armcompute.VirtualMachine) {
			vm.Resources = []*armcompute.VirtualMachineExtension{{Name: to.Ptr("AzureDiskEncryption")}}
		}, func(f vms.Facts) bool { return f.DiskEncryption }},
		{"encrypted disk in the instance view", func(vm *armcompute.VirtualMachine) {
			vm.Properties.InstanceView.Disks = []*armcompute.DiskInstanceView{{EncryptionSettings: []*armcompute.DiskEncryptionSettings{{Enabled: to.Ptr(true)}}}}
		}, func(f vms.Facts) bool { return f.DiskEncryption }},
		{"ADE settings on the OS disk", func(vm *armcompute.VirtualMachine) {
			vm.Properties.StorageProfile.OSDisk.EncryptionSettings = &armcompute.DiskEncryptionSettings{Enabled: to.Ptr(true)}
		}, func(f vms.Facts) bool { return f.DiskEncryption }},
		{"other extension", func(vm *armcompute.VirtualMachine) {
			vm.Resources = []*armcompute.VirtualMachineExtension{{Name: to.Ptr("CustomScriptExtension")}}
		}, func(f vms.Facts) bool { return !f.DiskEncryption }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vm := managed()
			tc.mutate(vm)
			if f := vms.FactsOf(*vm); !tc.check(f) {
				t.Errorf("facts %+v", f)
			}
		})
	}
	if !vms.SameLocation("West Europe", "westeurope") || vms.SameLocation("westeurope", "northeurope") {
		t.Error("SameLocation")
	}
}
