package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/disks"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/snapshots"
)

// janitorBudget bounds one Janitor run; what it does not reach, the next run does.
const janitorBudget = 10 * time.Minute

// janitorStage is the trail stage of the Janitor's records.
const janitorStage = "janitor"

// janitorRetryBase sets apart the Attempts of the rollbacks the Janitor queues for an incident it
// finds stalled again (its first is janitorAttempt): a repeat must not be taken by duplicate
// detection for the first, which may have been lost (dead-lettered on the failed queue).
const janitorRetryBase = 200

// janitor is the timer-triggered cleanup.
type janitor struct{ p *Pipeline }

// JanitorReport says what one Janitor run did.
type JanitorReport struct {
	Stalled      []string // incidents marked failed, rollback queued
	DeletedDisks []string
	DeletedSnaps []string
	DeletedRuns  []string
	ReleasedLUNs int
	Kept         []string // tagged resources kept, with the reason
	Errors       []string
}

// Run implements server.TimerRunner.
func (j *janitor) Run(ctx context.Context, _ hostproto.Timer) error {
	rep, err := j.p.Clean(ctx)
	j.p.log().Info("janitor run", "stalled", len(rep.Stalled), "deletedDisks", len(rep.DeletedDisks),
		"deletedSnapshots", len(rep.DeletedSnaps), "deletedRunCommands", len(rep.DeletedRuns), "releasedLUNs", rep.ReleasedLUNs,
		"errors", len(rep.Errors))
	return err
}

// Clean is one Janitor run:
//   - an active incident with no progress for longer than the stall timeout is marked failed and
//     its rollback queued;
//   - temporary disks and snapshots (tagged with an incident and a role, named as that incident
//     names them) are deleted once their incident is over, or when older than the retention
//     period; a disk still attached to any VM is never deleted;
//   - a backup snapshot is deleted only once its incident is over and the retention period has
//     passed since then;
//   - LUN reservations and agent Run Commands of incidents that are over are released.
//
// Only resources that carry vmrescue's tags and names are looked at, so an original OS disk,
// which vmrescue never tags, is never touched. Every deletion is recorded on its incident's trail.
func (p *Pipeline) Clean(ctx context.Context) (JanitorReport, error) {
	ctx, cancel := context.WithTimeout(ctx, janitorBudget)
	defer cancel()
	c := &cleaner{p: p, now: p.now(), incidents: map[string]incidentFacts{}, unread: map[string]error{}}
	var errs []error
	for _, step := range []func(context.Context) error{c.stalls, c.disks, c.snapshots, c.luns, c.runs} {
		if err := step(ctx); err != nil {
			errs = append(errs, err)
			c.rep.Errors = append(c.rep.Errors, err.Error())
		}
	}
	return c.rep, errors.Join(errs...)
}

type cleaner struct {
	p         *Pipeline
	now       time.Time
	rep       JanitorReport
	incidents map[string]incidentFacts // read once per run
	unread    map[string]error         // incidents whose trail could not be read this run
}

// incidentFacts is what the Janitor knows of an incident from its trail.
type incidentFacts struct {
	state string    // "" when the incident has no trail
	ended time.Time // its last record
	// osDisk: the incident swapped its patched disk in as the VM's OS disk and did not put the
	// original back. That disk is the VM's own now, attached or not (a VM deleted with its
	// disks kept leaves it unattached), and the Janitor never deletes it.
	osDisk bool
}

// over reports an incident that will make nothing more: closed, failed or rejected. An incident
// without a trail is over too: nothing will ever act on it.
func (f incidentFacts) over() bool { return f.state != incident.StateActive }

