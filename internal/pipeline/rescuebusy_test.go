package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// TestRescueVMBusyWaits: a VM runs one Run Command at a time, so a rescue VM executing a Run
// Command vmrescue did not start (no agent slot names it) is a wait for rescue capacity, not a
// fault: however many times it recurs, the incident stays active and waits on, and it sees the VM
// busy with a read rather than by a Run Command ARM refuses.
func TestRescueVMBusyWaits(t *testing.T) {
	t.Parallel()
	// Real time, every operation instant but a Run Command, which holds its VM for a minute.
	e := newEnv(t, envOptions{timeScale: 1, latency: azsim.LatencyTable{azsim.LatencyRunCommandOverhead: time.Minute}})
	p := e.pipeline()
	id := e.open("app-web-01", false)
	for {
		d, ok := e.bus.peek()
		if !ok {
			t.Fatal("the incident never reached offline-patch")
		}
		if d.queue == incident.StageOfflinePatch {
			break
		}
		if d, _ := e.step(p); d.err != nil {
			t.Fatalf("%s: %v", d.queue, d.err)
		}
	}
	rescueID := e.msgRescueVM(t)
	rescue, err := resourceid.ParseVM(rescueID)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := armcompute.NewVirtualMachineRunCommandsClient(e.sim.SubscriptionID(), azsim.Credential(), e.sim.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	// Another incident's agent starts on the rescue VM first.
	if _, err := runs.BeginCreateOrUpdate(context.Background(), rescue.ResourceGroup, rescue.Name, "vmrescue-other-inspect",
		armcompute.VirtualMachineRunCommand{Location: to.Ptr(e.sim.Location()), Properties: &armcompute.VirtualMachineRunCommandProperties{
			Source: &armcompute.VirtualMachineRunCommandScriptSource{Script: to.Ptr("Write-Output other")}, AsyncExecution: to.Ptr(true)}}, nil); err != nil {
		t.Fatal(err)
	}

	e.sim.ResetCalls()
	const deliveries = 25 // more than the scheduled retries any fault gets
	for i := range deliveries {
		d, ok := e.step(p)
		if !ok {
			t.Fatalf("delivery %d: no message left", i)
		}
		if d.queue != incident.StageOfflinePatch || d.err != nil {
			t.Fatalf("delivery %d: %s: %v", i, d.queue, d.err)
		}
	}
	if s := e.state(id); s != incident.StateActive {
		t.Fatalf("incident %s after %d refused agent runs, want active", s, deliveries)
	}
	waits := 0
	for _, r := range e.records(id) {
		if r.Stage == string(incident.StageOfflinePatch) && r.Event == incident.EventRetrying &&
			strings.Contains(string(r.Detail), "running another agent") {
			waits++
		}
		if r.Event == incident.EventFailed {
			t.Errorf("failed record: %s", r.Detail)
		}
	}
	if waits != deliveries {
		t.Errorf("%d waits for the busy rescue VM recorded, want %d", waits, deliveries)
	}
	// The busy VM is seen with a read: no Run Command is sent for ARM to refuse, each refusal a
	// write spent from the subscription's budget.
	if w := writes(e.sim, ""); len(w) != 0 {
		t.Errorf("%d writes sent to the busy rescue VM, want none (first: %s %d)", len(w), w[0].Op, w[0].Status)
	}
}

// msgRescueVM is the rescue VM the incident's queued message names.
func (e *env) msgRescueVM(t *testing.T) string {
	t.Helper()
	d, ok := e.bus.peek()
	if !ok || d.msg.Artifacts.RescueVMID == "" {
		t.Fatalf("no rescue VM in the queued message: %+v", d.msg.Artifacts)
	}
	return d.msg.Artifacts.RescueVMID
}
