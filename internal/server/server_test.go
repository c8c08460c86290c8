package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/vmrescue/vmrescue/internal/api"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/intake"
	"github.com/vmrescue/vmrescue/internal/lock"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

const (
	sub     = "11111111-2222-3333-4444-555555555555"
	vmErp   = "/subscriptions/" + sub + "/resourceGroups/rg-erp/providers/Microsoft.Compute/virtualMachines/erp-app-01"
	vmWeb   = "/subscriptions/" + sub + "/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01"
	vmOther = "/subscriptions/99999999-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x"
)

// recordingBus is a bus.Sender that keeps the envelopes it was asked to send.
type recordingBus struct {
	mu   sync.Mutex
	sent []bus.Envelope
}

func (b *recordingBus) Send(_ context.Context, msg incident.Message, opts bus.SendOptions) error {
	env, err := bus.NewEnvelope(msg, opts)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sent = append(b.sent, env)
	return nil
}

func (b *recordingBus) ids() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.sent {
		out = append(out, e.MessageID)
	}
	return out
}

// stageFunc adapts a function to StageRunner.
type stageFunc func(ctx context.Context, msg incident.Message, d Delivery) error

func (f stageFunc) Run(ctx context.Context, msg incident.Message, d Delivery) error {
	return f(ctx, msg, d)
}

type env struct {
	url   string
	trail *audit.Store
	locks *lock.Locks
	bus   *recordingBus
}

