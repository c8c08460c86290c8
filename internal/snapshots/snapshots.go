// Package snapshots is vmrescue's view of Azure managed disk snapshots: the narrow client
// interface of the calls the pipeline and the Janitor make, and the facts they decide on.
package snapshots

import (
	"context"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
)

// API is the part of *armcompute.SnapshotsClient vmrescue calls.
type API interface {
	Get(ctx context.Context, resourceGroupName string, snapshotName string, options *armcompute.SnapshotsClientGetOptions) (armcompute.SnapshotsClientGetResponse, error)
	BeginCreateOrUpdate(ctx context.Context, resourceGroupName string, snapshotName string, snapshot armcompute.Snapshot, options *armcompute.SnapshotsClientBeginCreateOrUpdateOptions) (*runtime.Poller[armcompute.SnapshotsClientCreateOrUpdateResponse], error)
	BeginDelete(ctx context.Context, resourceGroupName string, snapshotName string, options *armcompute.SnapshotsClientBeginDeleteOptions) (*runtime.Poller[armcompute.SnapshotsClientDeleteResponse], error)
	NewListPager(options *armcompute.SnapshotsClientListOptions) *runtime.Pager[armcompute.SnapshotsClientListResponse]
}

var _ API = (*armcompute.SnapshotsClient)(nil)

// Facts are the parts of a snapshot vmrescue decides on.
type Facts struct {
	ID                string
	Name              string
	Location          string
	SourceID          string
	OSType            string
	HyperVGeneration  string
	Incremental       bool
	CompletionPercent float32 // 100 for a full snapshot
	Created           time.Time
	Tags              map[string]string
	Provisioning      string
}

// FactsOf extracts the facts of a snapshot as ARM returned it.
func FactsOf(s armcompute.Snapshot) Facts {
	f := Facts{ID: val(s.ID), Name: val(s.Name), Location: strings.ToLower(val(s.Location)), Tags: map[string]string{}, CompletionPercent: 100}
	for k, v := range s.Tags {
		f.Tags[k] = val(v)
	}
	if p := s.Properties; p != nil {
		if p.CreationData != nil {
			f.SourceID = val(p.CreationData.SourceResourceID)
		}
		if p.OSType != nil {
			f.OSType = string(*p.OSType)
		}
		if p.HyperVGeneration != nil {
			f.HyperVGeneration = string(*p.HyperVGeneration)
		}
		f.Incremental = val(p.Incremental)
		if f.Incremental && p.CompletionPercent != nil {
			f.CompletionPercent = *p.CompletionPercent
		}
		f.Created = val(p.TimeCreated)
		f.Provisioning = val(p.ProvisioningState)
	}
	return f
}

// Complete reports whether the snapshot's background copy is done.
func (f Facts) Complete() bool { return f.CompletionPercent >= 100 }

// Tag returns a tag's value, matching its name case-insensitively.
func (f Facts) Tag(name string) (string, bool) {
	for k, v := range f.Tags {
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
