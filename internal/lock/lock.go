// Package lock keeps vmrescue's mutual exclusions as small blobs written with conditional
// requests: the one active incident per VM, and the LUNs incidents reserve on rescue VMs.
//
// A lock is a block blob in the locks container (default "locks"):
//
//	vm/<incident.VMKey(vmResourceId)>                     the VM's active incident
//	lun/<incident.VMKey(rescueVmResourceId)>/<lun>        the incident that reserved a LUN
//	slot/<slot>/<incident.VMKey(rescueVmResourceId)>      the incident using a rescue VM's slot (slot.go)
//
// Its metadata "incident" names the holder and "since" when it took the lock; its body is a JSON note for people
// ({"incidentId","resourceId","lun","since"}). Taking a free lock is a Put Blob with
// If-None-Match: *, so of any number of racing writers exactly one succeeds; giving one back or
// handing it over is conditional on the ETag read with the holder (If-Match), so it never removes
// or replaces a lock someone else took in between. Locks do not expire: the pipeline releases them
// when an incident closes or fails, and TakeOverVM replaces the holder of a VM lock whose incident
// is known to be closed or failed, and TakeOverSlot the holder of a slot the pipeline judged stale.
package lock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// DefaultContainer is the default locks container.
const DefaultContainer = "locks"

// MaxLUN is one past the highest data-disk LUN Azure allows (LUNs are 0..63).
const MaxLUN = 64

const (
	// metaIncident is the metadata key naming the holder.
	metaIncident = "incident"
	// metaSince is the metadata key holding when the holder took the lock (RFC 3339).
	metaSince = "since"
	// maxLockAttempts bounds the read-then-write loops that restart when the lock changes between
	// the read and the conditional write.
	maxLockAttempts = 16
	// opTimeout bounds one lock operation, its retries included.
	opTimeout = 30 * time.Second
)

// ErrNotHolder is wrapped when an incident gives back or hands over a lock it does not hold.
var ErrNotHolder = errors.New("lock held by another incident")

// Container is the part of a blob container Locks uses. Its methods have the signatures of
// *container.Client, except NewBlockBlob, which returns the narrow BlockBlob.
type Container interface {
	Create(ctx context.Context, o *container.CreateOptions) (container.CreateResponse, error)
	NewListBlobsFlatPager(o *container.ListBlobsFlatOptions) *runtime.Pager[container.ListBlobsFlatResponse]
	NewBlockBlob(name string) BlockBlob
}

// BlockBlob is the part of *blockblob.Client Locks uses, with the SDK's signatures.
type BlockBlob interface {
	Upload(ctx context.Context, body io.ReadSeekCloser, o *blockblob.UploadOptions) (blockblob.UploadResponse, error)
	GetProperties(ctx context.Context, o *blob.GetPropertiesOptions) (blob.GetPropertiesResponse, error)
	Delete(ctx context.Context, o *blob.DeleteOptions) (blob.DeleteResponse, error)
}

var (
	_ BlockBlob = (*blockblob.Client)(nil)
	_ Container = sdkContainer{}
)

type sdkContainer struct{ *container.Client }

func (c sdkContainer) NewBlockBlob(name string) BlockBlob { return c.NewBlockBlobClient(name) }

// Locks takes and gives back locks in one container.
type Locks struct {
	c   Container
	now func() time.Time
}

// New returns Locks on the named container of the account behind client.
func New(client *azblob.Client, containerName string) *Locks {
	return NewFrom(sdkContainer{client.ServiceClient().NewContainerClient(containerName)})
}

// NewFrom returns Locks on any Container, such as memblob's in-memory one.
func NewFrom(c Container) *Locks { return &Locks{c: c, now: time.Now} }

// EnsureContainer creates the container if it does not exist.
func (l *Locks) EnsureContainer(ctx context.Context) error {
	_, err := l.c.Create(ctx, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("create locks container: %w", err)
	}
	return nil
}

// VMLockName is the blob name of a VM's lock.
func VMLockName(vmResourceID string) string { return "vm/" + incident.VMKey(vmResourceID) }

func lunPrefix(rescueVMID string) string { return "lun/" + incident.VMKey(rescueVMID) + "/" }

// LUNLockName is the blob name of a LUN reservation on a rescue VM.
func LUNLockName(rescueVMID string, lun int32) string {
	return lunPrefix(rescueVMID) + strconv.Itoa(int(lun))
}

// note is the lock blob's body, for people reading the container.
type note struct {
	IncidentID string    `json:"incidentId"`
	ResourceID string    `json:"resourceId"`
	LUN        *int32    `json:"lun,omitempty"`
	Since      time.Time `json:"since"`
}

// AcquireVM takes the VM's lock for an incident. When another incident holds it, it returns that
// holder and acquired=false. Acquiring a lock the incident already holds succeeds.
func (l *Locks) AcquireVM(ctx context.Context, vmResourceID, incidentID string) (holder string, acquired bool, err error) {
	if err := checkArgs(vmResourceID, incidentID); err != nil {
		return "", false, fmt.Errorf("acquire vm lock: %w", err)
	}
	holder, acquired, err = l.acquire(ctx, VMLockName(vmResourceID), note{IncidentID: incidentID, ResourceID: vmResourceID})
	if err != nil {
		return "", false, fmt.Errorf("acquire vm lock for %s: %w", incidentID, err)
	}
	return holder, acquired, nil
}

