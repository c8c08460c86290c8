package pipeline

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/snapshots"
	"github.com/vmrescue/vmrescue/internal/vms"
)

// snapshot is the Snapshot stage: read the VM, refuse what vmrescue cannot repair, wait for
// admission (admission.go), deallocate it, and take an incremental snapshot of its OS disk as the
// backup, waiting for its background copy.
func (p *Pipeline) snapshot(ctx context.Context, r *run) error {
	vm, err := p.getVM(ctx, r.vm, true)
	if armerr.IsNotFound(err) {
		return &refusal{reasons: []string{"the VM no longer exists"}}
	}
	if err != nil {
		return fmt.Errorf("read VM: %w", err)
	}
	if reasons := p.refusals(vm); len(reasons) > 0 {
		return &refusal{reasons: reasons}
	}
	r.made.OriginalOSDiskID, r.made.Location, r.made.Zone = vm.OSDiskID, vm.Location, vm.Zone

	if vm.Power != vms.PowerDeallocated {
		if err := p.admit(ctx, r, vm.Location, vm.Zone); err != nil {
			return err
		}
		if err := r.deallocate(ctx, r.vm); err != nil {
			return fmt.Errorf("deallocate VM: %w", err)
		}
	}

	name := incident.BackupSnapshotName(r.msg.IncidentID)
	sid := snapshotID(r.vm, name)
	snap, err := r.ensureSnapshot(ctx, name, vm, incident.RoleBackupSnapshot, true)
	if err != nil {
		return err
	}
	r.made.SnapshotID = sid
	if !r.dry && !snap.Complete() {
		if err := p.awaitSnapshot(ctx, r, name); err != nil {
			return err
		}
	}
	return r.complete(ctx, incident.StageRescueAttach, time.Time{}, 0)
}

// refusals lists every reason vmrescue cannot remediate the VM.
func (p *Pipeline) refusals(vm vms.Facts) []string {
	var out []string
	if !strings.EqualFold(vm.OSType, "Windows") {
		out = append(out, fmt.Sprintf("the VM runs %s, not Windows", orUnknown(vm.OSType)))
	}
	if vm.UnmanagedOSDisk {
		out = append(out, "the OS disk is unmanaged (a VHD in a storage account): it cannot be snapshotted and swapped")
	}
	if vm.DiskEncryption {
		out = append(out, "Azure Disk Encryption is enabled: the OS disk cannot be read on a rescue VM or swapped")
	}
	if tag := p.Config.OptOutTag; tag != "" {
		if _, ok := vm.Tag(tag); ok {
			out = append(out, fmt.Sprintf("the VM carries the opt-out tag %q", tag))
		}
	}
	return out
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown OS"
	}
	return s
}

// ensureSnapshot finds or makes the incident's snapshot name of the VM's OS disk in the VM's
// resource group. A snapshot of that name from another source is refused: the name belongs to
// the incident. The snapshot carries the VM's OS type and hyperVGeneration (from its instance
// view), which a disk made from it must keep for the OS disk swap: an OS disk made before
// generation 2 existed has no hyperVGeneration of its own to pass on.
func (r *run) ensureSnapshot(ctx context.Context, name string, vm vms.Facts, role string, incremental bool) (snapshots.Facts, error) {
	p := r.p
	sourceDiskID, location := vm.OSDiskID, vm.Location
	rg := r.vm.ResourceGroup
	sid := snapshotID(r.vm, name)
	snap, exists, err := p.getSnapshot(ctx, r.vm.SubscriptionID, rg, name)
	if err != nil {
		return snapshots.Facts{}, fmt.Errorf("read snapshot %s: %w", name, err)
	}
	if exists {
		if !strings.EqualFold(snap.SourceID, sourceDiskID) {
			return snapshots.Facts{}, fault.Terminal(fmt.Errorf("snapshot %s exists with source %s, not %s", name, snap.SourceID, sourceDiskID))
		}
		return snap, r.found(ctx, "Snapshots.BeginCreateOrUpdate", sid)
	}
	body := armcompute.Snapshot{
		Location: &location,
		Tags:     tagsOf(r.msg.IncidentID, role, sourceDiskID),
		Properties: &armcompute.SnapshotProperties{
			CreationData: &armcompute.CreationData{CreateOption: ptr(armcompute.DiskCreateOptionCopy), SourceResourceID: &sourceDiskID},
			Incremental:  &incremental,
		},
	}
	if vm.OSType != "" {
		body.Properties.OSType = ptr(armcompute.OperatingSystemTypes(vm.OSType))
	}
	if vm.HyperVGeneration != "" {
		body.Properties.HyperVGeneration = ptr(armcompute.HyperVGeneration(vm.HyperVGeneration))
	}
	az, err := p.in(r.vm.SubscriptionID)
	if err != nil {
		return snapshots.Facts{}, err
	}
	var made armcompute.SnapshotsClientCreateOrUpdateResponse
	err = r.write(ctx, "Snapshots.BeginCreateOrUpdate", sid, func(ctx context.Context) error {
		var err error
		made, err = armclientLRO(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.SnapshotsClientCreateOrUpdateResponse], error) {
			return az.Snapshots.BeginCreateOrUpdate(ctx, rg, name, body, nil)
		})
		return err
	})
	if armerr.IsConflict(err) {
		// Another attempt is making it right now: read again.
		if again, ok, gerr := p.getSnapshot(ctx, r.vm.SubscriptionID, rg, name); gerr == nil && ok {
			return again, nil
		}
	}
	if err != nil {
		return snapshots.Facts{}, fmt.Errorf("create snapshot %s: %w", name, err)
	}
	if r.dry {
		return snapshots.Facts{ID: sid, Name: name, SourceID: sourceDiskID, CompletionPercent: 100}, nil
	}
	return snapshots.FactsOf(made.Snapshot), nil
}

