package pipeline_test

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/pipeline"
)

// TestJanitorRetention: after a ticketed incident the backup snapshot stays until the retention
// period has passed; then the Janitor deletes it, records it, and never touches the original OS
// disk or the patched disk the VM now runs on.
func TestJanitorRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id := e.open("app-web-01", false)
	p := e.pipeline()
	for {
		d, ok := e.step(p)
		if !ok {
			break
		}
		if d.queue == incident.StageReattachReboot {
			e.awaitStart()
		}
	}
	v := e.checkClean(id)
	backup := v.Artifacts.SnapshotID
	if _, ok := e.sim.State().Snapshot(backup); !ok {
		t.Fatalf("backup snapshot %s is gone before its retention ended", backup)
	}
	j := e.newPipeline(nil)
	j.Now = func() time.Time { return time.Now().Add(e.cfg.Retention - time.Hour) }
	e.sim.ResetCalls()
	rep, err := j.Clean(context.Background())
	if err != nil || len(rep.DeletedSnaps) > 0 {
		t.Fatalf("before retention: %+v %v", rep, err)
	}
	if got, want := calls(e.sim), pipeline.Budget("Janitor", "", len(e.cfg.RescueVMs)); !maps.Equal(got, want) {
		t.Errorf("janitor requests %v, want %v", got, want)
	}
	j.Now = func() time.Time { return time.Now().Add(e.cfg.Retention + time.Hour) }
	rep, err = j.Clean(context.Background())
	if err != nil || len(rep.DeletedSnaps) != 1 || !strings.EqualFold(rep.DeletedSnaps[0], backup) {
		t.Fatalf("after retention: %+v %v", rep, err)
	}
	if _, ok := e.sim.State().Snapshot(backup); ok {
		t.Error("backup snapshot still there")
	}
	vm, _ := e.sim.State().VM(e.fleet.VMID("app-web-01"))
	if _, ok := e.sim.State().Disk(vm.OSDiskID); !ok {
		t.Error("the VM's OS disk was deleted")
	}
	if _, ok := e.sim.State().Disk(v.Artifacts.OriginalOSDiskID); !ok {
		t.Error("the original OS disk was deleted")
	}
	e.checkClean(id)
	found := false
	for _, r := range e.records(id) {
		if r.Stage == "janitor" && recordDetail(r)["operation"] == "Snapshots.BeginDelete" {
			found = true
		}
	}
	if !found {
		t.Error("the deletion is not on the incident's trail")
	}
}

// TestJanitorStall: an incident with no progress for longer than the stall timeout is marked
// failed and rolled back; its leftovers and LUN go.
func TestJanitorStall(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id, _ := e.reach(scenario{stage: incident.StageOfflinePatch, vm: "app-web-01"})
	// The OfflinePatch message is lost: nothing more happens.
	j := e.newPipeline(nil)
	j.Now = func() time.Time { return time.Now().Add(e.cfg.StallTimeout - time.Minute) }
	if rep, err := j.Clean(context.Background()); err != nil || len(rep.Stalled) != 0 {
		t.Fatalf("before the stall timeout: %+v %v", rep, err)
	}
	j.Now = func() time.Time { return time.Now().Add(e.cfg.StallTimeout + time.Minute) }
	rep, err := j.Clean(context.Background())
	if err != nil || len(rep.Stalled) != 1 || rep.Stalled[0] != id {
		t.Fatalf("stall: %+v %v", rep, err)
	}
	if len(e.bus.sentTo(incident.StageFailed)) != 1 {
		t.Fatal("no rollback queued")
	}
	e.drain(e.newPipeline(nil))
	v := e.checkClean(id)
	if v.State != incident.StateFailed || v.Outcome != incident.OutcomeRolledBack {
		t.Errorf("incident %s/%s", v.State, v.Outcome)
	}
	if _, ok := e.sim.State().Disk(diskOf(e, id)); ok {
		t.Error("the rescue disk of the failed incident is still there")
	}
}

func diskOf(e *env, id string) string {
	return e.sim.State().ResourceID("disks", "rg-app", incident.RescueDiskName(id))
}

