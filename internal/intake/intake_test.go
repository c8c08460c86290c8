package intake

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/audit/memblob"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lock"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

const vm = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-erp/providers/Microsoft.Compute/virtualMachines/erp-app-01"

func data(t testing.TB, props map[string]any) json.RawMessage {
	b, err := json.Marshal(map[string]any{"resourceInfo": map[string]any{"properties": props}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestClassify(t *testing.T) {
	t.Parallel()
	fixture, err := os.ReadFile("testdata/resource-annotated-crashed.eventgrid.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx []struct {
		ID        string          `json:"id"`
		EventType string          `json:"eventType"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(fixture, &fx); err != nil {
		t.Fatal(err)
	}
	vmProps := func(kv ...string) map[string]any {
		m := map[string]any{"targetResourceId": vm, "targetResourceType": VMResourceType}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name      string
		eventType string
		data      json.RawMessage
		act       bool
		strong    bool
		reason    string
	}{
		{"fixture crash", fx[0].EventType, fx[0].Data, true, true, ""},
		{"crash", TypeAnnotated, data(t, vmProps("annotationName", "VirtualMachineCrashed")), true, true, ""},
		{"unavailable", TypeAvailability, data(t, vmProps("availabilityState", "Unavailable")), true, false, ""},
		{"host crash", TypeAnnotated, data(t, vmProps("annotationName", "VirtualMachineHostCrashed")), false, false, "not a guest OS crash"},
		{"deallocation", TypeAnnotated, data(t, vmProps("annotationName", "VirtualMachineDeallocationInitiated")), false, false, "not a guest OS crash"},
		{"degraded", TypeAvailability, data(t, vmProps("availabilityState", "Degraded")), false, false, "not Unavailable"},
		{"other type", "Microsoft.Resources.ResourceWriteSuccess", data(t, vmProps()), false, false, "not a Resource Health VM event"},
		{"other resource", TypeAnnotated, data(t, map[string]any{"targetResourceId": vm, "targetResourceType": "Microsoft.Web/sites", "annotationName": "VirtualMachineCrashed"}), false, false, "not a virtual machine"},
		{"no data", TypeAnnotated, nil, false, false, "no data"},
		{"data not an object", TypeAnnotated, json.RawMessage(`[1,2]`), false, false, "not a Resource Health payload"},
		{"bad id", TypeAnnotated, data(t, map[string]any{"targetResourceId": vm + "/x", "targetResourceType": VMResourceType, "annotationName": "VirtualMachineCrashed"}), false, false, "target resource id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := Classify("e1", tc.eventType, time.Now(), tc.data)
			if d.Act != tc.act || d.Strong != tc.strong || !strings.Contains(d.Reason, tc.reason) {
				t.Fatalf("Classify = %+v, want act=%v strong=%v reason~%q", d, tc.act, tc.strong, tc.reason)
			}
			if d.Act && !resourceid.Equal(d.VMResourceID, vm) {
				t.Errorf("VM = %s", d.VMResourceID)
			}
		})
	}
}

func TestAlertIncidentIDIsStable(t *testing.T) {
	at := time.Date(2026, 11, 20, 3, 14, 7, 0, time.UTC)
	a, b := AlertIncidentID("ev-1", at), AlertIncidentID("ev-1", at)
	if a != b || !incident.ValidID(a) || a == AlertIncidentID("ev-2", at) {
		t.Fatalf("ids %s %s", a, b)
	}
}

type scopeAll struct{}

func (scopeAll) InScope(resourceid.ID) bool { return true }

type countingBus struct {
	mu sync.Mutex
	n  int
}

func (b *countingBus) Send(_ context.Context, msg incident.Message, opts bus.SendOptions) error {
	if _, err := bus.NewEnvelope(msg, opts); err != nil {
		return err
	}
	b.mu.Lock()
	b.n++
	b.mu.Unlock()
	return nil
}

// TestTakeOverFromClosedIncident: a closed incident that kept its VM lock does not block the next.
func TestTakeOverFromClosedIncident(t *testing.T) {
	ctx := context.Background()
	client := azuritetest.Client(t)
	trail := audit.New(client, azuritetest.Container(t, "audit"))
	locks := lock.New(client, azuritetest.Container(t, "locks"))
	if err := trail.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := locks.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	b := &countingBus{}
	in := &Intake{Trail: trail, Locks: locks, Bus: b, Scope: scopeAll{}}
	id, _ := resourceid.ParseVM(vm)
	first, err := in.Open(ctx, Request{VM: id, Trigger: incident.Trigger{Kind: incident.TriggerManual}})
	if err != nil || !first.Opened {
		t.Fatalf("first open: %+v %v", first, err)
	}
	// While active: a second manual request is refused with the active id, nothing sent.
	again, err := in.Open(ctx, Request{VM: id, Trigger: incident.Trigger{Kind: incident.TriggerManual}})
	if err != nil || again.Opened || again.IncidentID != first.IncidentID || b.n != 1 {
		t.Fatalf("second open while active: %+v %v (sent %d)", again, err, b.n)
	}
	// Close it without releasing the lock (a crash between the two).
	if _, err := trail.Append(ctx, first.IncidentID, audit.Entry{VMResourceID: vm, Stage: "support-ticket", Event: incident.EventClosed, State: incident.StateClosed}); err != nil {
		t.Fatal(err)
	}
	next, err := in.Open(ctx, Request{VM: id, Trigger: incident.Trigger{Kind: incident.TriggerManual}})
	if err != nil || !next.Opened || next.IncidentID == first.IncidentID {
		t.Fatalf("open after close: %+v %v", next, err)
	}
	if holder, _ := locks.HolderVM(ctx, vm); holder != next.IncidentID {
		t.Errorf("lock holder = %s, want %s", holder, next.IncidentID)
	}
}

// BenchmarkIntake measures one alert from decision to the first-stage send, with the in-memory
// storage fake and a bus that only encodes: go test -run '^$' -bench Intake ./internal/intake
func BenchmarkIntake(b *testing.B) {
	ctx := context.Background()
	trail := audit.NewFrom(memblob.New())
	locks := lock.NewFrom(memblob.New())
	if err := trail.EnsureContainer(ctx); err != nil {
		b.Fatal(err)
	}
	if err := locks.EnsureContainer(ctx); err != nil {
		b.Fatal(err)
	}
	in := &Intake{Trail: trail, Locks: locks, Bus: &countingBus{}, Scope: scopeAll{}}
	payload := data(b, map[string]any{"targetResourceId": vm, "targetResourceType": VMResourceType, "annotationName": "VirtualMachineCrashed"})
	at := time.Date(2026, 11, 20, 3, 14, 7, 0, time.UTC)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		// A fresh VM each time, so that every iteration opens an incident.
		d := Classify("ev", TypeAnnotated, at, payload)
		d.VM.Name = "vm-" + itoa(i)
		if _, err := in.Open(ctx, Request{VM: d.VM, Trigger: d.Trigger, Signal: true, IncidentID: AlertIncidentID("ev-"+itoa(i), at)}); err != nil {
			b.Fatal(err)
		}
	}
}

func itoa(i int) string {
	var buf [20]byte
	n := len(buf)
	for i >= 10 {
		n--
		buf[n] = byte('0' + i%10)
		i /= 10
	}
	n--
	buf[n] = byte('0' + i)
	return string(buf[n:])
}
