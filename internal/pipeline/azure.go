package pipeline

import (
	"context"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/disks"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/snapshots"
	"github.com/vmrescue/vmrescue/internal/vms"
)

// Reads, each bounded by callTimeout.

func (p *Pipeline) getVM(ctx context.Context, id resourceid.ID, withInstanceView bool) (vms.Facts, error) {
	var o *armcompute.VirtualMachinesClientGetOptions
	if withInstanceView {
		o = vms.InstanceView
	}
	az, err := p.in(id.SubscriptionID)
	if err != nil {
		return vms.Facts{}, err
	}
	resp, err := armclient.Call(ctx, callTimeout, func(ctx context.Context) (armcompute.VirtualMachinesClientGetResponse, error) {
		return az.VMs.Get(ctx, id.ResourceGroup, id.Name, o)
	})
	if err != nil {
		return vms.Facts{}, err
	}
	return vms.FactsOf(resp.VirtualMachine), nil
}

// getDisk reads a disk; exists=false when there is none.
func (p *Pipeline) getDisk(ctx context.Context, sub, rg, name string) (disks.Facts, bool, error) {
	az, err := p.in(sub)
	if err != nil {
		return disks.Facts{}, false, err
	}
	resp, err := armclient.Call(ctx, callTimeout, func(ctx context.Context) (armcompute.DisksClientGetResponse, error) {
		return az.Disks.Get(ctx, rg, name, nil)
	})
	if armerr.IsNotFound(err) {
		return disks.Facts{}, false, nil
	}
	if err != nil {
		return disks.Facts{}, false, err
	}
	return disks.FactsOf(resp.Disk), true, nil
}

// getSnapshot reads a snapshot; exists=false when there is none.
func (p *Pipeline) getSnapshot(ctx context.Context, sub, rg, name string) (snapshots.Facts, bool, error) {
	az, err := p.in(sub)
	if err != nil {
		return snapshots.Facts{}, false, err
	}
	resp, err := armclient.Call(ctx, callTimeout, func(ctx context.Context) (armcompute.SnapshotsClientGetResponse, error) {
		return az.Snapshots.Get(ctx, rg, name, nil)
	})
	if armerr.IsNotFound(err) {
		return snapshots.Facts{}, false, nil
	}
	if err != nil {
		return snapshots.Facts{}, false, err
	}
	return snapshots.FactsOf(resp.Snapshot), true, nil
}

// Writes. Each waits for its long-running operation within lroTimeout.

func lro[T any](ctx context.Context, begin func(ctx context.Context) (*runtime.Poller[T], error)) error {
	_, err := armclient.LRO(ctx, lroTimeout, begin)
	return err
}

func (r *run) deallocate(ctx context.Context, id resourceid.ID) error {
	az, err := r.p.in(id.SubscriptionID)
	if err != nil {
		return err
	}
	return r.write(ctx, "VirtualMachines.BeginDeallocate", id.String(), func(ctx context.Context) error {
		return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.VirtualMachinesClientDeallocateResponse], error) {
			return az.VMs.BeginDeallocate(ctx, id.ResourceGroup, id.Name, nil)
		})
	})
}

func (r *run) start(ctx context.Context, id resourceid.ID) error {
	az, err := r.p.in(id.SubscriptionID)
	if err != nil {
		return err
	}
	return r.write(ctx, "VirtualMachines.BeginStart", id.String(), func(ctx context.Context) error {
		return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.VirtualMachinesClientStartResponse], error) {
			return az.VMs.BeginStart(ctx, id.ResourceGroup, id.Name, nil)
		})
	})
}

// attach attaches a disk to a rescue VM at lun, in the rescue VM's update slot: a VM takes one
// attach or detach at a time, and ARM refuses another with 409 Conflict, a write spent.
func (r *run) attach(ctx context.Context, rescue resourceid.ID, diskID string, lun int32) error {
	az, err := r.p.in(rescue.SubscriptionID)
	if err != nil {
		return err
	}
	release, err := r.updateSlot(ctx, rescue, "attach", false)
	if err != nil {
		return err
	}
	defer release()
	err = r.write(ctx, "VirtualMachines.BeginAttachDetachDataDisks", rescue.String(), func(ctx context.Context) error {
		return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.VirtualMachinesClientAttachDetachDataDisksResponse], error) {
			return az.VMs.BeginAttachDetachDataDisks(ctx, rescue.ResourceGroup, rescue.Name, armcompute.AttachDetachDataDisksRequest{
				DataDisksToAttach: []*armcompute.DataDisksToAttach{{DiskID: &diskID, Lun: &lun, Caching: ptr(armcompute.CachingTypesNone)}},
			}, nil)
		})
	})
	if armerr.Code(err) == "OperationNotAllowed" && strings.Contains(err.Error(), "maximum number of data disks") {
		// The rescue VM filled up after its LUN was reserved: give the LUN back and wait for
		// capacity, as when the pool is full, instead of failing.
		if rerr := r.p.releaseLUN(ctx, rescue.String(), lun, r.msg.IncidentID); rerr != nil {
			return fmt.Errorf("release LUN %d of %s: %w", lun, rescue.Name, rerr)
		}
		return &waitError{reason: "rescue VM " + rescue.Name + " is at its data-disk limit", delay: capacityWait, unbounded: true}
	}
	if err != nil && ctx.Err() == nil {
		// The attach may have been made all the same: by a request that timed out after ARM
		// applied it (the SDK's retry then finds the LUN taken, by this very disk), or by another
		// delivery of the same stage. Already there is done. A LUN taken by another disk (one
		// attached without a reservation) is given back, and the stage waits for capacity.
		if vm, gerr := r.p.getVM(ctx, rescue, false); gerr == nil {
			if at, ok := vm.LUNOf(diskID); ok && at == lun {
				return r.found(ctx, "VirtualMachines.BeginAttachDetachDataDisks", rescue.String())
			}
			if other, taken := vm.DataDiskAt(lun); taken && !strings.EqualFold(other.DiskID, diskID) {
				if rerr := r.p.releaseLUN(ctx, rescue.String(), lun, r.msg.IncidentID); rerr != nil && !isNotHolder(rerr) {
					return fmt.Errorf("release LUN %d of %s: %w", lun, rescue.Name, rerr)
				}
				return &waitError{reason: fmt.Sprintf("LUN %d of rescue VM %s is taken by %s", lun, rescue.Name, other.DiskID),
					delay: capacityWait, unbounded: true}
			}
		}
	}
	return err
}