// incident reads an incident's state and records once per run. An error other than "no such
// incident" is returned, and the caller leaves the incident's resources alone for this run: a
// trail that could not be read says nothing about whether the incident is over.
func (c *cleaner) incident(ctx context.Context, id string) (incidentFacts, error) {
	if f, ok := c.incidents[id]; ok {
		return f, nil
	}
	if err, ok := c.unread[id]; ok {
		return incidentFacts{}, err
	}
	var f incidentFacts
	s, err := c.p.Trail.State(ctx, id)
	if err == nil || errors.Is(err, audit.ErrNotFound) {
		var recs []audit.Record
		if recs, err = c.p.Trail.Read(ctx, id); err == nil || errors.Is(err, audit.ErrNotFound) {
			err = nil
			f.state = s
			if len(recs) > 0 {
				f.ended = recs[len(recs)-1].Time
				f.osDisk = swappedIn(recs)
			}
		}
	}
	if err != nil {
		err = fmt.Errorf("janitor: trail of %s: %w", id, err)
		c.unread[id] = err
		c.rep.Errors = append(c.rep.Errors, err.Error())
		return f, err
	}
	if f.state == "" && f.ended.IsZero() {
		// No trail. Resources that name an incident opened within the retention period are left
		// alone: a trail that is missing (an audit container replaced by an empty one) says
		// nothing of whether the incident is over.
		if opened, ok := incident.OpenedAt(id); ok && c.now.Sub(opened) <= c.p.Config.Retention {
			f.state = incident.StateActive
		}
	}
	c.incidents[id] = f
	return f, nil
}

func (c *cleaner) stalls(ctx context.Context) error {
	ids, err := c.p.Trail.List(ctx, incident.StateActive)
	if err != nil {
		return fmt.Errorf("janitor: list active incidents: %w", err)
	}
	var errs []error
	for _, id := range ids {
		recs, err := c.p.Trail.Read(ctx, id)
		if err != nil || len(recs) == 0 {
			continue
		}
		last := lastActivity(recs)
		if c.now.Sub(last) <= c.p.Config.StallTimeout {
			continue
		}
		if err := c.p.stalled(ctx, id, recs, last); err != nil {
			errs = append(errs, err)
			continue
		}
		c.rep.Stalled = append(c.rep.Stalled, id)
	}
	return errors.Join(errs...)
}

// stalled marks an incident failed and queues its rollback.
func (p *Pipeline) stalled(ctx context.Context, id string, recs []audit.Record, last time.Time) error {
	v := summarize(id, recs)
	attempt := janitorAttempt
	for _, rec := range recs {
		if rec.Stage == janitorStage && rec.Event == incident.EventFailed && detailOf(rec).RollbackQueued {
			attempt = max(attempt+1, janitorRetryBase+1)
		}
	}
	if _, err := p.Trail.Append(ctx, id, audit.Entry{VMResourceID: v.VMResourceID, Stage: janitorStage, Event: incident.EventFailed,
		Detail: detail{Reason: fmt.Sprintf("no progress since %s (stall timeout %s)", last.Format(time.RFC3339), p.Config.StallTimeout),
			RollbackQueued: true, Attempt: attempt}}); err != nil {
		return fmt.Errorf("janitor: record stall of %s: %w", id, err)
	}
	msg := incident.Message{Version: incident.MessageVersion, IncidentID: id, VMResourceID: v.VMResourceID,
		Stage: incident.StageFailed, Trigger: trigOf(v.Trigger), DryRun: v.DryRun, Artifacts: v.Artifacts}
	if err := p.Bus.Send(ctx, msg, bus.SendOptions{Attempt: attempt}); err != nil {
		return fmt.Errorf("janitor: queue rollback of %s: %w", id, err)
	}
	p.log().Warn("stalled incident failed, rollback queued", "incidentId", id, "lastActivity", last)
	return nil
}

// tagged reads the incident and role tags of a resource named as that incident names it; ok is
// false for anything else.
func tagged(tags map[string]string, name string) (id, role string, ok bool) {
	get := func(k string) string {
		for tk, v := range tags {
			if strings.EqualFold(tk, k) {
				return v
			}
		}
		return ""
	}
	id, role = get(incident.TagIncident), get(incident.TagRole)
	if !incident.ValidID(id) {
		return "", "", false
	}
	var want string
	switch role {
	case incident.RoleBackupSnapshot:
		want = incident.BackupSnapshotName(id)
	case incident.RoleRescueDisk:
		want = incident.RescueDiskName(id)
	case incident.RoleHarvestSnapshot:
		want = incident.HarvestSnapshotName(id)
	case incident.RoleHarvestDisk:
		want = incident.HarvestDiskName(id)
	default:
		return "", "", false
	}
	return id, role, strings.EqualFold(name, want)
}

