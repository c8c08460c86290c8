package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/intake"
	"github.com/vmrescue/vmrescue/internal/lifecycle"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// covDrive delivers every message until none is left, failing on a stage error, and waits for the
// guest's reaction after each ReattachReboot (as TestEndToEnd does). It returns the stages run.
func covDrive(t *testing.T, e *env) []string {
	t.Helper()
	p := e.pipeline()
	var out []string
	for i := 0; ; i++ {
		if i > 50 {
			t.Fatalf("the incident did not settle: %v", out)
		}
		d, ok := e.step(p)
		if !ok {
			return out
		}
		if d.err != nil {
			t.Fatalf("%s: %v", d.queue, d.err)
		}
		out = append(out, string(d.queue))
		if d.queue == incident.StageReattachReboot {
			e.awaitStart()
		}
	}
}

// covMessage decodes the body of an envelope the pipeline sent.
func covMessage(t *testing.T, body []byte) incident.Message {
	t.Helper()
	var m incident.Message
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// covResourceMatches reports a request path that is the resource id itself or one action on it
// (".../virtualMachines/x/deallocate"), compared case-insensitively.
func covResourceMatches(path, resourceID string) bool {
	p, rid := strings.ToLower(path), strings.ToLower(resourceID)
	if rid == "" {
		return false
	}
	if p == rid {
		return true
	}
	rest, ok := strings.CutPrefix(p, rid+"/")
	return ok && rest != "" && !strings.Contains(rest, "/")
}

// TestWritesAudited: every ARM write of an incident that patches, reboots, harvests a dump and
// files a ticket has its own trail record with the operation, the resource id and the duration.
func TestWritesAudited(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	id := e.open("app-web-01", false)
	covDrive(t, e)
	log := e.sim.CallLog() // before checkClean: the Janitor's requests are not the incident's

	type rec struct {
		op, rid  string
		duration bool
		used     bool
	}
	var recs []*rec
	for _, r := range e.records(id) {
		d := recordDetail(r)
		op, _ := d["operation"].(string)
		if op == "" || r.Event == incident.EventSkipped {
			continue // planned in a dry run, or found made by an earlier attempt: no request
		}
		rid, _ := d["resourceId"].(string)
		_, hasDuration := d["durationMs"]
		recs = append(recs, &rec{op: op, rid: rid, duration: hasDuration})
	}
	writes := 0
	for _, c := range log {
		if c.Poll || c.Method == http.MethodGet {
			continue
		}
		// Tickets.CheckNameAvailability is a POST that changes nothing: it is paced against the
		// write budget but deliberately not recorded as a write on the trail (ticket.go).
		if c.Op == "Tickets.CheckNameAvailability" {
			continue
		}
		writes++
		var match *rec
		for _, r := range recs {
			if !r.used && r.op == c.Op && covResourceMatches(c.Path, r.rid) {
				match = r
				break
			}
		}
		if match == nil {
			t.Errorf("ARM write %s %s (%s) has no trail record with its operation and resource id", c.Method, c.Path, c.Op)
			continue
		}
		match.used = true
		if !match.duration {
			t.Errorf("trail record of %s %s has no durationMs", c.Op, match.rid)
		}
	}
	// The incident made the writes this test is about (a guard against an empty call log).
	if writes < 10 {
		t.Errorf("only %d ARM writes seen for a full incident", writes)
	}
	for _, r := range recs {
		if !r.used {
			t.Errorf("trail records write %s %s that no ARM request matches", r.op, r.rid)
		}
	}
	if v := e.checkClean(id); v.State != incident.StateClosed || v.Outcome != incident.OutcomeTicketed {
		t.Errorf("incident ended %s/%s", v.State, v.Outcome)
	}
}

// TestSnapshotVMGone: an incident opened for a VM that does not exist (in the fleet's subscription
// and resource group, so intake lets it in) is refused at Snapshot: closed with its reason, one
// delivery acknowledged, one read and no retry, no write and nothing to roll back.
func TestSnapshotVMGone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	gone := strings.Replace(e.fleet.VMID("app-web-01"), "/app-web-01", "/app-gone-01", 1)
	if _, ok := e.sim.State().VM(gone); ok {
		t.Fatalf("%s exists in the fleet", gone)
	}
	vm, err := resourceid.ParseVM(gone)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.intake.Open(ctx, intake.Request{VM: vm,
		Trigger: incident.Trigger{Kind: incident.TriggerAlert, EventID: "ev-gone", Annotation: intake.AnnotationCrashed}})
	if err != nil || !res.Opened {
		t.Fatalf("intake refused the VM: %+v %v", res, err)
	}
	id := res.IncidentID
	e.sim.ResetCalls()
	ds := e.drain(e.pipeline())
	if got := stagesOf(ds); strings.Join(got, ",") != "snapshot" {
		t.Fatalf("deliveries %v, want one snapshot, acknowledged", got)
	}
	if got := calls(e.sim); len(got) != 1 || got["VirtualMachines.Get"] != 1 {
		t.Errorf("ARM requests %v, want one VirtualMachines.Get", got)
	}
	for _, c := range e.sim.CallLog() {
		if c.Write {
			t.Errorf("write for a missing VM: %s %s", c.Method, c.Path)
		}
	}
	for _, stage := range []incident.Stage{incident.StageSnapshot, incident.StageFailed, incident.StageRescueAttach} {
		want := 0
		if stage == incident.StageSnapshot {
			want = 1 // intake's
		}
		if n := len(e.bus.sentTo(stage)); n != want {
			t.Errorf("%d %s messages sent, want %d", n, stage, want)
		}
	}
	reason := ""
	for _, r := range e.records(id) {
		switch r.Event {
		case incident.EventRetrying, incident.EventFailed:
			t.Errorf("%s record: %s", r.Event, r.Detail)
		case incident.EventClosed:
			reason, _ = recordDetail(r)["reason"].(string)
		}
	}
	if !strings.Contains(reason, "the VM no longer exists") {
		t.Errorf("closing reason %q", reason)
	}
	v := e.checkClean(id)
	// What snapshot.go does: a refusal, the incident closed (not failed: nothing to roll back).
	if v.State != incident.StateClosed || v.Outcome != incident.OutcomeRefused {
		t.Errorf("incident ended %s/%s, want %s/%s", v.State, v.Outcome, incident.StateClosed, incident.OutcomeRefused)
	}
	if h, err := e.locks.HolderVM(ctx, gone); err != nil || h != "" {
		t.Errorf("VM lock held by %q (%v) after the refusal", h, err)
	}
	if ev := e.events.types(); len(ev) != 1 || ev[0] != lifecycle.TypeClosed+":"+id+":"+incident.OutcomeRefused {
		t.Errorf("lifecycle events %v", ev)
	}
}

