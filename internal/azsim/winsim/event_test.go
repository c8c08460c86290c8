package winsim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azsim/winsim"
	"github.com/vmrescue/vmrescue/internal/hostproto"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, got, "", "  "); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pretty.Bytes(), want) {
		t.Errorf("%s differs from the golden file (run with -update to accept):\n%s", name, pretty.Bytes())
	}
}

func TestCrashEventGolden(t *testing.T) {
	t.Parallel()
	vmID := "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-erp/providers/Microsoft.Compute/virtualMachines/erp-app-01"
	at := time.Date(2026, 11, 20, 3, 14, 7, 123456700, time.UTC)
	// The ids of shared/fixtures/events/resource-annotated-crashed.*.json: the golden files equal
	// those fixtures.
	for schema, id := range map[string]string{
		hostproto.SchemaEventGrid:   "6d1c2b7e-3f4a-4b8e-9a51-2f0c7d9e1a43",
		hostproto.SchemaCloudEvents: "0a7f5e21-9c3d-4e6b-8f12-7b4a3c2d1e90",
	} {
		t.Run(schema, func(t *testing.T) {
			t.Parallel()
			body, err := winsim.CrashEvent(vmID, id, at, schema)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "crash-event."+schema+".json", body)
			evs, err := hostproto.ParseEvents(body)
			if err != nil || len(evs) != 1 || evs[0].Schema != schema || evs[0].Subject != vmID || !evs[0].Time.Equal(at) {
				t.Errorf("parsed %+v (%v)", evs, err)
			}
		})
	}
	if _, err := winsim.CrashEvent("not-an-id", "x", at, ""); err == nil {
		t.Error("an event about a malformed id was made")
	}
}

// webhook is an Event Grid webhook on 127.0.0.1 that answers with the statuses given in turn.
type webhook struct {
	mu       sync.Mutex
	statuses []int
	got      []*http.Request
	bodies   [][]byte
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, r)
	h.bodies = append(h.bodies, b)
	status := http.StatusAccepted
	if len(h.statuses) > 0 {
		status, h.statuses = h.statuses[0], h.statuses[1:]
	}
	w.WriteHeader(status)
}

func TestPostTo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		statuses []int
		wantErr  bool
		wantPerm bool
	}{
		{name: "accepted", statuses: []int{202}},
		{name: "server error", statuses: []int{503}, wantErr: true},
		{name: "bad request is permanent", statuses: []int{400}, wantErr: true, wantPerm: true},
		{name: "forbidden is permanent", statuses: []int{403}, wantErr: true, wantPerm: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := &webhook{statuses: tc.statuses}
			srv := httptest.NewServer(h)
			defer srv.Close()
			post := winsim.PostTo(srv.URL+"/runtime/webhooks/eventgrid?functionName=HealthAlert", srv.Client(), "")
			err := post(context.Background(), []byte(`[{"id":"x"}]`), 3)
			var pe *winsim.PermanentError
			if (err != nil) != tc.wantErr || errors.As(err, &pe) != tc.wantPerm {
				t.Fatalf("post = %v, want error %v (permanent %v)", err, tc.wantErr, tc.wantPerm)
			}
			r := h.got[0]
			if r.Method != http.MethodPost || r.URL.Query().Get("functionName") != "HealthAlert" ||
				r.Header.Get("aeg-event-type") != "Notification" || r.Header.Get("aeg-delivery-count") != "2" ||
				r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("request %s %s headers %v", r.Method, r.URL, r.Header)
			}
		})
	}
}

// TestEventDeliveryRetries: the world retries a failing webhook on Event Grid's schedule
// (scaled) and gives up at a permanent refusal.
func TestEventDeliveryRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		statuses     []int
		wantAttempts int
		wantErr      bool
	}{
		{name: "two failures then accepted", statuses: []int{500, 503, 202}, wantAttempts: 3},
		{name: "refused", statuses: []int{400}, wantAttempts: 1, wantErr: true},
		{name: "always failing", statuses: []int{500, 500, 500, 500, 500, 500}, wantAttempts: 5, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := &webhook{statuses: tc.statuses}
			srv := httptest.NewServer(h)
			defer srv.Close()
			r := newRig(t, nil, winsim.LocalOptions{
				// Event Grid's 10 s, 30 s, 1 min and 5 min retries at 1/10000.
				Sim:   azsim.Options{TimeScale: 0.0001},
				World: winsim.Options{EventURL: srv.URL + "/runtime/webhooks/eventgrid?functionName=HealthAlert"},
			})
			name := "app-web-01"
			vmID := r.sim.Fleet().VMID(name)
			rg := resourceGroupOf(vmID)
			r.deallocate(rg, name)
			r.start(rg, name)
			b, err := r.w.WaitBoot(ctxT(t), vmID, 1)
			if err != nil {
				t.Fatal(err)
			}
			if b.EventAttempts != tc.wantAttempts || (b.EventError != "") != tc.wantErr {
				t.Errorf("delivery: %d attempts, error %q; want %d, error %v", b.EventAttempts, b.EventError, tc.wantAttempts, tc.wantErr)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.bodies) != tc.wantAttempts {
				t.Fatalf("webhook saw %d posts, want %d", len(h.bodies), tc.wantAttempts)
			}
			for i, body := range h.bodies {
				if !bytes.Equal(body, h.bodies[0]) {
					t.Errorf("attempt %d posted another body", i+1)
				}
				if got := h.got[i].Header.Get("aeg-delivery-count"); got != string(rune('0'+i)) {
					t.Errorf("attempt %d: aeg-delivery-count %s", i+1, got)
				}
			}
			checkCrashEvent(t, h.bodies[:1], vmID, b.EventID)
		})
	}
}