func newEnv(t *testing.T, stages map[incident.Stage]StageRunner) *env {
	t.Helper()
	client := azuritetest.Client(t)
	trail := audit.New(client, azuritetest.Container(t, "audit"))
	locks := lock.New(client, azuritetest.Container(t, "locks"))
	ctx := context.Background()
	if err := trail.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := locks.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(func(k string) string {
		return map[string]string{
			config.Port: "1", config.LocalBusURL: "http://127.0.0.1:1", config.StorageConnection: "x",
			config.AllowedSubscriptions: sub, config.RescueVMs: vmErp, config.SupportEnabled: "false",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	b := &recordingBus{}
	in := &intake.Intake{Trail: trail, Locks: locks, Bus: b, Scope: cfg}
	s := &Server{Trail: trail, Intake: in, API: &api.API{Trail: trail, Intake: in, Bus: b}, Stages: stages}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &env{url: srv.URL, trail: trail, locks: locks, bus: b}
}

func (e *env) post(t *testing.T, path string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(e.url+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/") {
		t.Errorf("%s answered Content-Type %q", path, ct)
	}
	return resp.StatusCode, out
}

// healthEvent is a Resource Health event in the Event Grid schema.
func healthEvent(id, eventType, vm, resourceType, annotation, availability string) map[string]any {
	props := map[string]any{"targetResourceId": vm, "targetResourceType": resourceType, "occurredTime": "2026-11-20T03:14:07Z"}
	if annotation != "" {
		props["annotationName"] = annotation
	}
	if availability != "" {
		props["availabilityState"] = availability
	}
	return map[string]any{
		"id": id, "topic": "/subscriptions/" + sub, "subject": vm, "eventType": eventType,
		"eventTime": "2026-11-20T03:14:07.1234567Z", "dataVersion": "1", "metadataVersion": "1",
		"data": map[string]any{"resourceInfo": map[string]any{"id": vm + "/providers/Microsoft.ResourceHealth/x/" + id, "properties": props}},
	}
}

func eventInvocation(t *testing.T, ev any) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"Data":     map[string]any{"event": ev},
		"Metadata": map[string]any{"sys": map[string]any{"MethodName": "HealthAlert", "UtcNow": "2026-11-20T03:14:08Z"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sbInvocation wraps a message body the way the host does: JSON-encoded once more, metadata
// integers as strings, MessageId quoted, body fields copied into Metadata.
func sbInvocation(t *testing.T, body any, messageID string) []byte {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	once, _ := json.Marshal(string(raw))
	meta := map[string]any{"DeliveryCount": "1", "MessageId": `"` + messageID + `"`, "SequenceNumber": "3"}
	var fields map[string]any
	if json.Unmarshal(raw, &fields) == nil {
		for k, v := range fields {
			meta[k] = v
		}
	}
	b, _ := json.Marshal(map[string]any{"Data": map[string]any{"message": string(once)}, "Metadata": meta})
	return b
}

const (
	annotated    = "Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated"
	availability = "Microsoft.ResourceNotifications.HealthResources.AvailabilityStatusChanged"
	vmType       = "Microsoft.Compute/virtualMachines"
)

func TestHealthAlertIntake(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	crash := healthEvent("ev-1", annotated, vmErp, vmType, "VirtualMachineCrashed", "")

	// A crash alert opens an incident and sends the first stage.
	if code, body := e.post(t, "/HealthAlert", eventInvocation(t, crash)); code != 200 {
		t.Fatalf("HealthAlert = %d %s", code, body)
	}
	ids, err := e.trail.Find(ctx, vmErp, incident.StateActive)
	if err != nil || len(ids) != 1 {
		t.Fatalf("active incidents for the VM = %v, %v", ids, err)
	}
	id := ids[0]
	if got := e.bus.ids(); len(got) != 1 || got[0] != id+":snapshot" {
		t.Fatalf("sent %v, want [%s:snapshot]", got, id)
	}

	// Redelivery, a case variant, a second alert and an availability drop all land on the same incident.
	for _, ev := range []map[string]any{
		crash,
		healthEvent("ev-2", annotated, strings.ToUpper(vmErp[:40])+vmErp[40:], vmType, "VirtualMachineCrashed", ""),
		healthEvent("ev-3", availability, vmErp, vmType, "", "Unavailable"),
	} {
		if code, body := e.post(t, "/HealthAlert", eventInvocation(t, ev)); code != 200 {
			t.Fatalf("HealthAlert = %d %s", code, body)
		}
	}
	ids, _ = e.trail.Find(ctx, vmErp, "")
	if len(ids) != 1 {
		t.Fatalf("incidents for the VM = %v, want exactly one", ids)
	}
	recs, err := e.trail.Read(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, r := range recs {
		events = append(events, r.Event)
	}
	if got, want := strings.Join(events, ","), "opened,signal,signal"; got != want {
		t.Errorf("events = %s, want %s", got, want)
	}
	if err := audit.Verify(recs); err != nil {
		t.Error(err)
	}
	for _, m := range e.bus.ids() {
		if m != id+":snapshot" {
			t.Errorf("unexpected send %s", m)
		}
	}
}

func TestHealthAlertRejections(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	tests := []struct {
		name   string
		event  any
		vm     string
		reason string
	}{
		{"host crash annotation", healthEvent("r1", annotated, vmWeb, vmType, "VirtualMachineHostCrashed", ""), vmWeb, "not a guest OS crash"},
		{"maintenance", healthEvent("r2", annotated, vmWeb, vmType, "VirtualMachinePlannedMaintenance", ""), vmWeb, "not a guest OS crash"},
		{"available again", healthEvent("r3", availability, vmWeb, vmType, "", "Available"), vmWeb, "not Unavailable"},
		{"not a VM", healthEvent("r4", annotated, vmWeb, "Microsoft.Sql/servers", "VirtualMachineCrashed", ""), vmWeb, "not a virtual machine"},
		{"out of scope", healthEvent("r5", annotated, vmOther, vmType, "VirtualMachineCrashed", ""), vmOther, "outside the configured"},
		{"other event type", healthEvent("r6", "Microsoft.Storage.BlobCreated", vmWeb, vmType, "", ""), vmWeb, "not a Resource Health VM event"},
		{"id with metacharacters", healthEvent("r7", annotated, vmWeb+";reboot", vmType, "VirtualMachineCrashed", ""), vmWeb + ";reboot", "target resource id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, body := e.post(t, "/HealthAlert", eventInvocation(t, tc.event)); code != 200 {
				t.Fatalf("HealthAlert = %d %s", code, body)
			}
			ids, err := e.trail.Find(ctx, tc.vm, incident.StateRejected)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, id := range ids {
				recs, _ := e.trail.Read(ctx, id)
				for _, r := range recs {
					if r.Event == incident.EventRejected && strings.Contains(string(r.Detail), tc.reason) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("no rejected record with reason %q among %v", tc.reason, ids)
			}
		})
	}
	if got := e.bus.ids(); len(got) != 0 {
		t.Errorf("rejected alerts sent %v", got)
	}
}

func TestStageInvocations(t *testing.T) {
	var calls []string
	var mu sync.Mutex
	stages := map[incident.Stage]StageRunner{
		incident.StageSnapshot: stageFunc(func(_ context.Context, msg incident.Message, d Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, fmt.Sprintf("%s/%d/%s", msg.IncidentID, d.DeliveryCount, d.MessageID))
			switch msg.Trigger.Reason {
			case "transient":
				return errors.New("AnotherOperationInProgress")
			case "terminal":
				return fault.Terminal(errors.New("VM is Linux"))
			}
			return nil
		}),
		incident.StageFailed: stageFunc(func(context.Context, incident.Message, Delivery) error { return nil }),
	}
	e := newEnv(t, stages)
	ctx := context.Background()
	id := "inc-20261120-031407-aaaa01"
	if _, err := e.trail.Append(ctx, id, audit.Entry{VMResourceID: vmErp, Stage: "intake", Event: incident.EventOpened, State: incident.StateActive}); err != nil {
		t.Fatal(err)
	}
	msg := func(stage incident.Stage, reason string) incident.Message {
		return incident.Message{Version: 1, IncidentID: id, VMResourceID: vmErp, Stage: stage,
			Trigger: incident.Trigger{Kind: incident.TriggerAlert, Reason: reason}}
	}
	unknown := msg(incident.StageSnapshot, "")
	unknown.IncidentID = "inc-20261120-031407-bbbb02"
	badVM := msg(incident.StageSnapshot, "")
	badVM.VMResourceID = vmErp + "/../x"
	tests := []struct {
		name      string
		function  string
		body      any
		wantCode  int
		wantCall  bool
		wantEvent string // last event on the incident's trail afterwards
	}{
		{"runs the stage", "Snapshot", msg(incident.StageSnapshot, ""), 200, true, incident.EventOpened},
		{"transient failure answers 500", "Snapshot", msg(incident.StageSnapshot, "transient"), 500, true, incident.EventOpened},
		{"terminal failure is acknowledged and recorded", "Snapshot", msg(incident.StageSnapshot, "terminal"), 200, true, incident.EventFailed},
		{"stage does not match queue", "Snapshot", msg(incident.StageRescueAttach, ""), 200, false, incident.EventRejected},
		{"failed takes any stage", "Failed", msg(incident.StageHarvestDump, ""), 200, false, ""},
		{"unknown incident", "Snapshot", unknown, 200, false, incident.EventRejected},
		{"invalid VM id", "Snapshot", badVM, 200, false, incident.EventRejected},
		{"not a stage message", "Snapshot", map[string]any{"hello": "world"}, 200, false, incident.EventRejected},
		{"wrong types", "Snapshot", map[string]any{"version": "one", "incidentId": 5}, 200, false, incident.EventRejected},
	}
	rejections := func() int {
		rejected, err := e.trail.List(ctx, incident.StateRejected)
		if err != nil {
			t.Fatal(err)
		}
		recs, _ := e.trail.Read(ctx, id)
		n := len(rejected)
		for _, r := range recs {
			if r.Event == incident.EventRejected {
				n++
			}
		}
		return n
	}
	rejectedBefore := rejections()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			before := len(calls)
			mu.Unlock()
			code, body := e.post(t, "/"+tc.function, sbInvocation(t, tc.body, id+":snapshot"))
			if code != tc.wantCode {
				t.Fatalf("code = %d, want %d: %s", code, tc.wantCode, body)
			}
			var resp struct {
				Outputs map[string]any
				Logs    []string
			}
			if err := json.Unmarshal(body, &resp); err != nil || resp.Outputs == nil || resp.Logs == nil {
				t.Errorf("response is not a host response: %s", body)
			}
			mu.Lock()
			called := len(calls) > before
			mu.Unlock()
			if called != tc.wantCall {
				t.Errorf("stage called = %v, want %v", called, tc.wantCall)
			}
			recs, err := e.trail.Read(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if got := recs[len(recs)-1].Event; tc.wantEvent != "" && got != tc.wantEvent && tc.wantEvent != incident.EventRejected {
				t.Errorf("last event = %s, want %s", got, tc.wantEvent)
			}
			// A rejection is on record: on the incident's own trail, or as a rejected incident
			// when the message names none that can be written to.
			want := rejectedBefore
			if tc.wantEvent == incident.EventRejected {
				want++
			}
			if rejectedBefore = rejections(); rejectedBefore != want {
				t.Errorf("rejections on record = %d, want %d", rejectedBefore, want)
			}
		})
	}
	if calls[0] != id+"/1/"+id+":snapshot" {
		t.Errorf("delivery not passed through: %s", calls[0])
	}
	if n := rejections(); n != 5 {
		t.Errorf("rejections recorded = %d, want 5", n)
	}
}

func TestBadInvocations(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name string
		path string
		body []byte
		code int
	}{
		{"unknown function", "/Reboot", []byte(`{"Data":{}}`), 404},
		{"http function is not invoked by POST /name", "/ManualTrigger", []byte(`{"Data":{}}`), 404},
		{"malformed JSON", "/HealthAlert", []byte(`{"Data":`), 200},
		{"missing Data", "/HealthAlert", []byte(`{"Metadata":{}}`), 200},
		{"event binding missing", "/HealthAlert", []byte(`{"Data":{"other":1}}`), 200},
		{"over 1 MiB", "/HealthAlert", append([]byte(`{"Data":{"event":"`), append(bytes.Repeat([]byte("a"), 1<<20), []byte(`"}}`)...)...), 200},
		{"timer without janitor is transient", "/Janitor", []byte(`{"Data":{"timer":{"IsPastDue":false}},"Metadata":{}}`), 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.post(t, tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("code = %d, want %d: %s", code, tc.code, body)
			}
			if !json.Valid(body) {
				t.Errorf("body is not JSON: %s", body)
			}
		})
	}
}

