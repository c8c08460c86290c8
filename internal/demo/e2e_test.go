package demo_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/demo"
	"github.com/vmrescue/vmrescue/internal/handlertest"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// handlerBinary is the handler, built once for the package's tests.
var handlerBinary string

func TestMain(m *testing.M) { handlertest.Main(m, &handlerBinary) }

// Bounds of the end-to-end tests.
const (
	// e2eScale runs the simulated Azure and the host's clock at 1/100 of real time.
	e2eScale = 0.01
	// incidentTimeout bounds one incident, start to close.
	incidentTimeout = 3 * time.Minute
	// killPoll is how often the kill test looks for the stage it interrupts.
	killPoll = 5 * time.Millisecond
)

// The stages of each kind of run, in the order of their first delivery.
var (
	stagesHarvest  = []string{"Snapshot", "RescueAttach", "OfflinePatch", "ReattachReboot", "HarvestDump", "SupportTicket"}
	stagesFirst    = []string{"Snapshot", "RescueAttach", "OfflinePatch", "SupportTicket"}
	stagesRecover  = []string{"Snapshot", "RescueAttach", "OfflinePatch", "ReattachReboot", "HarvestDump"}
	stagesRefusal  = []string{"Snapshot"}
	eventsTicketed = []string{"snapshot/succeeded", "rescue-attach/succeeded", "offline-patch/succeeded", "support-ticket/succeeded", "/closed"}
)

