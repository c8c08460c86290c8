package localhost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/handlertest"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// handlerBinary is the real handler, built once for the package's tests.
var handlerBinary string

// appDir is the repository root: host.json and functions/.
const appDir = "../.."

func TestMain(m *testing.M) { handlertest.Main(m, &handlerBinary) }

// syncBuffer collects the host's output; a failed test prints it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testStack is a running stack with the test's own audit and locks containers.
type testStack struct {
	*Stack
	out    *syncBuffer
	audit  string
	locks  string
	client *http.Client
	pids   []int
}

// startStack starts the simulator, the host and the real handler against the shared Azurite.
func startStack(t *testing.T, tune func(*StackOptions)) *testStack {
	t.Helper()
	ts := &testStack{out: &syncBuffer{}, audit: azuritetest.Container(t, "audit"), locks: azuritetest.Container(t, "locks"),
		client: &http.Client{Timeout: 30 * time.Second}}
	opts := StackOptions{
		Host: Options{
			AppDir: appDir, Addr: "127.0.0.1:0", HandlerPath: handlerBinary, Output: ts.out, RecordRequests: true,
			DisableTimers: true, StopTimeout: 10 * time.Second,
			Env: []string{
				config.AuditContainer + "=" + ts.audit,
				config.LocksContainer + "=" + ts.locks,
				config.SupportEnabled + "=false",
				config.ShutdownTimeout + "=5s",
			},
		},
		AzuriteURL: azuritetest.URL(t),
	}
	if tune != nil {
		tune(&opts)
	}
	// The handler makes missing containers in the background; a test that invokes it at once
	// must not race that, so its own containers are made first.
	blobs := azuritetest.Client(t)
	for _, name := range []string{ts.audit, ts.locks} {
		if _, err := blobs.CreateContainer(t.Context(), name, nil); err != nil {
			t.Fatal(err)
		}
	}
	st, err := StartStack(t.Context(), opts)
	if err != nil {
		t.Fatalf("start stack: %v\n%s", err, ts.out.String())
	}
	ts.Stack = st
	ts.pids = append(ts.pids, st.Host.Child().PID())
	t.Cleanup(func() {
		if err := st.Stop(context.Background()); err != nil {
			t.Errorf("stop: %v", err)
		}
		if c := st.Host.Child(); c != nil {
			ts.pids = append(ts.pids, c.PID())
		}
		for _, pid := range ts.pids {
			if pid != 0 && processAlive(pid) {
				t.Errorf("handler process %d still runs after Stop", pid)
			}
		}
		if t.Failed() {
			t.Logf("host output:\n%s", ts.out.String())
		}
	})
	return ts
}