func TestReadiness(t *testing.T) {
	e := newEnv(t, nil)
	resp, err := http.Get(e.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readiness = %d", resp.StatusCode)
	}
}

// TestRecordedTerminalFailureIsNotRecordedTwice: a stage that wrote its own failed record marks the
// error recorded, and the server does not append another.
func TestRecordedTerminalFailureIsNotRecordedTwice(t *testing.T) {
	stages := map[incident.Stage]StageRunner{
		incident.StageSnapshot: stageFunc(func(context.Context, incident.Message, Delivery) error {
			return fmt.Errorf("snapshot: %w", fault.Recorded(fault.Terminal(errors.New("PropertyChangeNotAllowed"))))
		}),
	}
	e := newEnv(t, stages)
	ctx := context.Background()
	id := "inc-20261120-031407-cccc03"
	if _, err := e.trail.Append(ctx, id, audit.Entry{VMResourceID: vmErp, Stage: "intake", Event: incident.EventOpened, State: incident.StateActive}); err != nil {
		t.Fatal(err)
	}
	msg := incident.Message{Version: 1, IncidentID: id, VMResourceID: vmErp, Stage: incident.StageSnapshot,
		Trigger: incident.Trigger{Kind: incident.TriggerAlert}}
	if code, body := e.post(t, "/Snapshot", sbInvocation(t, msg, id+":snapshot")); code != 200 {
		t.Fatalf("code = %d: %s", code, body)
	}
	recs, err := e.trail.Read(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("server appended %d records for a failure the stage had recorded", len(recs)-1)
	}
}