// detach detaches a disk from a rescue VM, in the rescue VM's update slot.
func (r *run) detach(ctx context.Context, rescue resourceid.ID, diskID string) error {
	az, err := r.p.in(rescue.SubscriptionID)
	if err != nil {
		return err
	}
	release, err := r.updateSlot(ctx, rescue, "detach", false)
	if err != nil {
		return err
	}
	defer release()
	err = r.write(ctx, "VirtualMachines.BeginAttachDetachDataDisks", rescue.String(), func(ctx context.Context) error {
		return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.VirtualMachinesClientAttachDetachDataDisksResponse], error) {
			return az.VMs.BeginAttachDetachDataDisks(ctx, rescue.ResourceGroup, rescue.Name, armcompute.AttachDetachDataDisksRequest{
				DataDisksToDetach: []*armcompute.DataDisksToDetach{{DiskID: &diskID}},
			}, nil)
		})
	})
	if err != nil && ctx.Err() == nil {
		// A detach that timed out after ARM applied it answers "not attached" on the SDK's retry:
		// already gone is done.
		if vm, gerr := r.p.getVM(ctx, rescue, false); gerr == nil {
			if _, ok := vm.LUNOf(diskID); !ok {
				return r.gone(ctx, "VirtualMachines.BeginAttachDetachDataDisks", rescue.String())
			}
		}
	}
	return err
}

// gone records that what a write would undo is already undone (an earlier request did it).
func (r *run) gone(ctx context.Context, op, resourceID string) error {
	return r.append(ctx, incident.EventSkipped, detail{Operation: op, ResourceID: resourceID, Reason: "already done: made by an earlier request"}, "")
}

// deleteDisk deletes a disk the incident made. It never deletes anything else: the name must be
// one of the incident's derived names.
func (r *run) deleteDisk(ctx context.Context, rg, name string) error {
	id := diskID(resourceid.ID{SubscriptionID: r.vm.SubscriptionID, ResourceGroup: rg}, name)
	az, err := r.p.in(r.vm.SubscriptionID)
	if err != nil {
		return err
	}
	return r.write(ctx, "Disks.BeginDelete", id, func(ctx context.Context) error {
		return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.DisksClientDeleteResponse], error) {
			return az.Disks.BeginDelete(ctx, rg, name, nil)
		})
	})
}

func (r *run) deleteSnapshot(ctx context.Context, rg, name string) error {
	id := snapshotID(resourceid.ID{SubscriptionID: r.vm.SubscriptionID, ResourceGroup: rg}, name)
	az, err := r.p.in(r.vm.SubscriptionID)
	if err != nil {
		return err
	}
	return r.write(ctx, "Snapshots.BeginDelete", id, func(ctx context.Context) error {
		return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.SnapshotsClientDeleteResponse], error) {
			return az.Snapshots.BeginDelete(ctx, rg, name, nil)
		})
	})
}

// swapOSDisk makes diskID the VM's OS disk, with the VM's tags replaced by tags.
func (r *run) swapOSDisk(ctx context.Context, vm resourceid.ID, diskID string, tags map[string]string) error {
	name := diskID[strings.LastIndex(diskID, "/")+1:]
	t := make(map[string]*string, len(tags))
	for k, v := range tags {
		t[k] = ptr(v)
	}
	az, err := r.p.in(vm.SubscriptionID)
	if err != nil {
		return err
	}
	return r.write(ctx, "VirtualMachines.BeginUpdate", vm.String(), func(ctx context.Context) error {
		return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.VirtualMachinesClientUpdateResponse], error) {
			return az.VMs.BeginUpdate(ctx, vm.ResourceGroup, vm.Name, armcompute.VirtualMachineUpdate{
				Tags: t,
				Properties: &armcompute.VirtualMachineProperties{StorageProfile: &armcompute.StorageProfile{
					OSDisk: &armcompute.OSDisk{Name: &name, ManagedDisk: &armcompute.ManagedDiskParameters{ID: &diskID}},
				}},
			}, nil)
		})
	})
}

func ptr[T any](v T) *T { return &v }

func val[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// armclientLRO waits for a long-running operation and returns its result.
func armclientLRO[T any](ctx context.Context, begin func(ctx context.Context) (*runtime.Poller[T], error)) (T, error) {
	return armclient.LRO(ctx, lroTimeout, begin)
}