// TestEndToEnd runs incidents through the whole local stack: the host emulator with the handler
// as its child, real HTTP, the Azure simulator with the simulated Windows side (the real agent in
// Run Command, the crash loop) and Azurite. Scenarios that need the same simulator share one
// stack, each on its own VM; those that need another fleet, faults or a killed child get their
// own.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the handler and runs the local stack")
	}
	t.Parallel()
	bin := handlerBinary

	t.Run("shared", func(t *testing.T) {
		t.Parallel()
		f := newFleet(oneRescue("Standard_D4s_v5", "V2"),
			windowsVM("vm-dump", func(v *azsim.VMSpec) { v.DumpPresent, v.BugCheck = true, 0x3B }),
			windowsVM("vm-crash", func(v *azsim.VMSpec) { v.BugCheck = 0xD1 }),
			windowsVM("vm-healthy", func(v *azsim.VMSpec) { v.Behaviour = azsim.BehaviourHealthyAfterPatch }),
			azsim.VMSpec{Name: "vm-linux", ResourceGroup: "rg-app", Size: "Standard_D2s_v5", OSType: "Linux",
				HyperVGeneration: "V2", Zone: "1", OSDiskSizeGB: 30, OSDiskFreeGB: 10},
			windowsVM("vm-dup", nil),
		)
		env := start(t, bin, f, azsim.FaultConfig{})

		t.Run("dump found at the first look", func(t *testing.T) {
			t.Parallel()
			id := post(t, env, "vm-dump", hostproto.SchemaEventGrid)
			r := finish(t, env, id)
			expect(t, env, r, want{outcome: incident.OutcomeTicketed, stages: stagesFirst, events: eventsTicketed,
				ticket: true, dump: true, bugCheck: 0x3B})
			if len(r.InUse) != 0 {
				t.Errorf("a disk is in use after a harvest at the first look: %v", r.InUse)
			}
		})
		t.Run("patch, reproduce and harvest", func(t *testing.T) {
			t.Parallel()
			id := post(t, env, "vm-crash", hostproto.SchemaCloudEvents)
			r := finish(t, env, id)
			expect(t, env, r, want{outcome: incident.OutcomeTicketed, stages: stagesHarvest,
				events: append([]string{"reattach-reboot/succeeded", "harvest-dump/succeeded"}, eventsTicketed...),
				ticket: true, dump: true, swapped: true, bugCheck: 0xD1})
		})
		t.Run("recovers after the patch", func(t *testing.T) {
			t.Parallel()
			id := post(t, env, "vm-healthy", hostproto.SchemaEventGrid)
			r := finish(t, env, id)
			expect(t, env, r, want{outcome: incident.OutcomeRecovered, stages: stagesRecover,
				events:  []string{"snapshot/succeeded", "offline-patch/succeeded", "reattach-reboot/succeeded", "/closed"},
				swapped: true})
		})
		t.Run("Linux refused", func(t *testing.T) {
			t.Parallel()
			id := post(t, env, "vm-linux", hostproto.SchemaEventGrid)
			r := finish(t, env, id)
			expect(t, env, r, want{outcome: incident.OutcomeRefused, stages: stagesRefusal, events: []string{"/opened", "/closed"}})
			if !hasRecord(t, env, id, func(rec audit.Record) bool { return strings.Contains(strings.ToLower(string(rec.Detail)), "linux") }) {
				t.Error("the refusal does not record that the VM runs Linux")
			}
		})
		t.Run("duplicate, out-of-order and case-variant alerts", func(t *testing.T) {
			t.Parallel()
			duplicates(t, env, "vm-dup")
		})
	})

	t.Run("full rescue pool", func(t *testing.T) {
		t.Parallel()
		// One gen1 rescue VM of two data disk LUNs, three incidents at once: the third waits.
		names := []string{"vm-pool-1", "vm-pool-2", "vm-pool-3"}
		var vms []azsim.VMSpec
		for _, n := range names {
			vms = append(vms, windowsVM(n, func(v *azsim.VMSpec) { v.DumpPresent = true }))
		}
		env := start(t, bin, newFleet(oneRescue("Standard_A1_v2", "V1"), vms...), azsim.FaultConfig{})
		ids := make([]string, len(names))
		for i, n := range names {
			ids[i] = post(t, env, n, hostproto.SchemaEventGrid)
		}
		waited := false
		for _, id := range ids {
			r := finish(t, env, id)
			expect(t, env, r, want{outcome: incident.OutcomeTicketed, stages: stagesFirst, events: eventsTicketed, ticket: true, dump: true})
			// A wait in line within the invocation is noted once; a longer one is a scheduled retry.
			// With both LUNs taken or promised, the third incident may wait before its Snapshot's
			// writes instead (admission), and then takes a LUN given back.
			waited = waited || hasRecord(t, env, id, func(rec audit.Record) bool {
				return rec.Stage == string(incident.StageRescueAttach) && (rec.Event == incident.EventRetrying ||
					rec.Event == incident.EventSkipped && strings.Contains(string(rec.Detail), "waiting in line for a LUN")) ||
					rec.Stage == string(incident.StageSnapshot) && rec.Event == incident.EventRetrying &&
						strings.Contains(string(rec.Detail), "wait for one of the 2 LUNs")
			})
		}
		if !waited {
			t.Error("no incident waited for rescue capacity: the pool was never full")
		}
	})

	t.Run("10% injected faults", func(t *testing.T) {
		t.Parallel()
		env := start(t, bin, newFleet(oneRescue("Standard_D4s_v5", "V2"), windowsVM("vm-faults", nil)),
			azsim.FaultConfig{Rate: 0.1, Seed: 5})
		id := post(t, env, "vm-faults", hostproto.SchemaEventGrid)
		r := finish(t, env, id)
		expect(t, env, r, want{outcome: incident.OutcomeTicketed, stages: stagesHarvest, events: eventsTicketed,
			ticket: true, dump: true, swapped: true})
		if n := len(env.Stack.Sim.FaultLog()); n == 0 {
			t.Error("no fault was injected")
		} else {
			t.Logf("%d faults injected", n)
		}
	})

	t.Run("handler killed mid-stage", func(t *testing.T) {
		t.Parallel()
		env := start(t, bin, newFleet(oneRescue("Standard_D4s_v5", "V2"), windowsVM("vm-kill", nil)), azsim.FaultConfig{})
		id := post(t, env, "vm-kill", hostproto.SchemaEventGrid)
		pid := killDuring(t, env, id, "OfflinePatch")
		r := finish(t, env, id)
		expect(t, env, r, want{outcome: incident.OutcomeTicketed, stages: stagesHarvest, events: eventsTicketed,
			ticket: true, dump: true, swapped: true})
		child := env.Stack.Host.Child()
		if child.Restarts() < 1 || child.PID() == pid {
			t.Errorf("the host did not restart the handler: restarts %d, pid %d (killed %d)", child.Restarts(), child.PID(), pid)
		}
		for _, s := range r.Stages {
			if s.Function == "OfflinePatch" && s.Deliveries < 2 {
				t.Errorf("OfflinePatch delivered %d times, want a redelivery after the kill", s.Deliveries)
			}
		}
	})
}

