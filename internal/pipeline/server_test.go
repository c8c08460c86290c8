package pipeline_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/server"
)

// TestEndToEndThroughServer runs the patch, reboot, harvest, ticket path through the custom
// handler's HTTP surface: each stage message is POSTed to /<FunctionName> in the Functions host's
// Service Bus invocation shape (the body JSON-encoded twice, metadata integers and MessageId as
// strings), a 5xx answer is redelivered, and the Janitor runs from a timer invocation.
func TestEndToEndThroughServer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	p := e.pipeline()
	srv := httptest.NewServer((&server.Server{Trail: e.trail, Intake: e.intake, Stages: p.Stages(), Janitor: p.Janitor(),
		Log: p.Log}).Handler())
	defer srv.Close()
	id := e.open("app-web-01", false)
	for i := 0; ; i++ {
		if i > 50 {
			t.Fatal("did not settle")
		}
		d, ok := e.bus.pop()
		if !ok {
			break
		}
		status := invoke(t, srv.URL, d)
		switch {
		case status == http.StatusOK:
		case status >= 500 && d.count < maxDeliveries:
			e.bus.redeliver(d)
		default:
			t.Fatalf("%s answered %d", d.queue, status)
		}
		if d.queue == incident.StageReattachReboot {
			e.awaitStart()
		}
	}
	timer := []byte(`{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"IsPastDue":false}},"Metadata":{"sys":{"MethodName":"Janitor"}}}`)
	resp, err := http.Post(srv.URL+"/Janitor", "application/json", bytes.NewReader(timer))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Janitor answered %s", resp.Status)
	}
	v := e.checkClean(id)
	if v.State != incident.StateClosed || v.Outcome != incident.OutcomeTicketed || len(e.sim.State().Tickets()) != 1 {
		t.Errorf("incident %s/%s, %d tickets", v.State, v.Outcome, len(e.sim.State().Tickets()))
	}
}

// invoke POSTs one delivery as the Functions host does and returns the status.
func invoke(t *testing.T, base string, d delivered) int {
	t.Helper()
	body, _ := json.Marshal(d.msg)
	once, _ := json.Marshal(string(body))
	twice, _ := json.Marshal(string(once))
	quote := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	inv := map[string]any{
		"Data": map[string]json.RawMessage{"message": twice},
		"Metadata": map[string]any{
			"DeliveryCount": strconv.Itoa(d.count), "MessageId": quote(d.id), "ContentType": quote("application/json"),
			"EnqueuedTimeUtc": "2026-11-20T03:14:10", "sys": map[string]string{"MethodName": d.queue.Function()},
		},
	}
	payload, _ := json.Marshal(inv)
	resp, err := http.Post(base+"/"+d.queue.Function(), "application/json", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}