func (ts *testStack) do(t *testing.T, method, path string, header http.Header, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, ts.Host.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// waitInvocation waits for a finished invocation that satisfies match.
func (ts *testStack) waitInvocation(t *testing.T, within time.Duration, match func(Invocation) bool) Invocation {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, inv := range ts.Host.Invocations(0) {
			if match(inv) {
				return inv
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching invocation within %s; have %+v", within, summarize(ts.Host.Invocations(0)))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func summarize(invs []Invocation) []string {
	var out []string
	for _, i := range invs {
		out = append(out, fmt.Sprintf("%d %s dc=%d pid=%d %d %s %s", i.Seq, i.Function, i.DeliveryCount, i.HandlerPID, i.Status, i.Outcome, i.Error))
	}
	return out
}

// crashEvent is the foundation's Resource Health fixture, retargeted at a VM of the default fleet.
func crashEvent(t *testing.T, fixture, vmID, eventID string) []byte {
	t.Helper()
	b := readFile(t, filepath.Join(hostFixtures, "events", fixture))
	const fixtureVM = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-erp/providers/Microsoft.Compute/virtualMachines/erp-app-01"
	s := strings.ReplaceAll(string(b), fixtureVM, vmID)
	s = strings.ReplaceAll(s, "/subscriptions/11111111-2222-3333-4444-555555555555", "/subscriptions/"+azsim.DefaultFleet().SubscriptionID)
	for _, id := range []string{"6d1c2b7e-3f4a-4b8e-9a51-2f0c7d9e1a43", "0a7f5e21-9c3d-4e6b-8f12-7b4a3c2d1e90"} {
		s = strings.ReplaceAll(s, id, eventID)
	}
	return []byte(s)
}

func TestWebhookHandshakes(t *testing.T) {
	t.Parallel()
	ts := startStack(t, nil)
	const hook = EventGridPath + "?functionName=HealthAlert"
	validation := readFile(t, filepath.Join(hostFixtures, "events", "subscription-validation.eventgrid.json"))
	events, err := hostproto.ParseEvents(validation)
	if err != nil {
		t.Fatal(err)
	}
	code, ok := hostproto.IsSubscriptionValidation(events[0])
	if !ok {
		t.Fatal("fixture is not a validation event")
	}

	t.Run("event grid subscription validation", func(t *testing.T) {
		resp, body := ts.do(t, http.MethodPost, hook, http.Header{"Aeg-Event-Type": {"SubscriptionValidation"}}, validation)
		var got map[string]string
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil || got["validationResponse"] != code {
			t.Fatalf("%s %s", resp.Status, body)
		}
	})
	t.Run("validation without header", func(t *testing.T) {
		resp, body := ts.do(t, http.MethodPost, hook, nil, validation)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), code) {
			t.Fatalf("%s %s", resp.Status, body)
		}
	})
	t.Run("cloudevents abuse protection", func(t *testing.T) {
		resp, _ := ts.do(t, http.MethodOptions, hook, http.Header{
			"Webhook-Request-Origin": {"eventgrid.azure.net"}, "Webhook-Request-Rate": {"120"}}, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("WebHook-Allowed-Origin") != "eventgrid.azure.net" ||
			resp.Header.Get("WebHook-Allowed-Rate") == "" {
			t.Fatalf("%s %v", resp.Status, resp.Header)
		}
	})
	for _, tc := range []struct {
		name, method, path string
		header             http.Header
		body               string
		status             int
	}{
		{"options without origin", http.MethodOptions, hook, nil, "", http.StatusBadRequest},
		{"unknown function", http.MethodPost, EventGridPath + "?functionName=Nope", nil, "[]", http.StatusNotFound},
		{"not an event grid function", http.MethodPost, EventGridPath + "?functionName=Snapshot", nil, "[]", http.StatusNotFound},
		{"malformed events", http.MethodPost, hook, http.Header{"Aeg-Event-Type": {"Notification"}}, `[{"id":1}]`, http.StatusBadRequest},
		{"validation without code", http.MethodPost, hook, http.Header{"Aeg-Event-Type": {"SubscriptionValidation"}},
			`[{"id":"1","eventType":"x","subject":"s","eventTime":"2026-01-01T00:00:00Z","data":{}}]`, http.StatusBadRequest},
		{"unsubscribe", http.MethodPost, hook, http.Header{"Aeg-Event-Type": {"Unsubscribe"}}, "", http.StatusAccepted},
		{"unknown event type header", http.MethodPost, hook, http.Header{"Aeg-Event-Type": {"Other"}}, "[]", http.StatusBadRequest},
		{"get", http.MethodGet, hook, nil, "", http.StatusMethodNotAllowed},
		{"too large", http.MethodPost, hook, nil, "[" + strings.Repeat(" ", hostproto.MaxBody) + "]", http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.do(t, tc.method, tc.path, tc.header, []byte(tc.body))
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s, want %d", resp.Status, body, tc.status)
			}
		})
	}
	if n := len(ts.Host.Invocations(0)); n != 0 {
		t.Fatalf("handshakes and refusals invoked the handler %d times", n)
	}
}