// awaitSnapshot waits for an incremental snapshot's background copy. A copy that ends within a
// poll interval is waited for here, with a read just after its predicted end. A longer one has the stage
// run again by a scheduled message at the end its progress rate predicts, so that no invocation
// holds a worker through a copy: a large disk's takes hours, and in a storm the incidents behind
// would queue for the workers the waiting ones hold.
func (p *Pipeline) awaitSnapshot(ctx context.Context, r *run, name string) error {
	var prev copyProgress
	short := maxShortCopyPauses
	for reads := 1; ; reads++ {
		// A reading is stamped when it is asked for: stamped on the answer, the time the answer
		// spent on its way back would count as copy time, and an early reading (a few percent)
		// multiplies that error into a late prediction. Stamped early, a prediction errs early,
		// and the next short pause, from two readings, is accurate.
		asked := time.Now()
		snap, ok, err := p.getSnapshot(ctx, r.vm.SubscriptionID, r.vm.ResourceGroup, name)
		if err != nil {
			return fmt.Errorf("read snapshot %s: %w", name, err)
		}
		if !ok {
			return fmt.Errorf("snapshot %s vanished while its copy ran", name)
		}
		if snap.Complete() {
			return nil
		}
		cur := copyProgress{percent: snap.CompletionPercent, at: asked}
		left, known := copyLeft(prev, cur, snap.Created)
		var pause time.Duration
		switch {
		case known && left > p.poll():
			delay := min(p.clockWait(left+p.poll()/20), snapshotRecheck)
			return &waitError{reason: fmt.Sprintf("snapshot %s is %.1f%% copied, about %s left", name, snap.CompletionPercent, left.Round(time.Second)), delay: delay}
		case known && short > 0:
			// Read just after the predicted end rather than a whole interval later. A copy that
			// keeps slowing down near its end is then read at the interval: a bounded number of
			// short pauses in a row.
			pause = left + p.poll()/20
			short--
		case !known && reads >= maxCopyReads:
			return wait(capacityWait, "snapshot %s is %.1f%% copied and shows no progress rate yet", name, snap.CompletionPercent)
		default:
			pause, short = p.poll(), maxShortCopyPauses
		}
		prev = cur
		if err := sleep(ctx, pause); err != nil {
			return err
		}
	}
}

// copyProgress is one reading of a snapshot's background copy.
type copyProgress struct {
	percent float32
	at      time.Time
}

// copyLeft is how long a snapshot's copy has left at the reading cur, from its rate between the
// last two readings or, with one reading, since the snapshot was created. known is false when
// no rate can be told (no progress, readings out of order).
func copyLeft(prev, cur copyProgress, created time.Time) (left time.Duration, known bool) {
	from := prev
	if from.at.IsZero() || cur.percent <= from.percent {
		from = copyProgress{percent: 0, at: created}
	}
	if from.at.IsZero() || cur.percent <= from.percent || !cur.at.After(from.at) {
		return 0, false
	}
	perNS := float64(cur.percent-from.percent) / float64(cur.at.Sub(from.at))
	return time.Duration(float64(100-cur.percent) / perNS), true
}

// maxTagValue is Azure's limit on a tag value.
const maxTagValue = 256

func tagsOf(incidentID, role, source string) map[string]*string {
	return incident.Tags(incidentID, role, tagValue(source))
}

// tagValue fits a resource id into a tag value: an id longer than Azure allows is shortened to
// its last segment, the resource name.
func tagValue(id string) string {
	if len(id) <= maxTagValue {
		return id
	}
	name := id[strings.LastIndex(id, "/")+1:]
	return clip(name, maxTagValue-len("…"))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
