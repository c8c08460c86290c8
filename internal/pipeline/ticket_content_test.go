package pipeline_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/bugcheck"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/harvest"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/pipeline"
)

// windowsCatalog returns, from the simulator's support catalog (not from package support), the
// service id of "Virtual Machine running Windows" and the id of its classification named display.
func windowsCatalog(t *testing.T, display string) (serviceID, classificationID string) {
	t.Helper()
	for _, s := range azsim.SupportCatalog {
		if s.DisplayName != azsim.WindowsVMServiceDisplayName {
			continue
		}
		serviceID = "/providers/Microsoft.Support/services/" + s.Name
		for _, c := range s.Classifications {
			if c.DisplayName == display {
				return serviceID, serviceID + "/problemClassifications/" + c.Name
			}
		}
	}
	t.Fatalf("no classification %q of %q in the simulator's catalog", display, azsim.WindowsVMServiceDisplayName)
	return "", ""
}

// driveToClose runs an incident opened for vm through every stage with p, playing the guest's
// start, and fails on any stage error.
func (e *env) driveToClose(p *pipeline.Pipeline, vm string) string {
	e.t.Helper()
	id := e.open(vm, false)
	for i := 0; ; i++ {
		if i > 50 {
			e.t.Fatalf("%s: the incident did not settle", vm)
		}
		d, ok := e.step(p)
		if !ok {
			return id
		}
		if d.err != nil {
			e.t.Fatalf("%s: %s: %v", vm, d.queue, d.err)
		}
		if d.queue == incident.StageReattachReboot {
			e.awaitStart()
		}
	}
}

// ticketNamed returns the simulator's ticket of an incident.
func (e *env) ticketNamed(id string) azsim.Ticket {
	e.t.Helper()
	for _, tk := range e.sim.State().Tickets() {
		if tk.Name == incident.TicketName(id) {
			return tk
		}
	}
	e.t.Fatalf("no ticket %s in the simulator", incident.TicketName(id))
	return azsim.Ticket{}
}

// expectedSteps lists the "Steps done" lines the trail before the SupportTicket stage calls for
// (a write names its resource by name), and how many of them are completed stages.
func expectedSteps(recs []audit.Record) (lines []string, stages int) {
	for _, r := range recs {
		if r.Stage == string(incident.StageSupportTicket) {
			break
		}
		if r.Event != incident.EventSucceeded {
			continue
		}
		d := recordDetail(r)
		at := r.Time.UTC().Format(time.RFC3339)
		if c, _ := d["completed"].(bool); c {
			lines = append(lines, fmt.Sprintf("- %s %s completed", at, r.Stage))
			stages++
		} else if op, _ := d["operation"].(string); op != "" {
			rid, _ := d["resourceId"].(string)
			ms, _ := d["durationMs"].(float64)
			lines = append(lines, fmt.Sprintf("- %s %s %s (%d ms)", at, op, rid[strings.LastIndex(rid, "/")+1:], int64(ms)))
		}
	}
	return lines, stages
}