// TestDeadLetterReason: the reason Service Bus gave a dead letter reaches the Failed stage.
func TestDeadLetterReason(t *testing.T) {
	got := make(chan Delivery, 1)
	e := newEnv(t, map[incident.Stage]StageRunner{
		incident.StageFailed: stageFunc(func(_ context.Context, _ incident.Message, d Delivery) error {
			got <- d
			return nil
		}),
	})
	id := "inc-20261120-031407-aaaa03"
	if _, err := e.trail.Append(context.Background(), id, audit.Entry{VMResourceID: vmErp, Stage: "intake", Event: incident.EventOpened, State: incident.StateActive}); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(incident.Message{Version: 1, IncidentID: id, VMResourceID: vmErp, Stage: incident.StageSnapshot,
		Trigger: incident.Trigger{Kind: incident.TriggerAlert}})
	once, _ := json.Marshal(string(raw))
	body, _ := json.Marshal(map[string]any{"Data": map[string]any{"message": string(once)}, "Metadata": map[string]any{
		"DeliveryCount": "1", "MessageId": `"` + id + `:snapshot"`, "SequenceNumber": "9",
		"ApplicationProperties": map[string]any{"DeadLetterReason": "MaxDeliveryCountExceeded",
			"DeadLetterErrorDescription": "Message could not be consumed after 10 delivery attempts."},
	}})
	if code, resp := e.post(t, "/Failed", body); code != 200 {
		t.Fatalf("code %d: %s", code, resp)
	}
	select {
	case d := <-got:
		if d.DeadLetterReason != "MaxDeliveryCountExceeded" || !strings.Contains(d.DeadLetterErrorDescription, "10 delivery attempts") {
			t.Errorf("delivery %+v", d)
		}
	default:
		t.Fatal("the Failed stage did not run")
	}
}