// TestBootDiagnosticsStored: HarvestDump copies the VM's boot screenshot and serial log, as the
// simulator serves them, to dumps/<incidentId>/bootdiag/ and names that prefix in the artifacts.
// When the blob URL cannot be reached the harvest goes on, nothing is claimed, and the trail says
// why (without the SAS).
func TestBootDiagnosticsStored(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		fail bool
	}{{"copied", false}, {"blob URL unreachable", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			ctx := context.Background()
			vmID := e.fleet.VMID("app-web-01")
			id, d := e.reach(scenario{stage: incident.StageHarvestDump, vm: "app-web-01"})
			screenshot := append([]byte("BM"), []byte("screenshot of "+id)...)
			serial := []byte("*** STOP: 0x0000007E serial log of " + id + "\r\n")
			if err := e.sim.State().SetBootDiagnostics(vmID, screenshot, serial); err != nil {
				t.Fatal(err)
			}
			p := e.newPipeline(nil)
			var hits atomic.Int32
			if tc.fail {
				base := p.HTTP.Transport
				if base == nil {
					base = http.DefaultTransport
				}
				p.HTTP.Transport = roundTripFunc(func(req *http.Request) (*http.Response, error) {
					if strings.Contains(req.URL.Path, "/azsim/bootdiag/") {
						hits.Add(1)
						return nil, errors.New("connection reset by peer")
					}
					return base.RoundTrip(req)
				})
			}
			if err := e.run(p, ctx, d, 1); err != nil {
				t.Fatalf("harvest-dump: %v", err)
			}
			sent := e.bus.sentTo(incident.StageSupportTicket)
			if len(sent) != 1 {
				t.Fatalf("%d support-ticket messages, want the harvest completed", len(sent))
			}
			art := covMessage(t, sent[0].Body).Artifacts
			if art.DumpLocation == "" {
				t.Error("no dump harvested")
			}
			prefix := id + "/bootdiag/"
			files := map[string][]byte{"screenshot.bmp": screenshot, "serial.log": serial}
			var notes []string
			for _, r := range e.records(id) {
				if s, _ := recordDetail(r)["reason"].(string); r.Stage == string(incident.StageHarvestDump) && strings.Contains(s, "boot diagnostics") {
					notes = append(notes, s)
				}
			}
			if !tc.fail {
				if want := e.cfg.DumpsContainer + "/" + prefix; art.BootDiagnostics != want {
					t.Errorf("artifacts.bootDiagnostics %q, want %q", art.BootDiagnostics, want)
				}
				for name, want := range files {
					got, err := e.blobs.Get(ctx, e.cfg.DumpsContainer, prefix+name, 1<<20)
					if err != nil || len(got) == 0 || string(got) != string(want) {
						t.Errorf("%s%s: %q (%v), want %q", prefix, name, got, err, want)
					}
				}
				if len(notes) > 0 {
					t.Errorf("notes on a successful copy: %q", notes)
				}
				return
			}
			if hits.Load() == 0 {
				t.Fatal("the boot diagnostics blob URL was never fetched")
			}
			if art.BootDiagnostics != "" {
				t.Errorf("artifacts.bootDiagnostics %q, though nothing was stored", art.BootDiagnostics)
			}
			for name := range files {
				if ok, _, err := e.blobs.Exists(ctx, e.cfg.DumpsContainer, prefix+name); err != nil || ok {
					t.Errorf("%s%s exists %v (%v)", prefix, name, ok, err)
				}
			}
			if len(notes) != 1 || !strings.Contains(notes[0], "boot diagnostics not stored") || !strings.Contains(notes[0], "connection reset") {
				t.Errorf("trail notes %q, want one saying the copy failed and why", notes)
			}
			for _, n := range notes {
				if strings.Contains(n, "sig=") {
					t.Errorf("the note carries the SAS: %q", n)
				}
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestVMLockReleasedOnClose: the incident holds the VM's lock while it runs and gives it back when
// it closes with a ticket, so a new incident for the VM opens on a free lock (not by taking over a
// stale one, which intake would also do).
func TestVMLockReleasedOnClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	vmID := e.fleet.VMID("app-batch-01")
	id := e.open("app-batch-01", false)
	if h, err := e.locks.HolderVM(ctx, vmID); err != nil || h != id {
		t.Fatalf("VM lock held by %q (%v) while the incident runs, want %s", h, err, id)
	}
	covDrive(t, e)
	if v := e.checkClean(id); v.State != incident.StateClosed || v.Outcome != incident.OutcomeTicketed {
		t.Fatalf("incident ended %s/%s", v.State, v.Outcome)
	}
	if h, err := e.locks.HolderVM(ctx, vmID); err != nil || h != "" {
		t.Fatalf("VM lock held by %q (%v) after the close, want free", h, err)
	}
	vm, err := resourceid.ParseVM(vmID)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.intake.Open(ctx, intake.Request{VM: vm, IncidentID: intake.AlertIncidentID("ev-again", time.Now()),
		Trigger: incident.Trigger{Kind: incident.TriggerAlert, EventID: "ev-again", Annotation: intake.AnnotationCrashed}})
	if err != nil || !res.Opened || res.IncidentID == id {
		t.Fatalf("second incident: %+v %v", res, err)
	}
	if h, err := e.locks.HolderVM(ctx, vmID); err != nil || h != res.IncidentID {
		t.Errorf("VM lock held by %q (%v), want the new incident %s", h, err, res.IncidentID)
	}
	if s := e.state(res.IncidentID); s != incident.StateActive {
		t.Errorf("new incident is %s", s)
	}
}

// TestHarvestAfterReproWait: ReattachReboot schedules HarvestDump the reproduction wait after it
// ran, and a different wait in the config moves it accordingly.
func TestHarvestAfterReproWait(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wait time.Duration // 0: the environment's default
	}{{"default wait", 0}, {"configured wait", 47 * time.Minute}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := envOptions{}
			if tc.wait != 0 {
				o.mutate = func(c *config.Config) { c.ReproWait = tc.wait }
			}
			e := newEnv(t, o)
			want := e.cfg.ReproWait
			if tc.wait != 0 && want != tc.wait || tc.wait == 0 && want != 10*time.Minute {
				t.Fatalf("reproduction wait %v in the config", want)
			}
			id, d := e.reach(scenario{stage: incident.StageReattachReboot, vm: "app-web-01"})
			before := time.Now()
			if err := e.run(e.newPipeline(nil), context.Background(), d, 1); err != nil {
				t.Fatalf("reattach-reboot: %v", err)
			}
			after := time.Now()
			e.awaitStart()
			var at *time.Time
			for _, env := range e.bus.sentTo(incident.StageHarvestDump) {
				if env.MessageID == incident.MessageID(id, incident.StageHarvestDump, 0) {
					at = env.ScheduledEnqueueTime
				}
			}
			if at == nil {
				t.Fatal("no scheduled harvest-dump message")
			}
			const tolerance = time.Second
			if lo, hi := before.Add(want-tolerance), after.Add(want+tolerance); at.Before(lo) || at.After(hi) {
				t.Errorf("harvest scheduled at %s, %v after the stage began; want %v after it ran", at, at.Sub(before), want)
			}
			// The completion record holds the same time, for a redelivery to re-send.
			recorded := false
			for _, r := range e.records(id) {
				if s, _ := recordDetail(r)["scheduledAt"].(string); r.Stage == string(incident.StageReattachReboot) && s != "" {
					got, err := time.Parse(time.RFC3339Nano, s)
					recorded = err == nil && got.Equal(*at)
				}
			}
			if !recorded {
				t.Error("the completion record does not hold the scheduled time")
			}
		})
	}
}