// TestTicketContent drives incidents to SupportTicket and checks every part of the ticket the
// simulator received: service, classification (looked up once, or the configured override),
// severity and contact from the config, the title's VM and stop code, the description's incident,
// times, steps and dump (location, size and SHA-256 as the manifest records them), and the VM as
// the ticket's resource.
func TestTicketContent(t *testing.T) {
	t.Parallel()
	winService, lookedUp := windowsCatalog(t, "Cannot start or stop my VM / Blue screen or stop error at boot")
	_, override := windowsCatalog(t, "Cannot start or stop my VM / My VM is not booting")
	cases := []struct {
		name     string
		vm       string
		code     uint32 // the fleet's stop code, expected in the title; 0: no dump
		support  config.Support
		override string // config's classification; "" looks it up
		second   string // a second incident through the same pipeline: the lookup is cached
	}{
		{name: "dump at first look, classification looked up once", vm: "app-batch-01", code: 0x3B, second: "app-web-01",
			support: config.Support{Enabled: true, Severity: "minimal", FirstName: "Ada", LastName: "Lovelace",
				Email: "ada@example.org", Country: "gbr", Language: "en-gb", TimeZone: "GMT Standard Time"}},
		{name: "dump after reboot, classification overridden", vm: "app-sql-01", code: 0xD1, override: override,
			support: config.Support{Enabled: true, Severity: "critical", FirstName: "Grace", LastName: "Hopper",
				Email: "grace@example.net", Country: "usa", Language: "en-us", TimeZone: "Pacific Standard Time"}},
		{name: "no dump", vm: "app-nodump-01",
			support: config.Support{Enabled: true, Severity: "highestcriticalimpact", FirstName: "Linus", LastName: "T",
				Email: "linus@example.com", Country: "fin", Language: "fi-fi", TimeZone: "FLE Standard Time"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fleet := azsim.DefaultFleet()
			nodump := fleet.VMs[0]
			nodump.Name, nodump.Tags, nodump.Behaviour = "app-nodump-01", nil, azsim.BehaviourCrashWithoutDump
			fleet.VMs = append(fleet.VMs, nodump)
			e := newEnv(t, envOptions{fleet: fleet, mutate: func(c *config.Config) {
				c.Support = tc.support
				c.Support.Classification = tc.override
			}})
			p := e.pipeline()
			id := e.driveToClose(p, tc.vm)
			if tc.second != "" {
				e.driveToClose(p, tc.second)
				if n := len(e.sim.State().Tickets()); n != 2 {
					t.Fatalf("%d tickets for two incidents", n)
				}
			}
			services, classes := e.sim.CallCount("Services.NewListPager"), e.sim.CallCount("ProblemClassifications.NewListPager")
			recs := e.records(id)
			v := e.checkClean(id)
			if v.State != incident.StateClosed || v.Outcome != incident.OutcomeTicketed {
				t.Fatalf("incident ended %s/%s", v.State, v.Outcome)
			}
			tk := e.ticketNamed(id)
			cfg := e.cfg.Support

			// Service, classification and its lookup.
			if !strings.EqualFold(tk.ServiceID, winService) {
				t.Errorf("service %s, want %q (%s)", tk.ServiceID, azsim.WindowsVMServiceDisplayName, winService)
			}
			wantClass, wantReads := lookedUp, 1
			if tc.override != "" {
				wantClass, wantReads = tc.override, 0
			}
			if !strings.EqualFold(tk.ProblemClassificationID, wantClass) {
				t.Errorf("classification %s, want %s", tk.ProblemClassificationID, wantClass)
			}
			if services != wantReads || classes != wantReads {
				t.Errorf("catalog read %d services and %d classification lists, want %d each", services, classes, wantReads)
			}

			// Severity and contact from the config.
			if tk.Severity != cfg.Severity {
				t.Errorf("severity %q, want %q from the config", tk.Severity, cfg.Severity)
			}
			c := tk.Contact
			for field, got := range map[string][2]string{
				"first name": {val(c.FirstName), cfg.FirstName}, "last name": {val(c.LastName), cfg.LastName},
				"email": {val(c.PrimaryEmailAddress), cfg.Email}, "country": {val(c.Country), cfg.Country},
				"language": {val(c.PreferredSupportLanguage), cfg.Language}, "time zone": {val(c.PreferredTimeZone), cfg.TimeZone},
			} {
				if got[0] != got[1] {
					t.Errorf("contact %s %q, want %q from the config", field, got[0], got[1])
				}
			}
			if m := val(c.PreferredContactMethod); m != armsupport.PreferredContactMethodEmail {
				t.Errorf("contact method %q", m)
			}

			// The VM is the ticket's resource; the problem started when the incident opened.
			if !strings.EqualFold(tk.ResourceID, e.fleet.VMID(tc.vm)) {
				t.Errorf("technical details resource %q, want %s", tk.ResourceID, e.fleet.VMID(tc.vm))
			}
			if !tk.ProblemStartTime.Equal(recs[0].Time) {
				t.Errorf("problem start %s, want the incident's opening %s", tk.ProblemStartTime, recs[0].Time)
			}

			// Title.
			if !strings.Contains(tk.Title, tc.vm) {
				t.Errorf("title %q lacks the VM name", tk.Title)
			}
			if tc.code != 0 {
				if want := bugcheck.Short(tc.code) + " " + bugcheck.Name(tc.code); bugcheck.Name(tc.code) == "" || !strings.Contains(tk.Title, want) {
					t.Errorf("title %q lacks the stop code %q", tk.Title, want)
				}
			} else if strings.Contains(tk.Title, "0x") || !strings.Contains(tk.Title, "no crash dump") {
				t.Errorf("title %q of an incident without a dump", tk.Title)
			}

			// Description: incident, VM, times, steps.
			desc := tk.Description
			if len(desc) > 5000 || strings.HasSuffix(desc, "…") || !utf8.ValidString(desc) {
				t.Errorf("description of %d bytes was cut or is over the limit:\n%s", len(desc), desc)
			}
			if !strings.Contains(desc, "incident "+id+" ") {
				t.Errorf("description lacks the incident id %s:\n%s", id, desc)
			}
			if !strings.Contains(strings.ToLower(desc), strings.ToLower(e.fleet.VMID(tc.vm))) {
				t.Errorf("description lacks the VM id:\n%s", desc)
			}
			if want := "Opened: " + recs[0].Time.UTC().Format(time.RFC3339) + "\n"; !strings.Contains(desc, want) {
				t.Errorf("description lacks %q:\n%s", want, desc)
			}
			_, rest, ok := strings.Cut(desc, "Ticket opened: ")
			at, err := time.Parse(time.RFC3339, strings.SplitN(rest, "\n", 2)[0])
			if !ok || err != nil || at.Before(recs[0].Time.Truncate(time.Second)) || at.After(time.Now()) {
				t.Errorf("ticket opening time %v (%v) is not between the incident's opening and now:\n%s", at, err, desc)
			}
			steps, stages := expectedSteps(recs)
			if stages < 3 {
				t.Fatalf("the trail shows %d completed stages before the ticket", stages)
			}
			for _, line := range steps {
				if !strings.Contains(desc, "\n"+line+"\n") {
					t.Errorf("description lacks the step %q:\n%s", line, desc)
				}
			}

			// Description: the dump as the manifest records it, or its absence.
			if tc.code == 0 {
				if !strings.Contains(desc, "No crash dump was written") {
					t.Errorf("description of an incident without a dump does not say so:\n%s", desc)
				}
				for _, s := range []string{"Crash dump:", "SHA-256", "Stop code"} {
					if strings.Contains(desc, s) {
						t.Errorf("description of an incident without a dump has %q:\n%s", s, desc)
					}
				}
				if v.Artifacts.DumpLocation != "" {
					t.Errorf("an incident without a dump recorded %s", v.Artifacts.DumpLocation)
				}
				return
			}
			ctx := context.Background()
			raw, err := e.blobs.Get(ctx, e.cfg.DumpsContainer, id+"/"+harvest.ManifestName, 1<<20)
			if err != nil {
				t.Fatalf("dump manifest: %v", err)
			}
			var m harvest.Manifest
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			var dump *harvest.ManifestFile
			for i := range m.Files {
				if m.Files[i].Name == "MEMORY.DMP" {
					dump = &m.Files[i]
				}
			}
			if dump == nil {
				t.Fatalf("no MEMORY.DMP in the manifest %+v", m)
			}
			data, err := e.blobs.Get(ctx, e.cfg.DumpsContainer, dump.Blob, 1<<24)
			sum := sha256.Sum256(data)
			if err != nil || int64(len(data)) != dump.Size || hex.EncodeToString(sum[:]) != dump.SHA256 {
				t.Fatalf("dump blob %s: %d bytes, %v; the manifest says %d bytes, %s", dump.Blob, len(data), err, dump.Size, dump.SHA256)
			}
			if a := v.Artifacts; a.DumpLocation != e.cfg.DumpsContainer+"/"+dump.Blob || a.DumpSize != dump.Size || a.DumpSHA256 != dump.SHA256 {
				t.Errorf("artifacts %s %d %s, the manifest %s %d %s", a.DumpLocation, a.DumpSize, a.DumpSHA256, dump.Blob, dump.Size, dump.SHA256)
			}
			for _, want := range []string{
				"Crash dump: " + e.blobs.URL(e.cfg.DumpsContainer, dump.Blob) + "\n",
				fmt.Sprintf("Size: %d bytes\n", dump.Size),
				"SHA-256: " + dump.SHA256 + "\n",
				"Manifest: " + e.blobs.URL(e.cfg.DumpsContainer, id+"/"+harvest.ManifestName) + "\n",
				"Stop code: " + bugcheck.Hex(tc.code) + " " + bugcheck.Name(tc.code) + "\n",
			} {
				if !strings.Contains(desc, want) {
					t.Errorf("description lacks %q:\n%s", want, desc)
				}
			}
			if strings.Contains(desc, "No crash dump") {
				t.Errorf("description of an incident with a dump says there is none:\n%s", desc)
			}
		})
	}
}