func TestAlertOpensIncidentAndDeliversSnapshot(t *testing.T) {
	t.Parallel()
	ts := startStack(t, nil)
	fleet := azsim.DefaultFleet()
	cases := []struct {
		name, fixture, vm, eventID string
		header                     http.Header
	}{
		{"event grid schema", "resource-annotated-crashed.eventgrid.json", fleet.VMID("app-web-01"), "11111111-aaaa-4bbb-8ccc-000000000001", http.Header{"Aeg-Event-Type": {"Notification"}}},
		{"cloudevents", "resource-annotated-crashed.cloudevent.json", fleet.VMID("app-sql-01"), "11111111-aaaa-4bbb-8ccc-000000000002", http.Header{"Content-Type": {"application/cloudevents+json; charset=utf-8"}}},
	}
	blobs := azuritetest.Client(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := crashEvent(t, tc.fixture, tc.vm, tc.eventID)
			resp, body := ts.do(t, http.MethodPost, EventGridPath+"?functionName=HealthAlert", tc.header, ev)
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("webhook: %s %s", resp.Status, body)
			}
			alert := ts.waitInvocation(t, 10*time.Second, func(i Invocation) bool { return i.EventID == tc.eventID })
			if alert.Outcome != OutcomeSucceeded || alert.Function != "HealthAlert" {
				t.Fatalf("HealthAlert invocation %+v", alert)
			}
			// The payload the handler got is the host's: Data.event and Metadata.data.
			req, err := hostproto.DecodeRequest(bytes.NewReader(alert.Request))
			if err != nil {
				t.Fatal(err)
			}
			if evs, err := req.Events("event"); err != nil || len(evs) != 1 || evs[0].ID != tc.eventID || req.Sys().MethodName != "HealthAlert" {
				t.Fatalf("event invocation: %v %+v", err, evs)
			}
			if _, ok := req.Metadata["data"]; !ok {
				t.Fatal("Metadata.data missing")
			}

			snap := ts.waitInvocation(t, 10*time.Second, func(i Invocation) bool {
				return i.Function == "Snapshot" && i.DeliveryCount == 1 && strings.Contains(string(i.Request), tc.eventID)
			})
			if snap.Queue != "snapshot" || snap.Stage != string(incident.StageSnapshot) || !incident.ValidID(snap.IncidentID) ||
				snap.MessageID != incident.MessageID(snap.IncidentID, incident.StageSnapshot, 0) || snap.Status == 0 {
				t.Fatalf("snapshot delivery %+v", snap)
			}
			checkServiceBusShape(t, snap.Request, snap.IncidentID, tc.vm)

			// The audit trail of the incident is in Azurite.
			blob := blobs.ServiceClient().NewContainerClient(ts.audit).NewBlobClient("incidents/" + snap.IncidentID + ".jsonl")
			props, err := blob.GetProperties(t.Context(), nil)
			if err != nil {
				t.Fatalf("audit blob: %v", err)
			}
			if props.ContentLength == nil || *props.ContentLength == 0 {
				t.Fatal("audit blob is empty")
			}
		})
	}
	st := ts.Host.Status()
	if q := st.Queues["snapshot"]; q.Sent != 2 || q.Deliveries < 2 {
		t.Fatalf("snapshot queue %+v", q)
	}
}

