package pipeline_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// lateTimeout lets the first write of one operation reach the simulator, which applies it, and
// then answers the SDK 504 GatewayTimeout, as ARM's gateway does when the resource provider is
// slow: the SDK retries the request against what the first one already did.
type lateTimeout struct {
	next policy.Transporter
	op   string
	once sync.Once
}

func (l *lateTimeout) Do(req *http.Request) (*http.Response, error) {
	api, _ := req.Context().Value(runtime.CtxAPINameKey{}).(string)
	client, method, _ := strings.Cut(api, ".")
	if strings.TrimSuffix(client, "Client")+"."+method != l.op || req.Method == http.MethodGet {
		return l.next.Do(req)
	}
	first := false
	l.once.Do(func() { first = true })
	resp, err := l.next.Do(req)
	if !first || err != nil {
		return resp, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return armResponse(req, &faultRule{status: http.StatusGatewayTimeout, code: "GatewayTimeout"}), nil
}

// TestDetachAppliedBeforeTimeout: a detach that ARM applied but answered with a gateway timeout
// meets "not attached" on the SDK's retry. The disk is detached, which is what was wanted: the
// stage goes on, and a rollback ends the incident instead of failing and leaving it active.
func TestDetachAppliedBeforeTimeout(t *testing.T) {
	t.Parallel()
	const detach = "VirtualMachines.BeginAttachDetachDataDisks"
	cases := []struct {
		name  string
		stage incident.Stage
		// rollback asks for a rollback first and delivers it through the late timeout.
		rollback  bool
		wantState string
	}{
		{"ReattachReboot detaches the patched disk", incident.StageReattachReboot, false, incident.StateClosed},
		{"the rollback detaches the rescue disk", incident.StageOfflinePatch, true, incident.StateClosed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			id, d := e.reach(scenario{stage: tc.stage, vm: "app-web-01"})
			if tc.rollback {
				e.requestRollback(id)
				f, ok := e.bus.pop()
				if !ok || f.queue != incident.StageFailed {
					t.Fatalf("no rollback queued: %+v", f)
				}
				d = f
			}
			if err := e.run(e.newPipeline((&lateTimeout{op: detach}).wrap), context.Background(), d, 1); err != nil {
				t.Fatalf("%s: %v", d.queue, err)
			}
			if tc.stage == incident.StageReattachReboot {
				e.awaitStart()
			}
			e.drain(e.newPipeline(nil))
			gone := false
			for _, r := range e.records(id) {
				det := recordDetail(r)
				if r.Event == incident.EventSkipped && det["operation"] == detach && strings.Contains(det["reason"].(string), "already done") {
					gone = true
				}
			}
			if !gone {
				t.Error("no record that the detach was found already done")
			}
			if v := e.checkClean(id); v.State != tc.wantState {
				t.Errorf("incident %s/%s, want %s", v.State, v.Outcome, tc.wantState)
			}
		})
	}
}

func (l *lateTimeout) wrap(next policy.Transporter) policy.Transporter {
	l.next = next
	return l
}

// TestAttachLUNTakenByAnotherDisk: a disk attached outside vmrescue at the LUN an incident
// reserved, between the reservation and the attach. The attach is refused (the LUN is taken);
// the incident gives the LUN back and waits for capacity, and attaches at another LUN next time.
func TestAttachLUNTakenByAnotherDisk(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id, d := e.reach(scenario{stage: incident.StageRescueAttach, vm: "app-web-01"})
	g := newGate()
	held := e.newPipeline(func(next policy.Transporter) policy.Transporter {
		return &gatedTransport{next: next, op: "VirtualMachines.BeginAttachDetachDataDisks", g: g}
	})
	done := make(chan error, 1)
	go func() { done <- e.run(held, context.Background(), d, 1) }()
	g.await(t)

	ctx := context.Background()
	rescueID, lun := "", int32(-1)
	for _, rv := range e.cfg.RescueVMs {
		holders, err := e.locks.LUNHolders(ctx, rv)
		if err != nil {
			t.Fatal(err)
		}
		for l, h := range holders {
			if h == id {
				rescueID, lun = rv, l
			}
		}
	}
	if rescueID == "" {
		t.Fatal("no LUN reserved before the attach")
	}
	foreign := attachForeignDisk(t, e, rescueID, lun)

	close(g.release)
	if err := <-done; err != nil {
		t.Fatalf("want a wait for capacity, got %v", err)
	}
	holders, err := e.locks.LUNHolders(ctx, rescueID)
	if err != nil {
		t.Fatal(err)
	}
	if holders[lun] == id {
		t.Errorf("LUN %d still reserved by the incident", lun)
	}
	e.drain(e.newPipeline(nil))
	if v := e.checkClean(id); v.State != incident.StateClosed || v.Outcome != incident.OutcomeTicketed {
		t.Errorf("incident %s/%s, want closed/ticketed", v.State, v.Outcome)
	}
	vm, _ := e.sim.State().VM(rescueID)
	if at, ok := lunOf(vm, foreign); !ok || at != lun {
		t.Errorf("the other disk moved: LUN %d, attached %v", at, ok)
	}
}

// attachForeignDisk makes an empty disk that vmrescue does not know and attaches it to the rescue
// VM at lun, as an operator might.
func attachForeignDisk(t *testing.T, e *env, rescueID string, lun int32) string {
	t.Helper()
	ctx := context.Background()
	rid, err := resourceid.ParseVM(rescueID)
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := e.sim.State().VM(rescueID)
	made := emptyDisk(t, e, rid.ResourceGroup, "ops-scratch", vm.Zone, nil)
	vc, err := armcompute.NewVirtualMachinesClient(e.fleet.SubscriptionID, azsim.Credential(), e.sim.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	ap, err := vc.BeginAttachDetachDataDisks(ctx, rid.ResourceGroup, rid.Name, armcompute.AttachDetachDataDisksRequest{
		DataDisksToAttach: []*armcompute.DataDisksToAttach{{DiskID: to.Ptr(made), Lun: to.Ptr(lun)}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ap.PollUntilDone(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return made
}

// emptyDisk makes an empty 32 GB disk in the fleet's region through the SDK, as an operator might,
// and returns its id.
func emptyDisk(t *testing.T, e *env, rg, name, zone string, tags map[string]*string) string {
	t.Helper()
	ctx := context.Background()
	dc, err := armcompute.NewDisksClient(e.fleet.SubscriptionID, azsim.Credential(), e.sim.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	body := armcompute.Disk{Location: to.Ptr(e.fleet.Location), Tags: tags, Properties: &armcompute.DiskProperties{
		CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionEmpty)}, DiskSizeGB: to.Ptr[int32](32)}}
	if zone != "" {
		body.Zones = []*string{to.Ptr(zone)}
	}
	dp, err := dc.BeginCreateOrUpdate(ctx, rg, name, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	made, err := dp.PollUntilDone(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return *made.ID
}

func lunOf(vm azsim.VM, diskID string) (int32, bool) {
	for _, d := range vm.DataDisks {
		if strings.EqualFold(d.DiskID, diskID) {
			return d.LUN, true
		}
	}
	return 0, false
}