func (c *cleaner) disks(ctx context.Context) error {
	var errs []error
	for _, sub := range c.p.subscriptions() {
		if err := c.disksIn(ctx, sub); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *cleaner) disksIn(ctx context.Context, sub string) error {
	az, err := c.p.in(sub)
	if err != nil {
		return err
	}
	pager := az.Disks.NewListPager(nil)
	var errs []error
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("janitor: list disks of %s: %w", sub, err)
		}
		for _, d := range page.Value {
			if d == nil {
				continue
			}
			f := disks.FactsOf(*d)
			id, role, ok := tagged(f.Tags, f.Name)
			if !ok || (role != incident.RoleRescueDisk && role != incident.RoleHarvestDisk) {
				continue
			}
			if f.ManagedBy != "" {
				c.keep(f.ID, "attached to "+f.ManagedBy)
				continue
			}
			inc, err := c.incident(ctx, id)
			if err != nil {
				continue // reported by incident; left for the next run
			}
			if role == incident.RoleRescueDisk && inc.osDisk {
				c.keep(f.ID, "swapped in as the VM's OS disk")
				continue
			}
			if !inc.over() && c.now.Sub(f.Created) <= c.p.Config.Retention {
				continue
			}
			rid, err := resourceid.ParseDisk(f.ID)
			if err != nil {
				continue
			}
			if err := c.delete(ctx, id, "Disks.BeginDelete", f.ID, func(ctx context.Context) error {
				return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.DisksClientDeleteResponse], error) {
					return az.Disks.BeginDelete(ctx, rid.ResourceGroup, rid.Name, nil)
				})
			}); err != nil {
				errs = append(errs, err)
				continue
			}
			c.rep.DeletedDisks = append(c.rep.DeletedDisks, f.ID)
		}
	}
	return errors.Join(errs...)
}

func (c *cleaner) snapshots(ctx context.Context) error {
	var errs []error
	for _, sub := range c.p.subscriptions() {
		if err := c.snapshotsIn(ctx, sub); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *cleaner) snapshotsIn(ctx context.Context, sub string) error {
	az, err := c.p.in(sub)
	if err != nil {
		return err
	}
	pager := az.Snapshots.NewListPager(nil)
	var errs []error
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("janitor: list snapshots of %s: %w", sub, err)
		}
		for _, s := range page.Value {
			if s == nil {
				continue
			}
			f := snapshots.FactsOf(*s)
			id, role, ok := tagged(f.Tags, f.Name)
			if !ok {
				continue
			}
			if role != incident.RoleBackupSnapshot && role != incident.RoleHarvestSnapshot {
				continue
			}
			inc, err := c.incident(ctx, id)
			if err != nil {
				continue // reported by incident; left for the next run
			}
			switch role {
			case incident.RoleBackupSnapshot:
				// Kept until the retention period has passed since the incident ended.
				since := inc.ended
				if f.Created.After(since) {
					since = f.Created
				}
				if !inc.over() || c.now.Sub(since) <= c.p.Config.Retention {
					continue
				}
			case incident.RoleHarvestSnapshot:
				if !inc.over() && c.now.Sub(f.Created) <= c.p.Config.Retention {
					continue
				}
			default:
				continue
			}
			rid, err := resourceid.ParseSnapshot(f.ID)
			if err != nil {
				continue
			}
			if err := c.delete(ctx, id, "Snapshots.BeginDelete", f.ID, func(ctx context.Context) error {
				return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.SnapshotsClientDeleteResponse], error) {
					return az.Snapshots.BeginDelete(ctx, rid.ResourceGroup, rid.Name, nil)
				})
			}); err != nil {
				errs = append(errs, err)
				continue
			}
			c.rep.DeletedSnaps = append(c.rep.DeletedSnaps, f.ID)
		}
	}
	return errors.Join(errs...)
}

