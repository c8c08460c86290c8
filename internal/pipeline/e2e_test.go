package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/api"
	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// checkClean runs the Janitor once the incident is over and asserts what every finished incident
// leaves: a verified audit chain, no change to
// any original OS disk, no safety violation, no temporary resource of the incident left (the
// backup snapshot stays for its retention; the patched disk stays when it is the VM's OS disk),
// no LUN reserved and no agent run left on a rescue VM.
func (e *env) checkClean(id string) api.View {
	e.t.Helper()
	ctx := context.Background()
	if e.state(id) != incident.StateActive {
		// What a rollback leaves (the incident's disks, detached) is the Janitor's to remove.
		rep, err := e.newPipeline(nil).Clean(ctx)
		if err != nil {
			e.t.Errorf("janitor: %v (%+v)", err, rep)
		}
	}
	if _, err := audit.VerifyIncident(ctx, e.trail, id); err != nil {
		e.t.Errorf("audit chain of %s: %v", id, err)
	}
	st := e.sim.State()
	if ch := st.ChangedOriginalDisks(); len(ch) > 0 {
		e.t.Errorf("original OS disks changed: %v", ch)
	}
	if v := st.Violations(); len(v) > 0 {
		e.t.Errorf("safety violations: %+v", v)
	}
	osDisks := map[string]bool{}
	for _, vm := range st.VMs() {
		osDisks[strings.ToLower(vm.OSDiskID)] = true
	}
	for _, rid := range st.Tagged(incident.TagIncident) {
		if strings.Contains(rid, incident.BackupSnapshotName(id)) || osDisks[strings.ToLower(rid)] {
			continue
		}
		if strings.Contains(rid, id) {
			e.t.Errorf("temporary resource left: %s", rid)
		}
	}
	for _, r := range e.cfg.RescueVMs {
		holders, err := e.locks.LUNHolders(ctx, r)
		if err != nil {
			e.t.Fatal(err)
		}
		for lun, h := range holders {
			if h == id {
				e.t.Errorf("LUN %d of %s still reserved by %s", lun, r, id)
			}
		}
		for _, rc := range st.RunCommands(r) {
			if strings.Contains(rc.Name, id) {
				e.t.Errorf("agent run %s left on %s", rc.Name, r)
			}
		}
	}
	state := e.state(id)
	return api.Summarize(id, state, e.records(id))
}