// TestNoDumpNotHealthy: a VM that crashes again after the patch but writes no dump reaches
// HarvestDump's last path: the ticket is opened with what there is, says there is no dump, and no
// dump is recorded.
func TestNoDumpNotHealthy(t *testing.T) {
	t.Parallel()
	fleet := azsim.DefaultFleet()
	found := false
	for i := range fleet.VMs {
		if fleet.VMs[i].Name == "app-web-01" {
			fleet.VMs[i].Behaviour, found = azsim.BehaviourCrashWithoutDump, true
		}
	}
	if !found {
		t.Fatal("no app-web-01 in the fleet")
	}
	e := newEnv(t, envOptions{fleet: fleet})
	ctx := context.Background()
	id := e.open("app-web-01", false)
	stages := covDrive(t, e)
	if want := "snapshot,rescue-attach,offline-patch,reattach-reboot,harvest-dump,support-ticket,harvest-dump"; strings.Join(stages, ",") != want {
		t.Errorf("stages %v, want %s", stages, want)
	}
	v := e.checkClean(id)
	if v.State != incident.StateClosed || v.Outcome != incident.OutcomeTicketed {
		t.Fatalf("incident ended %s/%s, want closed/ticketed", v.State, v.Outcome)
	}
	var noted, unhealthy bool
	for _, r := range e.records(id) {
		if r.Stage != string(incident.StageHarvestDump) {
			continue
		}
		d := recordDetail(r)
		s, _ := d["reason"].(string)
		noted = noted || strings.Contains(s, "no dump was written and the VM did not come back healthy")
		unhealthy = unhealthy || d["healthy"] == false
	}
	if !noted || !unhealthy {
		t.Errorf("trail: no-dump note %v, VM seen unhealthy %v", noted, unhealthy)
	}
	a := v.Artifacts
	if a.DumpLocation != "" || a.DumpSize != 0 || a.DumpSHA256 != "" || a.BugCheck != nil {
		t.Errorf("a dump is recorded: %+v", a)
	}
	if ok, _, err := e.blobs.Exists(ctx, e.cfg.DumpsContainer, id+"/MEMORY.DMP"); err != nil || ok {
		t.Errorf("MEMORY.DMP blob exists %v (%v)", ok, err)
	}
	tickets := e.sim.State().Tickets()
	if len(tickets) != 1 || tickets[0].Name != incident.TicketName(id) {
		t.Fatalf("tickets %+v", tickets)
	}
	tk := tickets[0]
	if !strings.Contains(tk.Title, "no crash dump captured") || !strings.Contains(tk.Description, "No crash dump was written") {
		t.Errorf("ticket does not say there is no dump: %q / %q", tk.Title, tk.Description)
	}
	if strings.Contains(tk.Description, "Crash dump:") {
		t.Errorf("ticket names a dump: %q", tk.Description)
	}
	if a.TicketID == "" {
		t.Error("no ticket id in the artifacts")
	}
}
