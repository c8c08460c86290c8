// Package disks is vmrescue's view of Azure managed disks: the narrow client interface of the
// calls the pipeline and the Janitor make, and the facts they decide on.
package disks

import (
	"context"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
)

// API is the part of *armcompute.DisksClient vmrescue calls.
type API interface {
	Get(ctx context.Context, resourceGroupName string, diskName string, options *armcompute.DisksClientGetOptions) (armcompute.DisksClientGetResponse, error)
	BeginCreateOrUpdate(ctx context.Context, resourceGroupName string, diskName string, disk armcompute.Disk, options *armcompute.DisksClientBeginCreateOrUpdateOptions) (*runtime.Poller[armcompute.DisksClientCreateOrUpdateResponse], error)
	BeginDelete(ctx context.Context, resourceGroupName string, diskName string, options *armcompute.DisksClientBeginDeleteOptions) (*runtime.Poller[armcompute.DisksClientDeleteResponse], error)
	NewListPager(options *armcompute.DisksClientListOptions) *runtime.Pager[armcompute.DisksClientListResponse]
}

var _ API = (*armcompute.DisksClient)(nil)

// Facts are the parts of a disk vmrescue decides on.
type Facts struct {
	ID               string
	Name             string
	Location         string
	Zone             string
	OSType           string
	HyperVGeneration string
	SourceID         string // creationData.sourceResourceId
	ManagedBy        string // the VM it is attached to, "" when free
	SizeGB           int32
	Created          time.Time
	Tags             map[string]string
	Provisioning     string
}

// FactsOf extracts the facts of a disk as ARM returned it.
func FactsOf(d armcompute.Disk) Facts {
	f := Facts{ID: val(d.ID), Name: val(d.Name), Location: strings.ToLower(val(d.Location)), ManagedBy: val(d.ManagedBy), Tags: map[string]string{}}
	if len(d.Zones) > 0 && d.Zones[0] != nil {
		f.Zone = *d.Zones[0]
	}
	for k, v := range d.Tags {
		f.Tags[k] = val(v)
	}
	if p := d.Properties; p != nil {
		if p.OSType != nil {
			f.OSType = string(*p.OSType)
		}
		if p.HyperVGeneration != nil {
			f.HyperVGeneration = string(*p.HyperVGeneration)
		}
		if p.CreationData != nil {
			f.SourceID = val(p.CreationData.SourceResourceID)
		}
		f.SizeGB = val(p.DiskSizeGB)
		f.Created = val(p.TimeCreated)
		f.Provisioning = val(p.ProvisioningState)
	}
	return f
}

// Tag returns a tag's value, matching its name case-insensitively.
func (f Facts) Tag(name string) (string, bool) { return tag(f.Tags, name) }

func tag(m map[string]string, name string) (string, bool) {
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

func val[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