func TestEndToEnd(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		vm      string
		fleet   func(*azsim.Fleet)
		state   string
		outcome string
		stages  []incident.Stage
		ticket  bool
		dump    bool
		swapped bool
		forward bool // a crash alert brought the harvest forward; the scheduled one was absorbed
	}{
		{name: "dump found at first look", vm: "app-batch-01", state: incident.StateClosed, outcome: incident.OutcomeTicketed,
			stages: []incident.Stage{"snapshot", "rescue-attach", "offline-patch", "support-ticket"}, ticket: true, dump: true},
		{name: "patch, reboot, harvest, ticket", vm: "app-web-01", state: incident.StateClosed, outcome: incident.OutcomeTicketed,
			stages: []incident.Stage{"snapshot", "rescue-attach", "offline-patch", "reattach-reboot", "harvest-dump", "support-ticket", "harvest-dump"},
			ticket: true, dump: true, swapped: true, forward: true},
		{name: "recovered after the patch", vm: "app-api-01", state: incident.StateClosed, outcome: incident.OutcomeRecovered,
			stages: []incident.Stage{"snapshot", "rescue-attach", "offline-patch", "reattach-reboot", "harvest-dump"}, swapped: true},
		{name: "Linux VM refused", vm: "app-linux-01", state: incident.StateClosed, outcome: incident.OutcomeRefused,
			stages: []incident.Stage{"snapshot"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envOptions{})
			p := e.pipeline()
			id := e.open(tc.vm, false)
			var got []incident.Stage
			for {
				d, ok := e.step(p)
				if !ok {
					break
				}
				if d.err != nil {
					t.Fatalf("%s: %v", d.queue, d.err)
				}
				got = append(got, d.queue)
				if d.queue == incident.StageReattachReboot {
					select {
					case <-e.started:
					case <-time.After(10 * time.Second):
						t.Fatal("the VM's start was not seen")
					}
				}
			}
			if strings.Join(stageStrings(got), ",") != strings.Join(stageStrings(tc.stages), ",") {
				t.Errorf("stages run: %v, want %v", got, tc.stages)
			}
			for _, c := range e.sim.CallLog() {
				if c.CorrelationID != armclient.CorrelationID(id) {
					t.Errorf("%s carried correlation id %q", c.Op, c.CorrelationID)
					break
				}
			}
			v := e.checkClean(id)
			if v.State != tc.state || v.Outcome != tc.outcome {
				t.Errorf("state %s outcome %s, want %s %s", v.State, v.Outcome, tc.state, tc.outcome)
			}
			tickets := e.sim.State().Tickets()
			if tc.ticket != (len(tickets) == 1) {
				t.Fatalf("tickets: %+v", tickets)
			}
			if tc.ticket {
				tk := tickets[0]
				if !strings.EqualFold(tk.ResourceID, e.fleet.VMID(tc.vm)) || tk.Name != incident.TicketName(id) {
					t.Errorf("ticket %+v", tk)
				}
				if !strings.Contains(tk.Title, tc.vm) || !strings.Contains(tk.Description, id) {
					t.Errorf("ticket title %q / description lacks the incident", tk.Title)
				}
				if v.Artifacts.TicketID == "" {
					t.Error("no ticket id in the artifacts")
				}
			}
			if tc.dump {
				if v.Artifacts.DumpLocation != e.cfg.DumpsContainer+"/"+id+"/MEMORY.DMP" || v.Artifacts.DumpSize == 0 || len(v.Artifacts.DumpSHA256) != 64 {
					t.Errorf("dump artifacts %+v", v.Artifacts)
				}
				if v.Artifacts.BugCheck == nil || v.Artifacts.BugCheck.Name == "" {
					t.Errorf("bug check %+v", v.Artifacts.BugCheck)
				}
				data, err := e.blobs.Get(context.Background(), e.cfg.DumpsContainer, id+"/MEMORY.DMP", 1<<20)
				if err != nil || int64(len(data)) != v.Artifacts.DumpSize {
					t.Errorf("dump blob: %d bytes, %v", len(data), err)
				}
			}
			vm, _ := e.sim.State().VM(e.fleet.VMID(tc.vm))
			patched := strings.Contains(vm.OSDiskID, incident.RescueDiskName(id))
			if patched != tc.swapped {
				t.Errorf("VM OS disk %s, swapped want %v", vm.OSDiskID, tc.swapped)
			}
			if tc.swapped && vm.Tags[incident.TagOriginalOSDisk] != v.Artifacts.OriginalOSDiskID {
				t.Errorf("original OS disk tag %q, want %q", vm.Tags[incident.TagOriginalOSDisk], v.Artifacts.OriginalOSDiskID)
			}
			if tc.forward {
				var forward, absorbed bool
				for _, r := range e.records(id) {
					reason, _ := recordDetail(r)["reason"].(string)
					forward = forward || (r.Stage == string(incident.StageReattachReboot) && strings.Contains(reason, "brought forward"))
					absorbed = absorbed || (r.Stage == string(incident.StageHarvestDump) && strings.Contains(reason, "absorbed"))
				}
				if !forward || !absorbed {
					t.Errorf("harvest brought forward %v, late message absorbed %v", forward, absorbed)
				}
			}

			if n := len(e.events.types()); n != 1 {
				t.Errorf("%d lifecycle events, want 1", n)
			}
		})
	}
}

func stageStrings(s []incident.Stage) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = string(x)
	}
	return out
}

// TestRefusals: every VM vmrescue cannot repair is refused at Snapshot, terminally and with its
// reason, before any write.
func TestRefusals(t *testing.T) {
	t.Parallel()
	fleet := azsim.DefaultFleet()
	base := fleet.VMs[0]
	add := func(name string, mutate func(*azsim.VMSpec)) {
		v := base
		v.Name, v.Tags = name, nil
		mutate(&v)
		fleet.VMs = append(fleet.VMs, v)
	}
	add("vm-ade", func(v *azsim.VMSpec) { v.DiskEncryption = true })
	add("vm-vhd", func(v *azsim.VMSpec) { v.UnmanagedOSDisk = true })
	add("vm-optout", func(v *azsim.VMSpec) { v.Tags = map[string]string{incident.TagOptOut: "yes"} })
	e := newEnv(t, envOptions{fleet: fleet})
	cases := map[string]string{
		"app-linux-01": "runs Linux, not Windows",
		"vm-ade":       "Azure Disk Encryption",
		"vm-vhd":       "unmanaged",
		"vm-optout":    "opt-out tag",
	}
	for vm, reason := range cases {
		id := e.open(vm, false)
		e.drain(e.pipeline())
		v := e.checkClean(id)
		if v.State != incident.StateClosed || v.Outcome != incident.OutcomeRefused {
			t.Errorf("%s: %s/%s", vm, v.State, v.Outcome)
		}
		found := false
		for _, r := range e.records(id) {
			if s, _ := recordDetail(r)["reason"].(string); r.Event == incident.EventClosed && strings.Contains(s, reason) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no closing record with reason %q", vm, reason)
		}
	}
	for _, c := range e.sim.CallLog() {
		if c.Write {
			t.Errorf("a refused VM saw a write: %s %s", c.Method, c.Path)
		}
	}
}