// delete makes one deletion and records it on the incident's trail.
func (c *cleaner) delete(ctx context.Context, incidentID, op, resourceIDStr string, do func(context.Context) error) error {
	ctx = armclient.WithCorrelation(ctx, incidentID)
	start := time.Now()
	err := do(ctx)
	d := detail{Operation: op, ResourceID: resourceIDStr, DurationMS: msSince(start), Reason: "janitor cleanup"}
	event := incident.EventSucceeded
	if err != nil {
		d.Error, event = clip(err.Error(), 500), incident.EventRetrying
	}
	c.record(ctx, incidentID, event, d)
	if err != nil {
		return fmt.Errorf("janitor: %s %s: %w", op, resourceIDStr, err)
	}
	return nil
}

// record writes on an incident's trail; an incident without a trail gets none.
func (c *cleaner) record(ctx context.Context, incidentID, event string, d detail) {
	vm := ""
	if recs, err := c.p.Trail.Read(ctx, incidentID); err == nil && len(recs) > 0 {
		vm = recs[0].VMResourceID
	}
	if vm == "" {
		return
	}
	if _, err := c.p.Trail.Append(ctx, incidentID, audit.Entry{VMResourceID: vm, Stage: janitorStage, Event: event, Detail: d}); err != nil {
		c.p.log().Warn("janitor: record not written", "incidentId", incidentID, "err", err)
	}
}

func (c *cleaner) keep(id, why string) { c.rep.Kept = append(c.rep.Kept, id+": "+why) }

// luns releases LUN reservations held by incidents that are over.
func (c *cleaner) luns(ctx context.Context) error {
	var errs []error
	for _, vm := range c.p.Config.RescueVMs {
		holders, err := c.p.Locks.LUNHolders(ctx, vm)
		if err != nil {
			errs = append(errs, fmt.Errorf("janitor: LUN reservations of %s: %w", vm, err))
			continue
		}
		for lun, id := range holders {
			inc, err := c.incident(ctx, id)
			if err != nil {
				continue // reported by incident; left for the next run
			}
			if !inc.over() {
				continue
			}
			if err := c.p.releaseLUN(ctx, vm, lun, id); err != nil && !isNotHolder(err) {
				errs = append(errs, fmt.Errorf("janitor: release LUN %d of %s: %w", lun, vm, err))
				continue
			}
			c.rep.ReleasedLUNs++
		}
	}
	return errors.Join(errs...)
}

// runs deletes agent Run Commands of incidents that are over.
func (c *cleaner) runs(ctx context.Context) error {
	var errs []error
	for _, vm := range c.p.Config.RescueVMs {
		rid, err := resourceid.ParseVM(vm)
		if err != nil {
			continue
		}
		az, err := c.p.in(rid.SubscriptionID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pager := az.RunCommands.NewListByVirtualMachinePager(rid.ResourceGroup, rid.Name, nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				errs = append(errs, fmt.Errorf("janitor: list run commands of %s: %w", rid.Name, err))
				break
			}
			for _, rc := range page.Value {
				if rc == nil || rc.Name == nil {
					continue
				}
				id := runIncident(*rc.Name)
				if id == "" {
					continue
				}
				inc, err := c.incident(ctx, id)
				if err != nil {
					continue // reported by incident; left for the next run
				}
				if !inc.over() {
					continue
				}
				name := *rc.Name
				rcID := rid.String() + "/runCommands/" + name
				if err := c.delete(ctx, id, "VirtualMachineRunCommands.BeginDelete", rcID, func(ctx context.Context) error {
					return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.VirtualMachineRunCommandsClientDeleteResponse], error) {
						return az.RunCommands.BeginDelete(ctx, rid.ResourceGroup, rid.Name, name, nil)
					})
				}); err != nil {
					errs = append(errs, err)
					continue
				}
				c.rep.DeletedRuns = append(c.rep.DeletedRuns, rcID)
			}
		}
	}
	return errors.Join(errs...)
}

// runIncident returns the incident a Run Command named by incident.RunCommandName belongs to.
func runIncident(name string) string {
	rest, ok := strings.CutPrefix(name, "vmrescue-")
	if !ok {
		return ""
	}
	i := strings.LastIndex(rest, "-")
	if i < 0 || !incident.ValidID(rest[:i]) {
		return ""
	}
	return rest[:i]
}
