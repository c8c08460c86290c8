package intake

import (
	"context"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/appendblob"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/audit/memblob"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lock"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// newMemIntake is an Intake on the in-memory blob fake, and its trail's container.
func newMemIntake(t *testing.T) (*Intake, *audit.Store, *memblob.Container, *countingBus) {
	t.Helper()
	ctx := context.Background()
	blobs := memblob.New()
	trail := audit.NewFrom(blobs)
	locks := lock.NewFrom(memblob.New())
	if err := trail.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := locks.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	b := &countingBus{}
	return &Intake{Trail: trail, Locks: locks, Bus: b, Scope: scopeAll{}}, trail, blobs, b
}

// TestOpenAfterKillBeforeFirstRecord: a handler killed between creating the incident's blob and
// writing "opened" leaves an empty blob tagged active; the alert's redelivery must write the
// record, or every stage meets an incident without a trail.
func TestOpenAfterKillBeforeFirstRecord(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	in, trail, blobs, b := newMemIntake(t)
	at := time.Date(2026, 11, 20, 3, 14, 7, 0, time.UTC)
	id := AlertIncidentID("ev-killed", at)
	// What the killed delivery left: the VM lock and an empty blob with its tags.
	if _, ok, err := in.Locks.AcquireVM(ctx, vm, id); err != nil || !ok {
		t.Fatalf("lock: %v %v", ok, err)
	}
	if _, err := blobs.NewAppendBlob(audit.BlobName(id)).Create(ctx, &appendblob.CreateOptions{Tags: map[string]string{
		audit.TagVM: incident.VMKey(vm), audit.TagState: incident.StateActive, audit.TagIncident: id}}); err != nil {
		t.Fatal(err)
	}
	rid, _ := resourceid.ParseVM(vm)
	res, err := in.Open(ctx, Request{VM: rid, Trigger: incident.Trigger{Kind: incident.TriggerAlert}, Signal: true, IncidentID: id})
	if err != nil || !res.Opened || res.IncidentID != id || b.n != 1 {
		t.Fatalf("redelivered open: %+v %v (sent %d)", res, err, b.n)
	}
	recs, err := trail.Read(ctx, id)
	if err != nil || len(recs) != 1 || recs[0].Event != incident.EventOpened {
		t.Fatalf("trail after redelivery: %+v %v", recs, err)
	}
}

// TestLateRedeliveryOfEndedIncident: Event Grid may deliver an alert again after the incident it
// opened has ended. That is acknowledged: no error (which would make Event Grid retry for a
// day), no new incident, nothing sent.
func TestLateRedeliveryOfEndedIncident(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	in, trail, _, b := newMemIntake(t)
	at := time.Date(2026, 11, 20, 3, 14, 7, 0, time.UTC)
	id := AlertIncidentID("ev-late", at)
	rid, _ := resourceid.ParseVM(vm)
	req := Request{VM: rid, Trigger: incident.Trigger{Kind: incident.TriggerAlert}, Signal: true, IncidentID: id}
	if res, err := in.Open(ctx, req); err != nil || !res.Opened {
		t.Fatalf("open: %+v %v", res, err)
	}
	if _, err := trail.Append(ctx, id, audit.Entry{VMResourceID: vm, Stage: "support-ticket", Event: incident.EventClosed, State: incident.StateClosed}); err != nil {
		t.Fatal(err)
	}
	res, err := in.Open(ctx, req)
	if err != nil || res.Opened || res.IncidentID != id || b.n != 1 {
		t.Fatalf("late redelivery: %+v %v (sent %d)", res, err, b.n)
	}
	if state, _ := trail.State(ctx, id); state != incident.StateClosed {
		t.Errorf("state after late redelivery = %s, want closed", state)
	}
}
