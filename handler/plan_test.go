package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/pipeline"
)

// planFleet is the default fleet and VMs that each make the preflight refuse or fail a check.
func planFleet(t *testing.T) *azsim.Fleet {
	t.Helper()
	f := azsim.DefaultFleet()
	win := func(name, zone string) azsim.VMSpec {
		return azsim.VMSpec{Name: name, ResourceGroup: "rg-app", Size: "Standard_D2s_v5", OSType: "Windows",
			HyperVGeneration: "V2", Zone: zone, OSDiskSizeGB: 127, OSDiskFreeGB: 40, Behaviour: azsim.BehaviourCrashOnBoot}
	}
	ade := win("app-ade-01", "1")
	ade.DiskEncryption = true
	vhd := win("app-vhd-01", "1")
	vhd.UnmanagedOSDisk = true
	optOut := win("app-optout-01", "1")
	optOut.Tags = map[string]string{"VMRescue-OptOut": ""} // tag names are case-insensitive; any value
	// A pool VM with every data disk slot taken: Standard_A1_v2 takes two.
	full := azsim.VMSpec{Name: "pool-full-01", ResourceGroup: "rg-vmrescue", Size: "Standard_A1_v2", OSType: "Windows",
		HyperVGeneration: "V1", Zone: "3", OSDiskSizeGB: 127, OSDiskFreeGB: 40,
		DataDisks: []azsim.DataDiskSpec{{LUN: 0, SizeGB: 32, FreeGB: 30}, {LUN: 1, SizeGB: 32, FreeGB: 30}}}
	f.VMs = append(f.VMs, ade, vhd, optOut, win("app-zone3-01", "3"), win("app-regional-01", ""), full)
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	return f
}

// planRecorder stands between the SDK clients and the simulator, on the loopback HTTP server: it
// records every request, and answers the GETs whose path contains deny with ARM's 403
// AuthorizationFailed, as ARM answers an identity without the read permission.
type planRecorder struct {
	next   http.Handler
	deny   string
	mu     sync.Mutex
	calls  []string
	denied int
}

func (p *planRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.calls = append(p.calls, r.Method+" "+r.URL.Path)
	deny := p.deny != "" && r.Method == http.MethodGet && strings.Contains(strings.ToLower(r.URL.Path), strings.ToLower(p.deny))
	if deny {
		p.denied++
	}
	p.mu.Unlock()
	if !deny {
		p.next.ServeHTTP(w, r)
		return
	}
	body, _ := json.Marshal(map[string]any{"error": map[string]string{
		"code": "AuthorizationFailed",
		"message": fmt.Sprintf("The client '11111111-2222-3333-4444-555555555555' with object id '11111111-2222-3333-4444-555555555555' "+
			"does not have authorization to perform action 'read' over scope '%s' or the scope is invalid. "+
			"If access was recently granted, please refresh your credentials.", r.URL.Path),
	}})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("x-ms-error-code", "AuthorizationFailed")
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write(body)
}