// checkServiceBusShape checks a Service Bus invocation against the host's quirks.
func checkServiceBusShape(t *testing.T, payload []byte, incidentID, vm string) {
	t.Helper()
	var inv struct {
		Data     map[string]json.RawMessage
		Metadata map[string]json.RawMessage
	}
	if err := json.Unmarshal(payload, &inv); err != nil {
		t.Fatal(err)
	}
	var once, body string
	if json.Unmarshal(inv.Data["message"], &once) != nil || json.Unmarshal([]byte(once), &body) != nil {
		t.Fatalf("Data.message is not the body encoded twice: %.200s", inv.Data["message"])
	}
	var msg incident.Message
	if err := json.Unmarshal([]byte(body), &msg); err != nil || msg.IncidentID != incidentID || !strings.EqualFold(msg.VMResourceID, vm) {
		t.Fatalf("body %s: %v", body, err)
	}
	for key, want := range map[string]string{
		"DeliveryCount": `"1"`,
		"MessageId":     string(jsonString(string(jsonString(incident.MessageID(incidentID, incident.StageSnapshot, 0))))),
		"ContentType":   `"\"application/json\""`,
		"ExpiresAtUtc":  `"9999-12-31T23:59:59"`,
		"incidentId":    string(jsonString(string(jsonString(incidentID)))),
		"version":       `"1"`,
		"dryRun":        `"false"`,
	} {
		if got := string(inv.Metadata[key]); got != want {
			t.Errorf("Metadata.%s = %s, want %s", key, got, want)
		}
	}
	for _, key := range []string{"LockToken", "SequenceNumber", "EnqueuedTimeUtc", "ApplicationProperties", "UserProperties", "trigger", "artifacts", "sys"} {
		if _, ok := inv.Metadata[key]; !ok {
			t.Errorf("Metadata.%s missing", key)
		}
	}
	if !bytes.HasPrefix(inv.Metadata["ApplicationProperties"], []byte("{")) || !bytes.HasPrefix(inv.Metadata["trigger"], []byte("{")) {
		t.Errorf("ApplicationProperties %s, trigger %s: want objects", inv.Metadata["ApplicationProperties"], inv.Metadata["trigger"])
	}
	req, err := hostproto.DecodeRequest(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := req.ServiceBus("message")
	if err != nil || sb.DeliveryCount != 1 || sb.MessageID != incident.MessageID(incidentID, incident.StageSnapshot, 0) || req.Sys().MethodName != "Snapshot" {
		t.Fatalf("hostproto reads %+v, %v", sb, err)
	}
}

func TestAPIForwarding(t *testing.T) {
	t.Parallel()
	ts := startStack(t, nil)
	vm := azsim.DefaultFleet().VMID("app-api-01")
	json := http.Header{"Content-Type": {"application/json"}}
	cases := []struct {
		name, method, path string
		header             http.Header
		body               string
		status             int
		contentType        string
		detail             string
	}{
		{"unknown incident, from the handler", http.MethodGet, "/api/remediations/inc-20261120-031407-7f3c", nil, "", 404, "application/problem+json", "no incident"},
		{"malformed id, from the handler", http.MethodGet, "/api/remediations/nope", nil, "", 404, "application/problem+json", "incident ids look like"},
		{"malformed body", http.MethodPost, "/api/remediations", json, `{"vmResourceId":`, 400, "application/problem+json", "not valid JSON"},
		{"header forwarded", http.MethodPost, "/api/remediations", http.Header{"Content-Type": {"text/plain"}}, `{}`, 415, "application/problem+json", "application/json"},
		{"query forwarded", http.MethodGet, "/api/remediations?color=red", nil, "", 400, "application/problem+json", `unknown query parameter`},
		{"list", http.MethodGet, "/api/remediations?vm=" + vm, nil, "", 200, "application/json", `"incidents"`},
		{"create", http.MethodPost, "/api/remediations", json, `{"vmResourceId":"` + vm + `","reason":"test","dryRun":true}`, 202, "application/json", `"statusUrl"`},
		{"method not declared", http.MethodDelete, "/api/remediations", nil, "", 404, "application/problem+json", "no function takes DELETE"},
		{"route not declared", http.MethodGet, "/api/other", nil, "", 404, "application/problem+json", "no function takes GET"},
		{"rollback of unknown incident", http.MethodPost, "/api/remediations/inc-20261120-031407-7f3c/rollback", nil, "", 404, "application/problem+json", "no incident"},
		{"outside api", http.MethodGet, "/Snapshot", nil, "", 404, "application/problem+json", "nothing at"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := ts.do(t, tc.method, tc.path, tc.header, []byte(tc.body))
			if resp.StatusCode != tc.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.contentType) ||
				!strings.Contains(string(body), tc.detail) {
				t.Fatalf("%s %s (Content-Type %s), want %d %s with %q", resp.Status, body, resp.Header.Get("Content-Type"), tc.status, tc.contentType, tc.detail)
			}
		})
	}
	// The incident the API opened sends its snapshot message through the local bus.
	ts.waitInvocation(t, 10*time.Second, func(i Invocation) bool {
		return i.Function == "Snapshot" && strings.Contains(string(i.Request), "app-api-01")
	})
	var forwarded int
	for _, i := range ts.Host.Invocations(0) {
		if i.Path != "" {
			forwarded++
		}
	}
	if forwarded != 8 { // every case the handler answered
		t.Fatalf("%d forwarded requests recorded, want 8", forwarded)
	}
}