// TestFullRescuePool: with every LUN of the only rescue VM in the zone taken, RescueAttach waits
// (scheduled retries, never a failure) and completes once a LUN is free.
func TestFullRescuePool(t *testing.T) {
	t.Parallel()
	e, rescue := smallPoolEnv(t)
	busy := "inc-20200101-000000-b0b0"
	ctx := context.Background()
	for lun := int32(0); lun < 2; lun++ {
		if ok, _, err := e.locks.ReserveLUN(ctx, rescue, lun, busy); err != nil || !ok {
			t.Fatal(err)
		}
	}
	id, d := e.reach(scenario{stage: incident.StageRescueAttach, vm: "app-web-01"})
	p := e.newPipeline(nil)
	if err := e.run(p, ctx, d, 1); err != nil {
		t.Fatalf("a full pool must wait, not fail: %v", err)
	}
	for i := 2; i <= 3; i++ {
		w, _ := e.bus.pop()
		if w.queue != incident.StageRescueAttach || w.id != incident.MessageID(id, incident.StageRescueAttach, i-1) {
			t.Fatalf("want retry %d of rescue-attach, got %s %s", i-1, w.queue, w.id)
		}
		if i == 3 {
			for lun := int32(0); lun < 2; lun++ {
				if err := e.locks.ReleaseLUN(ctx, rescue, lun, busy); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := e.run(p, ctx, w, 1); err != nil {
			t.Fatal(err)
		}
	}
	waits := 0
	for _, r := range e.records(id) {
		if r.Event == incident.EventRetrying && strings.Contains(recordDetail(r)["reason"].(string), "no rescue capacity") {
			waits++
		}
	}
	if waits != 2 {
		t.Errorf("%d capacity waits recorded, want 2", waits)
	}
	for {
		d, ok := e.step(p)
		if !ok {
			break
		}
		if d.err != nil {
			t.Fatal(d.err)
		}
		if d.queue == incident.StageReattachReboot {
			e.awaitStart()
		}
	}
	v := e.checkClean(id)
	if v.State != incident.StateClosed || v.Outcome != incident.OutcomeTicketed {
		t.Errorf("incident %s/%s", v.State, v.Outcome)
	}
}

// TestSnapshotCopyWait: the Snapshot stage does not hold its invocation through a copy that
// outlasts a poll interval: it schedules itself again at the end the copy's rate predicts, and
// that delivery finds the copy done and moves on.
func TestSnapshotCopyWait(t *testing.T) {
	t.Parallel()
	const copyTime = 600 * time.Millisecond
	e := newEnv(t, envOptions{timeScale: 1, latency: azsim.LatencyTable{azsim.LatencySnapshotCopy: copyTime}})
	id, d := e.reach(scenario{stage: incident.StageSnapshot, vm: "app-web-01"})
	e.sim.ResetCalls()
	p := e.newPipeline(nil)
	p.Poll = 100 * time.Millisecond
	before := time.Now()
	if err := e.run(p, context.Background(), d, 1); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(before); took > copyTime {
		t.Errorf("the invocation took %v: it waited through the copy", took)
	}
	if next := e.bus.sentTo(incident.StageRescueAttach); len(next) != 0 {
		t.Fatalf("rescue-attach sent before the copy ended")
	}
	// Scheduled at the predicted end (the copy began at the create), not a poll later.
	if in := scheduledIn(t, e, incident.StageSnapshot, before); in < copyTime/2 || in > copyTime+3*p.Poll {
		t.Errorf("snapshot scheduled again %v later, want about the copy's %v", in, copyTime)
	}
	if det := recordDetail(lastRetry(t, e, id, incident.StageSnapshot)); !strings.Contains(det["reason"].(string), "copied") {
		t.Errorf("retry reason %q", det["reason"])
	}
	retry, ok := e.bus.pop()
	if !ok || retry.queue != incident.StageSnapshot {
		t.Fatalf("next message %+v, want the snapshot retry", retry)
	}
	time.Sleep(time.Until(retry.at))
	if err := e.run(p, context.Background(), retry, 1); err != nil {
		t.Fatal(err)
	}
	snap, ok := e.sim.State().Snapshot(e.sim.State().ResourceID("snapshots", "rg-app", incident.BackupSnapshotName(id)))
	if !ok || snap.CompletionPercent < 100 {
		t.Errorf("snapshot %+v", snap)
	}
	if next := e.bus.sentTo(incident.StageRescueAttach); len(next) != 1 {
		t.Errorf("%d rescue-attach messages", len(next))
	}
	if n := e.sim.CallCount("Snapshots.BeginCreateOrUpdate"); n != 1 {
		t.Errorf("%d snapshot creates, want 1", n)
	}
}

// TestSnapshotCopyNoticedAtItsEnd: a copy that the progress rate says ends within a poll interval
// is waited for within the invocation, with a read just after the end instead of a whole poll
// interval later.
func TestSnapshotCopyNoticedAtItsEnd(t *testing.T) {
	t.Parallel()
	const copyTime, poll = 850 * time.Millisecond, 1200 * time.Millisecond
	e := newEnv(t, envOptions{timeScale: 1, latency: azsim.LatencyTable{azsim.LatencySnapshotCopy: copyTime}})
	id, d := e.reach(scenario{stage: incident.StageSnapshot, vm: "app-web-01"})
	e.sim.ResetCalls()
	p := e.newPipeline(nil)
	p.Poll = poll
	if err := e.run(p, context.Background(), d, 1); err != nil {
		t.Fatal(err)
	}
	if next := e.bus.sentTo(incident.StageRescueAttach); len(next) != 1 {
		t.Fatalf("%d rescue-attach messages, want the stage done in one invocation", len(next))
	}
	var copied time.Time
	for _, op := range e.sim.State().Operations() {
		if op.Name == azsim.LatencySnapshotCopy && strings.HasSuffix(op.Resource, strings.ToLower(incident.BackupSnapshotName(id))) {
			copied = op.End
		}
	}
	var last time.Time
	for _, c := range e.sim.CallLog() {
		if c.Op == "Snapshots.Get" {
			last = c.Time
		}
	}
	if copied.IsZero() || last.Before(copied) {
		t.Fatalf("copy ended %v, last read %v", copied, last)
	}
	// Reading every poll interval alone would see the end about 350ms late (reads at 0 and
	// 1200ms); the bound leaves room for a loaded machine's scheduling delay.
	if late := last.Sub(copied); late > 250*time.Millisecond {
		t.Errorf("the end of the copy was seen %v late", late)
	}
}