// newFleet is a fleet of its own subscription, so that stacks sharing Azurite never share a
// lock.
func newFleet(rescue []azsim.RescueVMSpec, vms ...azsim.VMSpec) *azsim.Fleet {
	var b [16]byte
	_, _ = rand.Read(b[:])
	x := hex.EncodeToString(b[:])
	return &azsim.Fleet{
		SubscriptionID: x[0:8] + "-" + x[8:12] + "-4" + x[13:16] + "-8" + x[17:20] + "-" + x[20:32],
		Location:       "westeurope", RescueVMs: rescue, VMs: vms,
	}
}

func oneRescue(size, gen string) []azsim.RescueVMSpec {
	return []azsim.RescueVMSpec{{Name: "rescue-1", ResourceGroup: "rg-vmrescue", Size: size, Zone: "1", HyperVGeneration: gen}}
}

// windowsVM is a gen2 Windows VM that crashes at boot with 0x7E, changed by mod.
func windowsVM(name string, mod func(*azsim.VMSpec)) azsim.VMSpec {
	v := azsim.VMSpec{Name: name, ResourceGroup: "rg-app", Size: "Standard_D2s_v5", OSType: "Windows",
		HyperVGeneration: "V2", Zone: "1", OSDiskSizeGB: 127, OSDiskFreeGB: 40, BugCheck: 0x7E,
		Behaviour: azsim.BehaviourCrashOnBoot}
	if mod != nil {
		mod(&v)
	}
	return v
}

// start brings up a stack on the shared Azurite; its logs go to the test log on failure.
func start(t *testing.T, bin string, f *azsim.Fleet, faults azsim.FaultConfig) *demo.Env {
	t.Helper()
	if err := f.Validate(); err != nil {
		t.Fatalf("fleet: %v", err)
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), incidentTimeout)
	defer cancel()
	env, err := demo.Start(ctx, demo.Options{Fleet: f, TimeScale: e2eScale, Faults: faults, Handler: bin,
		Output: logs, AzuriteURL: azuritetest.URL(t)})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() {
			t.Logf("host and handler logs:\n%s", logs.tail(200))
		}
	})
	return env
}

// post posts a VirtualMachineCrashed alert for a fleet VM and returns its incident.
func post(t *testing.T, env *demo.Env, vm, schema string) string {
	t.Helper()
	id, err := env.PostCrash(t.Context(), env.Fleet.VMID(vm), newEventID(), time.Now().UTC(), schema)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// finish waits for the incident to end and reports it.
func finish(t *testing.T, env *demo.Env, id string) demo.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), incidentTimeout)
	defer cancel()
	if state, err := env.Wait(ctx, id); err != nil {
		t.Fatalf("incident %s (%s): %v\n%s", id, state, err, trail(t, env, id))
	}
	r, err := env.Report(ctx, id)
	if err != nil {
		t.Fatalf("report %s: %v", id, err)
	}
	return r
}

// want is what an incident should leave.
type want struct {
	outcome  string
	stages   []string // functions delivered for the incident, by first delivery
	events   []string // "stage/event" records the trail must hold ("/closed": any stage)
	ticket   bool
	dump     bool
	swapped  bool   // the VM boots from the patched copy
	bugCheck uint32 // with dump: the code in the manifest; 0 = 0x7E
}