func val[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// TestTicketTitle: the title names the VM and the stop code, and a title beyond the support API's
// 200 characters is cut at a character boundary, as late as it can be.
func TestTicketTitle(t *testing.T) {
	t.Parallel()
	bc := &incident.BugCheck{Code: 0x7E}
	cases := []struct {
		name  string
		vm    string
		bc    *incident.BugCheck
		exact string // "" when cut
	}{
		{name: "stop code", vm: "app-web-01", bc: bc, exact: "app-web-01: Windows stop error 0x7E SYSTEM_THREAD_EXCEPTION_NOT_HANDLED at boot"},
		{name: "no dump", vm: "app-web-01", exact: "app-web-01: Windows stops at boot (no crash dump captured)"},
		{name: "unknown stop code", vm: "vm1", bc: &incident.BugCheck{Code: 0x1234}, exact: "vm1: Windows stop error 0x1234 at boot"},
		{name: "two-byte characters cut at an odd offset", vm: "x" + strings.Repeat("é", 150), bc: bc},
		{name: "three-byte characters", vm: strings.Repeat("日本", 60), bc: bc},
		{name: "four-byte characters after one byte", vm: "v" + strings.Repeat("🖥", 60)},
		{name: "three-byte characters, no dump", vm: "vm-" + strings.Repeat("€", 70)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := pipeline.TicketTitle(tc.vm, tc.bc)
			if tc.exact != "" {
				if got != tc.exact {
					t.Errorf("title %q, want %q", got, tc.exact)
				}
				return
			}
			if !utf8.ValidString(got) {
				t.Errorf("title %q is not valid UTF-8", got)
			}
			if len(got) > 200 || len(got) <= 200-utf8.UTFMax {
				t.Errorf("title of %d bytes, want the longest cut within 200", len(got))
			}
			if !strings.HasPrefix(tc.vm, got) { // every cut case has a VM name beyond 200 bytes
				t.Errorf("title %q is not a prefix of the VM name %q", got, tc.vm)
			}
		})
	}
}

// TestTicketDescriptionLimit: a description beyond 5000 bytes is cut at a character boundary, its
// "…" included within the limit.
func TestTicketDescriptionLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, reason string
		cut          bool
	}{
		{name: "short", reason: "crashed", cut: false},
		{name: "two-byte characters", reason: "x" + strings.Repeat("é", 3000), cut: true},
		{name: "three-byte characters", reason: strings.Repeat("€", 2000), cut: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := incident.Message{IncidentID: "inc-1", VMResourceID: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
				Trigger: incident.Trigger{Kind: incident.TriggerAlert, Reason: tc.reason}}
			d := pipeline.TicketDescription(msg, incident.Artifacts{}, nil, "dumps", nil, time.Now())
			if !utf8.ValidString(d) || len(d) > 5000 {
				t.Errorf("description of %d bytes, valid UTF-8 %v", len(d), utf8.ValidString(d))
			}
			if cut := strings.HasSuffix(d, "…"); cut != tc.cut {
				t.Errorf("cut %v, want %v", cut, tc.cut)
			}
			if tc.cut && len(d) <= 5000-utf8.UTFMax-len("…") {
				t.Errorf("description cut to %d bytes, more than it needs", len(d))
			}
		})
	}
}