// ReleaseVM gives back the VM's lock if the incident holds it. A lock already gone is success; a
// lock held by another incident is refused with ErrNotHolder.
func (l *Locks) ReleaseVM(ctx context.Context, vmResourceID, incidentID string) error {
	if err := checkArgs(vmResourceID, incidentID); err != nil {
		return fmt.Errorf("release vm lock: %w", err)
	}
	if err := l.release(ctx, VMLockName(vmResourceID), incidentID); err != nil {
		return fmt.Errorf("release vm lock of %s: %w", incidentID, err)
	}
	return nil
}

// TakeOverVM hands the VM's lock from a stale holder (an incident known to be closed or failed) to
// a new incident. It replaces the lock only while staleIncidentID still holds it; when another
// incident holds it, it returns that holder and acquired=false. A free lock is simply taken, and a
// lock newIncidentID already holds is success.
func (l *Locks) TakeOverVM(ctx context.Context, vmResourceID, staleIncidentID, newIncidentID string) (holder string, acquired bool, err error) {
	if err := checkArgs(vmResourceID, newIncidentID); err != nil {
		return "", false, fmt.Errorf("take over vm lock: %w", err)
	}
	if !incident.ValidID(staleIncidentID) {
		return "", false, fmt.Errorf("take over vm lock: invalid incident id %q", staleIncidentID)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	name := VMLockName(vmResourceID)
	n := note{IncidentID: newIncidentID, ResourceID: vmResourceID}
	bb := l.c.NewBlockBlob(name)
	for range maxLockAttempts {
		cur, etag, err := readHolder(ctx, bb)
		if err != nil {
			return "", false, fmt.Errorf("take over vm lock for %s: %w", newIncidentID, err)
		}
		switch cur {
		case "":
			h, ok, err := l.acquire(ctx, name, n)
			if err != nil {
				return "", false, fmt.Errorf("take over vm lock for %s: %w", newIncidentID, err)
			}
			if ok || h != staleIncidentID {
				return h, ok, nil
			}
			continue // the stale holder came back: take it over
		case newIncidentID:
			return newIncidentID, true, nil
		case staleIncidentID:
		default:
			return cur, false, nil
		}
		err = l.put(ctx, bb, n, &blob.ModifiedAccessConditions{IfMatch: &etag})
		if err == nil {
			return newIncidentID, true, nil
		}
		if !changed(err) {
			return "", false, fmt.Errorf("take over vm lock for %s: %w", newIncidentID, err)
		}
	}
	return "", false, fmt.Errorf("take over vm lock for %s: lock kept changing after %d attempts", newIncidentID, maxLockAttempts)
}

// HolderVM returns the incident holding the VM's lock, or "" when it is free.
func (l *Locks) HolderVM(ctx context.Context, vmResourceID string) (string, error) {
	if vmResourceID == "" {
		return "", errors.New("vm lock holder: empty resource id")
	}
	h, _, err := readHolder(ctx, l.c.NewBlockBlob(VMLockName(vmResourceID)))
	if err != nil {
		return "", fmt.Errorf("vm lock holder: %w", err)
	}
	return h, nil
}

// ReserveLUN reserves a LUN of a rescue VM for an incident. When another incident holds it, it
// returns acquired=false and that holder. Reserving a LUN the incident already holds succeeds.
func (l *Locks) ReserveLUN(ctx context.Context, rescueVMID string, lun int32, incidentID string) (acquired bool, holder string, err error) {
	if err := checkLUN(rescueVMID, lun, incidentID); err != nil {
		return false, "", fmt.Errorf("reserve lun: %w", err)
	}
	holder, acquired, err = l.acquire(ctx, LUNLockName(rescueVMID, lun),
		note{IncidentID: incidentID, ResourceID: rescueVMID, LUN: &lun})
	if err != nil {
		return false, "", fmt.Errorf("reserve lun %d for %s: %w", lun, incidentID, err)
	}
	return acquired, holder, nil
}

// ReleaseLUN gives back a LUN reservation if the incident holds it. A reservation already gone is
// success; one held by another incident is refused with ErrNotHolder.
func (l *Locks) ReleaseLUN(ctx context.Context, rescueVMID string, lun int32, incidentID string) error {
	if err := checkLUN(rescueVMID, lun, incidentID); err != nil {
		return fmt.Errorf("release lun: %w", err)
	}
	if err := l.release(ctx, LUNLockName(rescueVMID, lun), incidentID); err != nil {
		return fmt.Errorf("release lun %d of %s: %w", lun, incidentID, err)
	}
	return nil
}

// LUNHolders returns the reserved LUNs of a rescue VM and the incident holding each.
func (l *Locks) LUNHolders(ctx context.Context, rescueVMID string) (map[int32]string, error) {
	if rescueVMID == "" {
		return nil, errors.New("lun holders: empty rescue vm id")
	}
	prefix := lunPrefix(rescueVMID)
	out := map[int32]string{}
	pager := l.c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{
		Prefix:  &prefix,
		Include: container.ListBlobsInclude{Metadata: true},
	})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return out, nil // nothing was ever reserved: the container is made at start
		}
		if err != nil {
			return nil, fmt.Errorf("lun holders: %w", err)
		}
		if page.Segment == nil {
			continue
		}
		for _, b := range page.Segment.BlobItems {
			if b == nil || b.Name == nil {
				continue
			}
			lun, err := strconv.ParseInt(strings.TrimPrefix(*b.Name, prefix), 10, 32)
			if err != nil || lun < 0 || lun >= MaxLUN {
				continue
			}
			if h := metaValue(b.Metadata, metaIncident); h != "" {
				out[int32(lun)] = h
			}
		}
	}
	return out, nil
}