// expect asserts everything a finished incident leaves: state and outcome, the stages run, the
// audit chain and its events, the ticket, the dump and its manifest in Azurite, nothing tagged
// left behind, the backup retained, the patched disk in use, and no original OS disk touched.
func expect(t *testing.T, env *demo.Env, r demo.Report, w want) {
	t.Helper()
	if r.State != incident.StateClosed || r.Outcome != w.outcome {
		t.Errorf("state %s, outcome %s; want closed, %s\n%s", r.State, r.Outcome, w.outcome, trail(t, env, r.IncidentID))
	}
	var got []string
	for _, s := range r.Stages {
		got = append(got, s.Function)
	}
	if !sameSet(got, w.stages) {
		t.Errorf("stages delivered %v, want %v", got, w.stages)
	}
	if !r.ChainVerified {
		t.Errorf("audit chain not verified: %s", r.ChainError)
	}
	recs, err := env.Records(t.Context(), r.IncidentID)
	if err != nil {
		t.Fatalf("records: %v", err)
	}
	for _, e := range w.events {
		stage, event, _ := strings.Cut(e, "/")
		if !slices.ContainsFunc(recs, func(rec audit.Record) bool {
			return rec.Event == event && (stage == "" || rec.Stage == stage)
		}) {
			t.Errorf("no %q record in the trail\n%s", e, trail(t, env, r.IncidentID))
		}
	}
	if recs[0].Event != incident.EventOpened {
		t.Errorf("first record is %q, want opened", recs[0].Event)
	}

	// One ticket per incident that needs one, none otherwise.
	var tickets []azsim.Ticket
	for _, tk := range env.Stack.Sim.State().Tickets() {
		if strings.EqualFold(tk.ResourceID, r.VM) {
			tickets = append(tickets, tk)
		}
	}
	switch {
	case w.ticket && (len(tickets) != 1 || tickets[0].Name != incident.TicketName(r.IncidentID) || r.TicketID == ""):
		t.Errorf("tickets for the VM: %+v (artifact %q), want exactly one named %s", tickets, r.TicketID, incident.TicketName(r.IncidentID))
	case w.ticket && !strings.Contains(tickets[0].Description, r.IncidentID):
		t.Errorf("the ticket does not name the incident: %q", tickets[0].Description)
	case !w.ticket && (len(tickets) != 0 || r.TicketID != ""):
		t.Errorf("tickets for the VM: %+v (artifact %q), want none", tickets, r.TicketID)
	}

	// The dump in Azurite, with its manifest and the fleet's bug check.
	wantDump := "dumps/" + r.IncidentID + "/MEMORY.DMP"
	if w.dump {
		code := w.bugCheck
		if code == 0 {
			code = 0x7E
		}
		if r.DumpBlob != wantDump || r.DumpSize == 0 || !r.Manifest {
			t.Errorf("dump %q (%d bytes, manifest %v), want %s with its manifest", r.DumpBlob, r.DumpSize, r.Manifest, wantDump)
		}
		if r.BugCheck == nil || r.BugCheck.Code != code || r.BugCheck.Name == "" {
			t.Errorf("bug check %+v, want 0x%X", r.BugCheck, code)
		}
	} else if r.DumpBlob != "" {
		t.Errorf("dump %q, want none", r.DumpBlob)
	}
	if w.outcome == incident.OutcomeRefused && r.Manifest {
		t.Error("a refused VM has a dump manifest")
	}

	// Nothing tagged left behind; the backup kept; the patched copy in use; originals untouched.
	if len(r.LeftBehind) != 0 {
		t.Errorf("left behind: %v", r.LeftBehind)
	}
	backup := slices.ContainsFunc(r.Retained, func(id string) bool { return strings.HasSuffix(id, "/"+incident.BackupSnapshotName(r.IncidentID)) })
	if w.outcome != incident.OutcomeRefused && !backup {
		t.Errorf("backup snapshot not retained: %v", r.Retained)
	}
	if w.outcome == incident.OutcomeRefused && len(r.Retained)+len(r.InUse) != 0 {
		t.Errorf("a refused VM got resources: retained %v, in use %v", r.Retained, r.InUse)
	}
	vm, ok := env.Stack.Sim.State().VM(r.VM)
	if !ok {
		t.Fatalf("VM %s gone", r.VM)
	}
	patched := strings.HasSuffix(strings.ToLower(vm.OSDiskID), "/"+strings.ToLower(incident.RescueDiskName(r.IncidentID)))
	if patched != w.swapped || (w.swapped && len(r.InUse) != 1) {
		t.Errorf("VM boots from %s (in use %v); want the patched copy: %v", vm.OSDiskID, r.InUse, w.swapped)
	}
	if len(r.OriginalsChanged) != 0 || len(r.Violations) != 0 {
		t.Errorf("original OS disks changed: %v; safety violations: %v", r.OriginalsChanged, r.Violations)
	}
}

