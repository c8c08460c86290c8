package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/pipeline"
)

// TestPlanCommand runs `handler plan` against the simulator over loopback HTTP, as it runs against
// Azure: the real command, real SDK clients, real HTTP. It must only read.
func TestPlanCommand(t *testing.T) {
	t.Parallel()
	fleet := azsim.DefaultFleet()
	sim, err := azsim.New(fleet, azsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	env := map[string]string{
		config.ARMEndpoint:          srv.URL,
		config.AllowedSubscriptions: fleet.SubscriptionID,
		config.RescueVMs:            fleet.VMID("vmrescue-rescue-1") + "," + fleet.VMID("vmrescue-rescue-2"),
		config.ContactFirstName:     "Ops", config.ContactLastName: "Team", config.ContactEmail: "ops@example.com",
	}
	getenv := func(k string) string { return env[k] }
	cases := []struct {
		vm       string
		code     int
		want     []string
		notWant  []string
		wantJSON bool
	}{
		{vm: "app-web-01", code: 0, want: []string{"ok    read virtual machines", "ok    read managed disks", "ok    read snapshots",
			"ok    read resource SKUs", "ok    rescue VM vmrescue-rescue-1", "Snapshots.BeginCreateOrUpdate", "VirtualMachines.BeginUpdate",
			"Tickets.BeginCreate", "LUN 0"}, notWant: []string{"FAIL", "refuse"}},
		{vm: "app-linux-01", code: 1, want: []string{"would refuse", "runs Linux, not Windows"}, notWant: []string{"BeginCreateOrUpdate"}},
		{vm: "app-sql-01", code: 0, want: []string{"zone 2", "rescue VM vmrescue-rescue-2"}, wantJSON: true},
	}
	for _, tc := range cases {
		t.Run(tc.vm, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := []string{"--vm", fleet.VMID(tc.vm)}
			if tc.wantJSON {
				args = append(args, "--json")
			}
			code := planMain(context.Background(), args, getenv, &out, &errb)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s\n%s", code, tc.code, out.String(), errb.String())
			}
			text := out.String()
			if tc.wantJSON {
				var pl pipeline.Plan
				if err := json.Unmarshal(out.Bytes(), &pl); err != nil || !pl.Ready() || len(pl.Operations) == 0 {
					t.Fatalf("JSON plan %v: %s", err, text)
				}
				b, _ := json.Marshal(pl)
				text = string(b)
			}
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("output lacks %q:\n%s", w, text)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(text, w) {
					t.Errorf("output has %q:\n%s", w, text)
				}
			}
		})
	}
	for _, c := range sim.CallLog() {
		if c.Method != http.MethodGet {
			t.Errorf("plan wrote: %s %s", c.Method, c.Path)
		}
	}
	var errb bytes.Buffer
	if code := run(context.Background(), []string{"plan"}, &bytes.Buffer{}, &errb); code != 2 || !strings.Contains(errb.String(), "usage: handler plan") {
		t.Errorf("plan without --vm: exit %d, %s", code, errb.String())
	}
}