// TestPlanCommand runs `handler plan` against the simulator over loopback HTTP, as it runs against
// Azure: the real command, real SDK clients, real HTTP. It must only read, whatever it finds.
func TestPlanCommand(t *testing.T) {
	t.Parallel()
	fleet := planFleet(t)
	sub := fleet.SubscriptionID
	rawID := func(rg, name string) string {
		return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s", sub, rg, name)
	}
	const denied = "the identity may not read it (AuthorizationFailed): grant the vmrescue role"
	cases := []struct {
		name     string
		vm       string            // a fleet VM; or
		id       string            // a resource id
		env      map[string]string // settings over the defaults
		deny     string            // GETs whose path contains it answer 403 AuthorizationFailed
		setup    func(*testing.T, *azsim.Sim)
		code     int
		want     []string
		notWant  []string
		wantErr  string // on stderr
		wantJSON bool
	}{
		{name: "ready", vm: "app-web-01", code: 0, want: []string{"ok    read virtual machines", "ok    read managed disks", "ok    read snapshots",
			"ok    read resource SKUs", "ok    rescue VM vmrescue-rescue-1", "ok    read run commands on vmrescue-rescue-1",
			"ok    read support services and problem classifications", "Snapshots.BeginCreateOrUpdate", "VirtualMachines.BeginUpdate",
			"Tickets.BeginCreate", "LUN 0"}, notWant: []string{"FAIL", "refuse"}},
		{name: "linux", vm: "app-linux-01", code: 1, want: []string{"would refuse", "runs Linux, not Windows"}, notWant: []string{"BeginCreateOrUpdate"}},
		{name: "zonal", vm: "app-sql-01", code: 0, want: []string{"zone 2", "rescue VM vmrescue-rescue-2"}, wantJSON: true},

		// Refusals of Snapshot.
		{name: "disk-encryption", vm: "app-ade-01", code: 1,
			want:    []string{"would refuse", "Azure Disk Encryption is enabled: the OS disk cannot be read on a rescue VM or swapped"},
			notWant: []string{"BeginCreateOrUpdate", "ARM writes"}},
		{name: "unmanaged-os-disk", vm: "app-vhd-01", code: 1,
			want:    []string{"would refuse", "the OS disk is unmanaged (a VHD in a storage account): it cannot be snapshotted and swapped"},
			notWant: []string{"BeginCreateOrUpdate", "ARM writes"}},
		{name: "opt-out-tag", vm: "app-optout-01", code: 1,
			want:    []string{"would refuse", `the VM carries the opt-out tag "vmrescue-optout"`},
			notWant: []string{"BeginCreateOrUpdate", "ARM writes"}},
		{name: "opt-out-tag-configured", vm: "app-web-01", env: map[string]string{config.OptOutTag: "owner"}, code: 1,
			want: []string{"would refuse", `the VM carries the opt-out tag "owner"`}, notWant: []string{"BeginCreateOrUpdate"}},
		{name: "json-refusal", vm: "app-ade-01", code: 1, want: []string{"Azure Disk Encryption is enabled"}, notWant: []string{"BeginCreateOrUpdate"}, wantJSON: true},
		{name: "out-of-scope", vm: "app-web-01", env: map[string]string{config.AllowedResourceGroups: "rg-other"}, code: 1,
			want: []string{"would refuse", "outside VMRESCUE_ALLOWED_SUBSCRIPTIONS"}, notWant: []string{"BeginCreateOrUpdate"}},

		// A VM that is not there.
		{name: "vm-not-found", id: rawID("rg-app", "app-ghost-01"), code: 1,
			want: []string{"would refuse", "the VM does not exist"}, notWant: []string{"ok    read", "BeginCreateOrUpdate"}},
		{name: "resource-group-not-found", id: rawID("rg-gone", "app-web-01"), code: 1,
			want: []string{"would refuse", "the VM does not exist"}, notWant: []string{"ok    read", "BeginCreateOrUpdate"}},
		{name: "not-a-vm-id", id: "/subscriptions/" + sub + "/resourceGroups/rg-app/providers/Microsoft.Compute/disks/app-web-01-os",
			code: 2, wantErr: "handler plan:"},

		// Rescue capacity in the VM's region and zone.
		{name: "no-rescue-vm-in-zone", vm: "app-zone3-01", code: 1,
			want: []string{"would refuse", "no rescue VM of the pool is in westeurope zone 3"}, notWant: []string{"BeginCreateOrUpdate"}},
		{name: "no-rescue-vm-regional", vm: "app-regional-01", code: 1,
			want: []string{"would refuse", "no rescue VM of the pool is in westeurope\n"}, notWant: []string{"BeginCreateOrUpdate"}},
		{name: "pool-luns-all-used", vm: "app-zone3-01",
			env: map[string]string{config.RescueVMs: fleet.VMID("pool-full-01") + "," + fleet.VMID("vmrescue-rescue-1")}, code: 1,
			want:    []string{"FAIL  rescue VM pool-full-01: 0 of 2 data disk slots free (2 attached", "FAIL  rescue capacity: no free LUN now", "(attach at the first LUN freed)"},
			notWant: []string{"LUN -1", "no rescue VM of the pool"}},
		{name: "rescue-vm-stopped", vm: "app-web-01", code: 1,
			setup: func(t *testing.T, sim *azsim.Sim) {
				if err := sim.State().SetPowerState(fleet.VMID("vmrescue-rescue-1"), azsim.PowerStopped); err != nil {
					t.Fatal(err)
				}
			},
			want:    []string{"FAIL  rescue VM vmrescue-rescue-1: is stopped: Run Command needs it running", "FAIL  rescue capacity", "(attach at the first LUN freed)"},
			notWant: []string{"LUN -1"}},

		// An identity that may not read one kind of resource.
		{name: "forbidden-vm", vm: "app-web-01", deny: "/virtualMachines/app-web-01", code: 1,
			want: []string{"FAIL  read virtual machines: " + denied}, notWant: []string{"BeginCreateOrUpdate", "the VM does not exist"}},
		{name: "forbidden-disks", vm: "app-web-01", deny: "/providers/Microsoft.Compute/disks/", code: 1,
			want: []string{"FAIL  read managed disks: " + denied, "ok    read snapshots"}},
		{name: "forbidden-snapshots", vm: "app-web-01", deny: "/providers/Microsoft.Compute/snapshots/", code: 1,
			want: []string{"FAIL  read snapshots: " + denied, "ok    read managed disks"}},
		{name: "forbidden-skus", vm: "app-web-01", deny: "/providers/Microsoft.Compute/skus", code: 1,
			want: []string{"FAIL  read resource SKUs: " + denied}},
		{name: "forbidden-run-commands", vm: "app-web-01", deny: "/runCommands/", code: 1,
			want: []string{"FAIL  read run commands on vmrescue-rescue-1: " + denied, "ok    rescue VM vmrescue-rescue-1"}},
		{name: "forbidden-rescue-vm", vm: "app-web-01", deny: "/virtualMachines/vmrescue-rescue-1", code: 1,
			want: []string{"FAIL  read rescue VM vmrescue-rescue-1: " + denied, "FAIL  rescue capacity: no readable rescue VM is in westeurope zone 1, and 1 of the pool could not be read"}},
		{name: "storage-readable", vm: "app-web-01", code: 0, env: map[string]string{config.StorageConnection: "azurite"},
			want: []string{"ok    read storage containers", "LUNs reserved"}},
		{name: "storage-wrong-key", vm: "app-web-01", code: 1, env: map[string]string{config.StorageConnection: "azurite-wrong-key"},
			want: []string{"FAIL  read storage containers", "FAIL  read LUN reservations"}},
		{name: "forbidden-support-services", vm: "app-web-01", deny: "/providers/Microsoft.Support/services", code: 1,
			want: []string{"FAIL  read support services and problem classifications: " + denied}},
		{name: "forbidden-problem-classifications", vm: "app-web-01", deny: "/problemClassifications", code: 1,
			want: []string{"FAIL  read support services and problem classifications: " + denied}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, err := azsim.New(fleet, azsim.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.setup != nil {
				tc.setup(t, sim)
			}
			rec := &planRecorder{next: sim.Handler(), deny: tc.deny}
			srv := httptest.NewServer(rec)
			defer srv.Close()
			env := map[string]string{
				config.ARMEndpoint:          srv.URL,
				config.AllowedSubscriptions: sub,
				config.RescueVMs:            fleet.VMID("vmrescue-rescue-1") + "," + fleet.VMID("vmrescue-rescue-2"),
				config.ContactFirstName:     "Ops", config.ContactLastName: "Team", config.ContactEmail: "ops@example.com",
			}
			for k, v := range tc.env {
				env[k] = v
			}
			switch env[config.StorageConnection] {
			case "azurite":
				env[config.StorageConnection] = azuritetest.ConnectionString(t)
			case "azurite-wrong-key": // the account's name with another key: every request is refused
				cs := azuritetest.ConnectionString(t)
				i := strings.Index(cs, "AccountKey=")
				j := i + len("AccountKey=") + strings.IndexByte(cs[i+len("AccountKey="):], ';')
				env[config.StorageConnection] = cs[:i] + "AccountKey=" + base64.StdEncoding.EncodeToString([]byte("not the account's key")) + cs[j:]
			}
			id := tc.id
			if id == "" {
				if id = fleet.VMID(tc.vm); id == "" {
					t.Fatalf("no fleet VM %s", tc.vm)
				}
			}
			var out, errb bytes.Buffer
			args := []string{"--vm", id}
			if tc.wantJSON {
				args = append(args, "--json")
			}
			code := planMain(context.Background(), args, func(k string) string { return env[k] }, &out, &errb)
			if code != tc.code {
				t.Errorf("exit %d, want %d\n%s\n%s", code, tc.code, out.String(), errb.String())
			}
			text := out.String()
			t.Log(text)
			if tc.wantJSON {
				var pl pipeline.Plan
				if err := json.Unmarshal(out.Bytes(), &pl); err != nil || pl.Ready() != (tc.code == 0) || (len(pl.Operations) > 0) != (tc.code == 0) {
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
			if tc.wantErr != "" && !strings.Contains(errb.String(), tc.wantErr) {
				t.Errorf("stderr lacks %q: %s", tc.wantErr, errb.String())
			}
			// Read-only: no request but a GET, neither at the simulator nor in front of it.
			for _, c := range sim.CallLog() {
				if c.Method != http.MethodGet {
					t.Errorf("plan wrote: %s %s", c.Method, c.Path)
				}
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if tc.deny != "" && rec.denied == 0 {
				t.Errorf("no GET of %s was made: the case tests nothing", tc.deny)
			}
			for _, c := range rec.calls {
				if !strings.HasPrefix(c, http.MethodGet+" ") {
					t.Errorf("plan sent: %s", c)
				}
			}
		})
	}
}

func TestPlanUsage(t *testing.T) {
	t.Parallel()
	var errb bytes.Buffer
	if code := run(context.Background(), []string{"plan"}, &bytes.Buffer{}, &errb); code != 2 || !strings.Contains(errb.String(), "usage: handler plan") {
		t.Errorf("plan without --vm: exit %d, %s", code, errb.String())
	}
}
