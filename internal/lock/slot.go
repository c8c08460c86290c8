package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// Slot is a kind of one-at-a-time use of a rescue VM that incidents take turns at. Without it
// they would find out that the VM is busy by sending ARM a request it refuses with 409 Conflict,
// and every refused request is a write counted against the subscription's write budget.
type Slot string

// Slots of a rescue VM.
const (
	// SlotAgent: a VM runs one Run Command at a time. Held from before an agent's Run Command is
	// submitted until its result is read.
	SlotAgent Slot = "agent"
	// SlotUpdate: a VM takes one VM-level operation at a time (a data disk attach or detach, the
	// submission of a Run Command). Held for the length of that one operation.
	SlotUpdate Slot = "update"
)

// Holder is the incident holding a slot and since when. The zero Holder is a free slot.
type Holder struct {
	IncidentID string
	Since      time.Time
	etag       azcore.ETag
}

// Free reports a slot nobody holds.
func (h Holder) Free() bool { return h.IncidentID == "" }

// SlotName is the blob name of a rescue VM's slot.
func SlotName(s Slot, rescueVMID string) string {
	return "slot/" + string(s) + "/" + incident.VMKey(rescueVMID)
}

// ReserveSlot takes a slot of a rescue VM for an incident. Taking a slot the incident already
// holds succeeds and keeps its Since (a redelivered message resumes its own turn). When another
// incident holds the slot, it returns acquired=false and that holder, which the caller may judge
// stale and hand to TakeOverSlot.
func (l *Locks) ReserveSlot(ctx context.Context, s Slot, rescueVMID, incidentID string) (acquired bool, holder Holder, err error) {
	if err := checkSlot(s, rescueVMID, incidentID); err != nil {
		return false, Holder{}, fmt.Errorf("reserve %s slot: %w", s, err)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	name := SlotName(s, rescueVMID)
	bb := l.c.NewBlockBlob(name)
	n := note{IncidentID: incidentID, ResourceID: rescueVMID}
	for range maxLockAttempts {
		err := l.put(ctx, bb, n, &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)})
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			if err := l.EnsureContainer(ctx); err != nil {
				return false, Holder{}, fmt.Errorf("reserve %s slot: %w", s, err)
			}
			continue
		}
		if err == nil {
			// Read back for the ETag and time a take-over is conditional on.
			h, err := readSlot(ctx, bb)
			if err != nil {
				return false, Holder{}, fmt.Errorf("reserve %s slot for %s: %w", s, incidentID, err)
			}
			if h.Free() {
				continue
			}
			return h.IncidentID == incidentID, h, nil
		}
		if !changed(err) {
			return false, Holder{}, fmt.Errorf("reserve %s slot for %s: %w", s, incidentID, err)
		}
		h, err := readSlot(ctx, bb)
		if err != nil {
			return false, Holder{}, fmt.Errorf("reserve %s slot for %s: %w", s, incidentID, err)
		}
		if !h.Free() {
			return h.IncidentID == incidentID, h, nil
		}
		// released between the write and the read: try again
	}
	return false, Holder{}, fmt.Errorf("%s slot of %s kept changing after %d attempts", s, rescueVMID, maxLockAttempts)
}

// TakeOverSlot hands a slot from a holder the caller judged stale (as ReserveSlot or SlotHolder
// returned it) to incidentID. It replaces the slot only while it is exactly as read then: the same
// holder, taken at the same time. Otherwise it returns the slot's holder now and acquired=false, or
// takes the slot when it has become free.
func (l *Locks) TakeOverSlot(ctx context.Context, s Slot, rescueVMID string, stale Holder, incidentID string) (acquired bool, holder Holder, err error) {
	if err := checkSlot(s, rescueVMID, incidentID); err != nil {
		return false, Holder{}, fmt.Errorf("take over %s slot: %w", s, err)
	}
	if stale.Free() || stale.etag == "" {
		return l.ReserveSlot(ctx, s, rescueVMID, incidentID)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	bb := l.c.NewBlockBlob(SlotName(s, rescueVMID))
	err = l.put(ctx, bb, note{IncidentID: incidentID, ResourceID: rescueVMID}, &blob.ModifiedAccessConditions{IfMatch: to.Ptr(stale.etag)})
	switch {
	case err == nil:
		h, err := readSlot(ctx, bb)
		if err != nil {
			return false, Holder{}, fmt.Errorf("take over %s slot for %s: %w", s, incidentID, err)
		}
		return h.IncidentID == incidentID, h, nil
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		return l.ReserveSlot(ctx, s, rescueVMID, incidentID)
	case changed(err):
		h, err := readSlot(ctx, bb)
		if err != nil {
			return false, Holder{}, fmt.Errorf("take over %s slot for %s: %w", s, incidentID, err)
		}
		if h.Free() {
			return l.ReserveSlot(ctx, s, rescueVMID, incidentID)
		}
		return h.IncidentID == incidentID, h, nil
	}
	return false, Holder{}, fmt.Errorf("take over %s slot for %s: %w", s, incidentID, err)
}

// ReleaseSlot gives back a slot if the incident holds it. A slot already free is success; one
// held by another incident is refused with ErrNotHolder.
func (l *Locks) ReleaseSlot(ctx context.Context, s Slot, rescueVMID, incidentID string) error {
	if err := checkSlot(s, rescueVMID, incidentID); err != nil {
		return fmt.Errorf("release %s slot: %w", s, err)
	}
	if err := l.release(ctx, SlotName(s, rescueVMID), incidentID); err != nil {
		return fmt.Errorf("release %s slot of %s: %w", s, incidentID, err)
	}
	return nil
}

// SlotHolder returns who holds a slot of a rescue VM; the zero Holder when it is free.
func (l *Locks) SlotHolder(ctx context.Context, s Slot, rescueVMID string) (Holder, error) {
	if rescueVMID == "" {
		return Holder{}, errors.New("slot holder: empty rescue vm id")
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	h, err := readSlot(ctx, l.c.NewBlockBlob(SlotName(s, rescueVMID)))
	if err != nil {
		return Holder{}, fmt.Errorf("%s slot holder: %w", s, err)
	}
	return h, nil
}

func checkSlot(s Slot, rescueVMID, incidentID string) error {
	if s != SlotAgent && s != SlotUpdate {
		return fmt.Errorf("unknown slot %q", s)
	}
	return checkArgs(rescueVMID, incidentID)
}

// readSlot reads a slot's holder, since and ETag; the zero Holder when the slot is free.
func readSlot(ctx context.Context, bb BlockBlob) (Holder, error) {
	props, err := bb.GetProperties(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound) || isStatus(err, 404) {
		return Holder{}, nil
	}
	if err != nil {
		return Holder{}, fmt.Errorf("read slot: %w", err)
	}
	h := Holder{IncidentID: metaValue(props.Metadata, metaIncident)}
	if h.IncidentID == "" {
		return Holder{}, errors.New("read slot: slot blob names no incident")
	}
	if props.ETag != nil {
		h.etag = *props.ETag
	}
	if t, err := time.Parse(time.RFC3339Nano, metaValue(props.Metadata, metaSince)); err == nil {
		h.Since = t
	} else if props.LastModified != nil {
		h.Since = *props.LastModified
	}
	return h, nil
}