// duplicates posts one alert, then the same event again in both schemas, an older event of the
// same VM and one naming the VM in upper case: all of it gives one incident.
func duplicates(t *testing.T, env *demo.Env, name string) {
	vmID := env.Fleet.VMID(name)
	at := time.Now().UTC()
	first := newEventID()
	id, err := env.PostCrash(t.Context(), vmID, first, at, hostproto.SchemaEventGrid)
	if err != nil {
		t.Fatal(err)
	}
	others := []struct {
		vm, event, schema string
		at                time.Time
	}{
		{vmID, first, hostproto.SchemaEventGrid, at},                            // the same delivery again
		{vmID, first, hostproto.SchemaCloudEvents, at},                          // the same event, other schema
		{vmID, newEventID(), hostproto.SchemaCloudEvents, at.Add(-time.Minute)}, // older, arriving later
		{strings.ToUpper(vmID), newEventID(), hostproto.SchemaEventGrid, at.Add(time.Second)},
		{strings.ToLower(vmID), newEventID(), hostproto.SchemaCloudEvents, at.Add(2 * time.Second)},
	}
	var extra []string
	for _, o := range others {
		got, err := env.PostCrash(t.Context(), o.vm, o.event, o.at, o.schema)
		if err != nil {
			t.Fatal(err)
		}
		if got != id {
			extra = append(extra, got)
		}
	}
	r := finish(t, env, id)
	expect(t, env, r, want{outcome: incident.OutcomeTicketed, stages: stagesHarvest, events: eventsTicketed,
		ticket: true, dump: true, swapped: true})
	for _, other := range extra {
		if recs, err := env.Records(t.Context(), other); !errors.Is(err, audit.ErrNotFound) {
			t.Errorf("alert incident %s has a trail of its own (%d records, %v): want it folded into %s", other, len(recs), err, id)
		}
	}
	signals := 0
	recs, _ := env.Records(t.Context(), id)
	for _, rec := range recs {
		if rec.Event == incident.EventSignal {
			signals++
		}
	}
	if signals < 3 {
		t.Errorf("%d signal records, want the 3 later alerts at least\n%s", signals, trail(t, env, id))
	}
	if n := countOpened(env, vmID); n != 1 {
		t.Errorf("%d incidents opened for the VM, want 1", n)
	}
}

// countOpened counts the incidents whose Snapshot stage ran for the VM.
func countOpened(env *demo.Env, vmID string) int {
	ids := map[string]bool{}
	for _, inv := range env.Stack.Host.Invocations(0) {
		if inv.Function == "Snapshot" && inv.IncidentID != "" {
			if recs, err := env.Records(context.Background(), inv.IncidentID); err == nil && strings.EqualFold(recs[0].VMResourceID, vmID) {
				ids[inv.IncidentID] = true
			}
		}
	}
	return len(ids)
}

// killDuring SIGKILLs the handler child while the incident's stage runs, and returns the pid.
func killDuring(t *testing.T, env *demo.Env, id, function string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), incidentTimeout)
	defer cancel()
	for {
		for _, inv := range env.Stack.Host.Status().Running {
			if inv.Function == function && inv.IncidentID == id {
				pid := env.Stack.Host.Child().PID()
				p, err := os.FindProcess(pid)
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Kill(); err != nil { // SIGKILL on Unix
					t.Fatalf("kill handler %d: %v", pid, err)
				}
				t.Logf("killed handler %d during %s of %s", pid, function, id)
				return pid
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s of %s never ran", function, id)
		case <-time.After(killPoll):
		}
	}
}

func hasRecord(t *testing.T, env *demo.Env, id string, match func(audit.Record) bool) bool {
	t.Helper()
	recs, err := env.Records(t.Context(), id)
	if err != nil {
		t.Fatalf("records: %v", err)
	}
	return slices.ContainsFunc(recs, match)
}

// trail prints the incident's audit records for a failure message.
func trail(t *testing.T, env *demo.Env, id string) string {
	recs, err := env.Records(context.Background(), id)
	if err != nil {
		return "trail: " + err.Error()
	}
	var b strings.Builder
	for _, r := range recs {
		fmt.Fprintf(&b, "  %3d %-16s %-10s %s\n", r.Seq, r.Stage, r.Event, r.Detail)
	}
	return b.String()
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	x := hex.EncodeToString(b[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// syncBuffer collects the stack's logs.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tail is the last n lines.
func (s *syncBuffer) tail(n int) string {
	lines := strings.Split(s.String(), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
