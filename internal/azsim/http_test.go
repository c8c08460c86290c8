package azsim_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/azsim"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// serve starts the simulator's handler on 127.0.0.1 and returns its base URL.
func serve(t *testing.T, opts azsim.Options) (*azsim.Sim, string) {
	t.Helper()
	var sim *azsim.Sim
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sim.Handler().ServeHTTP(w, r) }))
	opts.PublicURL = "http://" + srv.Listener.Addr().String()
	var err error
	sim, err = azsim.New(nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

func TestHTTPLoopback(t *testing.T) {
	t.Parallel()
	sim, base := serve(t, azsim.Options{TimeScale: 0.002}) // deallocate: 120ms
	c := newClients(t, sim.SubscriptionID(), azsim.EndpointClientOptions(base))
	ctx := ctxT(t)

	// A correlation id set by the caller reaches the simulator.
	hdr := http.Header{}
	hdr.Set("x-ms-correlation-request-id", "inc-20261120-031407-7f3c")
	cctx := policy.WithHTTPHeader(ctx, hdr)
	vm, err := c.vms.Get(cctx, appRG, webVM, &armcompute.VirtualMachinesClientGetOptions{Expand: to.Ptr(armcompute.InstanceViewTypesInstanceView)})
	if err != nil {
		t.Fatal(err)
	}
	if ps := powerState(vm.VirtualMachine); ps != "running" {
		t.Errorf("power state %s", ps)
	}
	p, err := c.vms.BeginDeallocate(cctx, appRG, webVM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PollUntilDone(cctx, nil); err != nil {
		t.Fatal(err)
	}
	var polls, correlated int
	for _, call := range sim.CallLog() {
		if call.Poll {
			polls++
		}
		if call.CorrelationID == "inc-20261120-031407-7f3c" {
			correlated++
		}
	}
	if polls == 0 {
		t.Error("no polls over HTTP")
	}
	if correlated < 3 {
		t.Errorf("%d requests carried the correlation id, want the get, the deallocate and its polls", correlated)
	}

	// Disk work and attach, as RescueAttach does it.
	snap := snapshotOf(t, sim, c, appRG, webVM, "snap")
	disk, err := diskFrom(t, sim, c, appRG, "rescue-copy", snap, "1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := attach(t, c, rescueRG, rescue1, disk, nil); err != nil {
		t.Fatal(err)
	}
	rp, err := c.runs.BeginCreateOrUpdate(ctx, rescueRG, rescue1, "rc", runCommandBody(sim, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rp.PollUntilDone(ctx, nil); err != nil {
		t.Fatal(err)
	}

	// ARM's error shape crosses the wire.
	_, err = c.disks.Get(ctx, appRG, "nope", nil)
	wantCode(t, err, azsim.CodeResourceNotFound, http.StatusNotFound)
	var re *azcore.ResponseError
	errors.As(err, &re)
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.NewDecoder(re.RawResponse.Body).Decode(&body); err != nil || body.Error.Code != azsim.CodeResourceNotFound || body.Error.Message == "" {
		t.Errorf("error body %+v (%v)", body, err)
	}

	// Boot diagnostics blobs are served by the same handler.
	bd, err := c.vms.RetrieveBootDiagnosticsData(ctx, appRG, webVM, nil)
	if err != nil {
		t.Fatal(err)
	}
	get := func(u string) (int, []byte) {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, b := get(*bd.ConsoleScreenshotBlobURI); code != http.StatusOK || !bytes.HasPrefix(b, []byte("BM")) {
		t.Errorf("screenshot: %d %q", code, b[:min(8, len(b))])
	}
	if code, b := get(*bd.SerialConsoleLogBlobURI); code != http.StatusOK || !bytes.Contains(b, []byte("STOP: 0x0000007E")) {
		t.Errorf("serial log: %d %q", code, b)
	}
	if code, _ := get(strings.Replace(*bd.SerialConsoleLogBlobURI, "sig=", "sig=0", 1)); code != http.StatusForbidden {
		t.Errorf("tampered signature: %d, want 403", code)
	}

	// Support routes.
	tp, err := c.tickets.BeginCreate(ctx, "vmrescue-inc-1", windowsVMTicket(t, sim, c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.PollUntilDone(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(sim.State().Tickets()); n != 1 {
		t.Errorf("%d tickets", n)
	}
}

func TestHTTPNeedsInsecureAllowCredentialWithHTTP(t *testing.T) {
	t.Parallel()
	sim, base := serve(t, azsim.Options{})
	opts := azsim.EndpointClientOptions(base)
	opts.InsecureAllowCredentialWithHTTP = false
	opts.Retry = policy.RetryOptions{MaxRetries: -1}
	c := newClients(t, sim.SubscriptionID(), opts)
	_, err := c.vms.Get(ctxT(t), appRG, webVM, nil)
	if err == nil || !strings.Contains(err.Error(), "non-TLS") {
		t.Errorf("without InsecureAllowCredentialWithHTTP: %v; want the SDK's refusal", err)
	}
	if n := len(sim.CallLog()); n != 0 {
		t.Errorf("%d requests reached the simulator", n)
	}
}

func TestHTTPUnknownRoute(t *testing.T) {
	t.Parallel()
	_, base := serve(t, azsim.Options{})
	resp, err := http.Get(base + "/subscriptions/x/providers/Microsoft.Network/virtualNetworks")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Header.Get("x-ms-error-code") != "InvalidResourceType" {
		t.Errorf("%d %s", resp.StatusCode, resp.Header.Get("x-ms-error-code"))
	}
}

// TestGoldenVMWithInstanceView pins the JSON the simulator sends for a VM GET with the instance
// view: what the Snapshot stage reads. Refresh with go test -run Golden -update.
func TestGoldenVMWithInstanceView(t *testing.T) {
	t.Parallel()
	clock := azsim.NewManualClock(time.Date(2026, 11, 20, 3, 14, 7, 0, time.UTC))
	sim, base := serve(t, azsim.Options{Clock: clock})
	for _, tc := range []struct{ file, path string }{
		{"vm-get-instanceview.golden.json", "/subscriptions/" + sim.SubscriptionID() + "/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/app-sql-01?$expand=instanceView&api-version=2025-04-01"},
		{"disk-get.golden.json", "/subscriptions/" + sim.SubscriptionID() + "/resourceGroups/rg-app/providers/Microsoft.Compute/disks/app-sql-01_DataDisk_0?api-version=2025-01-02"},
	} {
		resp, err := http.Get(base + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, b, "", "  "); err != nil {
			t.Fatal(err)
		}
		pretty.WriteByte('\n')
		golden := filepath.Join("testdata", tc.file)
		if *update {
			if err := os.WriteFile(golden, pretty.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run with -update to create it)", err)
		}
		if !bytes.Equal(pretty.Bytes(), want) {
			t.Errorf("%s differs from the golden file:\n%s", tc.file, pretty.Bytes())
		}
	}
}

func serveB(b *testing.B) (*azsim.Sim, string) {
	b.Helper()
	var sim *azsim.Sim
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sim.Handler().ServeHTTP(w, r) }))
	var err error
	sim, err = azsim.New(nil, azsim.Options{Latency: azsim.LatencyTable{}, PublicURL: "http://" + srv.Listener.Addr().String()})
	if err != nil {
		b.Fatal(err)
	}
	srv.Start()
	b.Cleanup(srv.Close)
	return sim, srv.URL
}