func TestHandlerPortHonoured(t *testing.T) {
	t.Parallel()
	port := freeTestPort(t)
	ts := startStack(t, func(o *StackOptions) { o.Host.HandlerPort = port })
	if got := ts.Host.Child().Port(); got != port {
		t.Fatalf("handler port %d, want %d", got, port)
	}
	// An outside test posts a host-shaped invocation to the handler directly.
	fixture := readFile(t, filepath.Join(hostFixtures, "invocations", "servicebus-plaintext.invocation.json"))
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/Failed", port), "application/json", bytes.NewReader(fixture))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out hostproto.Response
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || len(out.Logs) == 0 {
		t.Fatalf("direct invocation: %s %+v %v", resp.Status, out, err)
	}
	if st := ts.Host.Status(); st.Handler.Port != port || !st.Handler.Ready {
		t.Fatalf("status %+v", st.Handler)
	}
}

func TestBusEndpoint(t *testing.T) {
	t.Parallel()
	app, err := LoadApp(appDir)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{App: app, Addr: "127.0.0.1:0", HandlerPath: handlerBinary, Output: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h.Handler()}
	go func() { _ = srv.Serve(h.ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	sender, err := bus.NewLocal(h.BusURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := incident.Message{IncidentID: "inc-20261120-031407-7f3c", VMResourceID: azsim.DefaultFleet().VMID("app-web-01"),
		Stage: incident.StageHarvestDump, Trigger: incident.Trigger{Kind: incident.TriggerAlert}}
	later := time.Now().Add(time.Hour)
	for range 2 { // the resend is absorbed
		if err := sender.Send(t.Context(), msg, bus.SendOptions{ScheduledAt: later}); err != nil {
			t.Fatal(err)
		}
	}
	q := h.Broker().Stats()["harvest-dump"]
	if q.Scheduled != 1 || q.Duplicates != 1 || q.Sent != 1 {
		t.Fatalf("harvest-dump queue %+v", q)
	}
	peek := h.Broker().Peek("harvest-dump")
	if len(peek) != 1 || peek[0].MessageID != incident.MessageID(msg.IncidentID, msg.Stage, 0) ||
		peek[0].ApplicationProperties["stage"] != "harvest-dump" || peek[0].ContentType != "application/json" {
		t.Fatalf("queued %+v", peek)
	}

	post := func(body string) (int, string) {
		resp, err := http.Post(h.BusURL()+bus.LocalPath, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, body string
		status     int
		detail     string
	}{
		{"not json", `{`, 400, "not a bus envelope"},
		{"no queue", `{"messageId":"x","body":{}}`, 400, "needs queue"},
		{"unknown queue", `{"queue":"nope","messageId":"x","body":{}}`, 404, "snapshot"},
		{"too large", `{"queue":"snapshot","messageId":"x","body":"` + strings.Repeat("a", queue256k) + `"}`, 413, ""},
		{"accepted", `{"queue":"snapshot","messageId":"y","body":{"a":1}}`, 202, `"sequenceNumber"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(tc.body)
			if status != tc.status || !strings.Contains(body, tc.detail) {
				t.Fatalf("%d %s, want %d with %q", status, body, tc.status, tc.detail)
			}
		})
	}
	resp, err := http.Get(h.URL() + StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Queues["snapshot"].Active != 1 || st.Idle {
		t.Fatalf("status %+v %v", st, err)
	}
}

const queue256k = 256 << 10

func TestTimerRunsJanitor(t *testing.T) {
	t.Parallel()
	// 15 minutes at a time scale of 0.001 is 0.9 s.
	ts := startStack(t, func(o *StackOptions) { o.Host.DisableTimers = false; o.Host.TimeScale = 0.001 })
	first := ts.waitInvocation(t, 10*time.Second, func(i Invocation) bool { return i.Function == "Janitor" })
	if first.Status == 0 {
		t.Fatalf("janitor invocation got no answer: %+v", first)
	}
	req, err := hostproto.DecodeRequest(bytes.NewReader(first.Request))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := req.Timer("timer")
	if err != nil || tm.IsPastDue || tm.Next.IsZero() || !tm.Last.IsZero() || req.Sys().MethodName != "Janitor" {
		t.Fatalf("first timer %+v, %v", tm, err)
	}
	second := ts.waitInvocation(t, 10*time.Second, func(i Invocation) bool { return i.Function == "Janitor" && i.Seq > first.Seq })
	req, err = hostproto.DecodeRequest(bytes.NewReader(second.Request))
	if err != nil {
		t.Fatal(err)
	}
	tm2, err := req.Timer("timer")
	if err != nil || tm2.Last.IsZero() || !tm2.Next.After(tm.Next) {
		t.Fatalf("second timer %+v after %+v, %v", tm2, tm, err)
	}
	if gap := second.Start.Sub(first.Start); gap < 500*time.Millisecond || gap > 3*time.Second {
		t.Fatalf("runs %s apart, want about 0.9s", gap)
	}

	// The admin endpoint runs timers, and only timers.
	before := ts.Host.Status().Timers["Janitor"].Runs
	if resp, body := ts.do(t, http.MethodPost, AdminPath+"Janitor", nil, []byte(`{"input":""}`)); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("admin: %s %s", resp.Status, body)
	}
	if resp, _ := ts.do(t, http.MethodPost, AdminPath+"Snapshot", nil, nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("admin run of a queue function: %s", resp.Status)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ts.Host.Status().Timers["Janitor"].Runs <= before {
		if time.Now().After(deadline) {
			t.Fatal("admin run did not happen")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStackStartsAndStopsAzurite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own Azurite")
	}
	t.Parallel()
	out := &syncBuffer{}
	st, err := StartStack(t.Context(), StackOptions{Host: Options{AppDir: appDir, Addr: "127.0.0.1:0",
		HandlerPath: handlerBinary, Output: out, DisableTimers: true, Env: []string{config.SupportEnabled + "=false"}}})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Cleanup(func() { _ = st.Stop(context.Background()) }) // a second Stop is harmless
	pid := st.Host.Child().PID()
	desc := st.Describe()
	for _, want := range []string{st.Host.URL(), st.SimURL, st.AzuriteURL, "functionName=HealthAlert"} {
		if !strings.Contains(desc, want) {
			t.Errorf("description lacks %s:\n%s", want, desc)
		}
	}
	// The simulator answers ARM requests on its port.
	resp, err := http.Get(st.SimURL + "/subscriptions/" + st.Sim.SubscriptionID() + "/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/nope?api-version=2024-11-01")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("simulator: %s", resp.Status)
	}
	azuriteAddr := strings.TrimPrefix(strings.TrimSuffix(st.AzuriteURL, "/devstoreaccount1"), "http://")
	if err := st.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for name, addr := range map[string]string{"host": strings.TrimPrefix(st.Host.URL(), "http://"),
		"simulator": strings.TrimPrefix(st.SimURL, "http://"), "azurite": azuriteAddr} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still listens on %s after Stop", name, addr)
		}
	}
	if processAlive(pid) {
		t.Errorf("handler %d still runs", pid)
	}
}

func freeTestPort(t *testing.T) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
