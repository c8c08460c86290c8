package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// TestSnapshotAdmission: with as many incidents admitted and without a LUN as the rescue pool has
// LUNs in the zone, the next incident's Snapshot stage waits before it spends a write (its VM is
// not deallocated), and it is admitted once an admitted incident gets its LUN.
func TestSnapshotAdmission(t *testing.T) {
	t.Parallel()
	fleet := azsim.DefaultFleet()
	// Standard_A1_v2 takes 2 data disks.
	fleet.RescueVMs = []azsim.RescueVMSpec{{Name: "rescue-small", ResourceGroup: "rg-vmrescue", Size: "Standard_A1_v2", Zone: "1", HyperVGeneration: "V2"}}
	e := newEnv(t, envOptions{fleet: fleet})
	ctx := context.Background()
	p := e.newPipeline(nil)
	p.LineWait = 50 * time.Millisecond
	if err := p.PreparePool(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []string
	var snaps []delivered
	for _, vm := range []string{"app-web-01", "app-batch-01", "app-api-01"} {
		id, d := e.reach(scenario{stage: incident.StageSnapshot, vm: vm})
		ids, snaps = append(ids, id), append(snaps, d)
	}
	for _, d := range snaps[:2] {
		if err := e.run(p, ctx, d, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.bus.sentTo(incident.StageRescueAttach)); n != 2 {
		t.Fatalf("%d rescue-attach messages after two snapshots, want 2", n)
	}
	e.sim.ResetCalls()
	if err := e.run(p, ctx, snaps[2], 1); err != nil {
		t.Fatal(err)
	}
	if n := e.sim.CallCount("VirtualMachines.BeginDeallocate"); n != 0 {
		t.Errorf("%d deallocates for the third incident beyond the pool's 2 LUNs, want 0", n)
	}
	if det := recordDetail(lastRetry(t, e, ids[2], incident.StageSnapshot)); !strings.Contains(det["reason"].(string), "admitted") {
		t.Errorf("retry reason %q", det["reason"])
	}
	var retry, attach delivered
	for d, ok := e.bus.pop(); ok; d, ok = e.bus.pop() {
		switch {
		case d.queue == incident.StageSnapshot && d.msg.IncidentID == ids[2]:
			retry = d
		case d.queue == incident.StageRescueAttach && d.msg.IncidentID == ids[0]:
			attach = d
		}
	}
	if retry.queue == "" || attach.queue == "" {
		t.Fatalf("snapshot retry %q, rescue-attach of the first incident %q", retry.queue, attach.queue)
	}
	// The first incident gets its LUN: the third is admitted.
	if err := e.run(p, ctx, attach, 1); err != nil {
		t.Fatal(err)
	}
	if err := e.run(p, ctx, retry, 1); err != nil {
		t.Fatal(err)
	}
	if n := e.sim.CallCount("VirtualMachines.BeginDeallocate"); n != 1 {
		t.Errorf("%d deallocates once admitted, want 1", n)
	}
	var third int
	for _, env := range e.bus.sentTo(incident.StageRescueAttach) {
		if strings.Contains(string(env.Body), ids[2]) {
			third++
		}
	}
	if third != 1 {
		t.Errorf("%d rescue-attach messages for the third incident, want 1", third)
	}
}