func checkArgs(resourceID, incidentID string) error {
	if resourceID == "" {
		return errors.New("empty resource id")
	}
	if !incident.ValidID(incidentID) {
		return fmt.Errorf("invalid incident id %q", incidentID)
	}
	return nil
}

func checkLUN(rescueVMID string, lun int32, incidentID string) error {
	if lun < 0 || lun >= MaxLUN {
		return fmt.Errorf("lun %d outside 0..%d", lun, MaxLUN-1)
	}
	return checkArgs(rescueVMID, incidentID)
}

// acquire creates the lock blob if absent. It returns the holder and whether it is n's incident.
func (l *Locks) acquire(ctx context.Context, name string, n note) (string, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	bb := l.c.NewBlockBlob(name)
	for range maxLockAttempts {
		err := l.put(ctx, bb, n, &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)})
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			// The first lock of a new deployment can race the start-up creation of the container.
			if err := l.EnsureContainer(ctx); err != nil {
				return "", false, err
			}
			err = l.put(ctx, bb, n, &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)})
		}
		if err == nil {
			return n.IncidentID, true, nil
		}
		if !changed(err) {
			return "", false, err
		}
		h, _, err := readHolder(ctx, bb)
		if err != nil {
			return "", false, err
		}
		if h != "" {
			return h, h == n.IncidentID, nil
		}
		// released between the write and the read: try again
	}
	return "", false, fmt.Errorf("lock %s kept changing after %d attempts", name, maxLockAttempts)
}

// release deletes the lock blob if incidentID holds it.
func (l *Locks) release(ctx context.Context, name, incidentID string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	bb := l.c.NewBlockBlob(name)
	for range maxLockAttempts {
		h, etag, err := readHolder(ctx, bb)
		if err != nil {
			return err
		}
		switch h {
		case "":
			return nil
		case incidentID:
		default:
			return fmt.Errorf("%w: %s holds it", ErrNotHolder, h)
		}
		_, err = bb.Delete(ctx, &blob.DeleteOptions{AccessConditions: &blob.AccessConditions{
			ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag},
		}})
		if err == nil || bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
			return nil
		}
		if !changed(err) {
			return fmt.Errorf("delete %s: %w", name, err)
		}
	}
	return fmt.Errorf("lock %s kept changing after %d attempts", name, maxLockAttempts)
}

func (l *Locks) put(ctx context.Context, bb BlockBlob, n note, cond *blob.ModifiedAccessConditions) error {
	n.Since = l.now().UTC()
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	since := n.Since.Format(time.RFC3339Nano)
	_, err = bb.Upload(ctx, nopCloser{bytes.NewReader(body)}, &blockblob.UploadOptions{
		Metadata:         map[string]*string{metaIncident: &n.IncidentID, metaSince: &since},
		HTTPHeaders:      &blob.HTTPHeaders{BlobContentType: to.Ptr("application/json")},
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: cond},
	})
	return err
}

// changed reports a conditional write refused because the lock exists or changed since read.
func changed(err error) bool {
	return bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet, bloberror.BlobNotFound)
}

// readHolder returns the holder named by the lock blob and its ETag; "" when there is no lock.
func readHolder(ctx context.Context, bb BlockBlob) (string, azcore.ETag, error) {
	props, err := bb.GetProperties(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound) || isStatus(err, 404) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("read lock: %w", err)
	}
	var etag azcore.ETag
	if props.ETag != nil {
		etag = *props.ETag
	}
	h := metaValue(props.Metadata, metaIncident)
	if h == "" {
		return "", "", errors.New("read lock: lock blob names no incident")
	}
	return h, etag, nil
}

// isStatus matches HEAD responses, which carry no error code in a body.
func isStatus(err error, status int) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == status
}

// metaValue looks a metadata key up case-insensitively: header-borne metadata comes back with
// canonicalised key case.
func metaValue(m map[string]*string, key string) string {
	for k, v := range m {
		if strings.EqualFold(k, key) && v != nil {
			return *v
		}
	}
	return ""
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
