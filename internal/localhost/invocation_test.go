package localhost

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/localhost/queue"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// hostFixtures are the foundation's golden payloads in the real host's shape.
const hostFixtures = "../hostproto/testdata"

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeAny(t testing.TB, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// sameJSON fails unless a and b hold the same JSON value.
func sameJSON(t testing.TB, got, want []byte) {
	t.Helper()
	if g, w := decodeAny(t, got), decodeAny(t, want); !reflect.DeepEqual(g, w) {
		var gi, wi bytes.Buffer
		_ = json.Indent(&gi, got, "", "  ")
		_ = json.Indent(&wi, want, "", "  ")
		t.Fatalf("payload differs from the host's\n--- got\n%s\n--- want\n%s", gi.String(), wi.String())
	}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t testing.TB, name string, got []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, got, "", "  "); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, got)
	}
	buf.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want := readFile(t, path); !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("%s differs; run go test -update\n--- got\n%s\n--- want\n%s", path, buf.Bytes(), want)
	}
}

// fixtureSys reads Metadata.sys of a host fixture.
func fixtureSys(t testing.TB, fixture []byte) Sys {
	t.Helper()
	req, err := hostproto.DecodeRequest(bytes.NewReader(fixture))
	if err != nil {
		t.Fatal(err)
	}
	s := req.Sys()
	return Sys{MethodName: s.MethodName, UtcNow: s.UtcNow, RandGuid: s.RandGuid}
}

func TestEventGridInvocationMatchesHost(t *testing.T) {
	t.Parallel()
	cases := []struct{ event, fixture string }{
		{"resource-annotated-crashed.eventgrid.json", "eventgrid-healthalert.invocation.json"},
		{"resource-annotated-crashed.cloudevent.json", "eventgrid-cloudevent.invocation.json"},
	}
	for _, tc := range cases {
		t.Run(tc.event, func(t *testing.T) {
			t.Parallel()
			want := readFile(t, filepath.Join(hostFixtures, "invocations", tc.fixture))
			events, err := splitEvents(readFile(t, filepath.Join(hostFixtures, "events", tc.event)))
			if err != nil || len(events) != 1 {
				t.Fatalf("events %d, %v", len(events), err)
			}
			got, err := EventGridInvocation("event", events[0], fixtureSys(t, want))
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, got, want)
			golden(t, tc.fixture, got)

			req, err := hostproto.DecodeRequest(bytes.NewReader(got))
			if err != nil {
				t.Fatal(err)
			}
			evs, err := req.Events("event")
			if err != nil || len(evs) != 1 || evs[0].Type != "Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated" {
				t.Fatalf("decoded %+v, %v", evs, err)
			}
		})
	}
}

func TestEventGridInvocationRejectsNonObject(t *testing.T) {
	t.Parallel()
	for _, ev := range []string{`[]`, `"x"`, `{`, ``} {
		if _, err := EventGridInvocation("event", []byte(ev), Sys{}); err == nil {
			t.Errorf("event %q accepted", ev)
		}
	}
}

func TestServiceBusInvocationMatchesHost(t *testing.T) {
	t.Parallel()
	want := readFile(t, filepath.Join(hostFixtures, "invocations", "servicebus-snapshot.invocation.json"))
	req, err := hostproto.DecodeRequest(bytes.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	sb, err := req.ServiceBus("message")
	if err != nil {
		t.Fatal(err)
	}
	msg := queue.Message{
		MessageID: sb.MessageID, ContentType: sb.ContentType, Body: sb.Body,
		ApplicationProperties: sb.ApplicationProperties, SequenceNumber: sb.SequenceNumber,
		EnqueuedTime: sb.EnqueuedTime, DeliveryCount: sb.DeliveryCount, LockToken: sb.LockToken,
	}
	got, err := ServiceBusInvocation("message", "", msg, fixtureSys(t, want))
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, got, want)
	golden(t, "servicebus-snapshot.invocation.json", got)

	// The same bytes decode back to the same message.
	req2, err := hostproto.DecodeRequest(bytes.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	sb2, err := req2.ServiceBus("message")
	if err != nil {
		t.Fatal(err)
	}
	var m incident.Message
	if err := json.Unmarshal(sb2.Body, &m); err != nil || m.Stage != incident.StageSnapshot {
		t.Fatalf("body %s: %v", sb2.Body, err)
	}
	if sb2.MessageID != msg.MessageID || sb2.DeliveryCount != 1 || sb2.LockToken != msg.LockToken ||
		sb2.SequenceNumber != 14 || !sb2.EnqueuedTime.Equal(msg.EnqueuedTime) || sb2.ContentType != "application/json" {
		t.Fatalf("decoded %+v", sb2)
	}
}

func TestServiceBusInvocationQuirks(t *testing.T) {
	t.Parallel()
	body := `{"incidentId":"inc-1","count":3,"ok":true,"nested":{"a":[1,2]},"none":null,"messageid":"forged","deliveryCount":{"x":1},"Sys":"body"}`
	msg := queue.Message{
		MessageID: "real-id", ContentType: "application/json", Body: []byte(body), SequenceNumber: 7,
		EnqueuedTime: time.Date(2026, 11, 20, 3, 14, 10, 120_000_000, time.UTC), DeliveryCount: 2,
		LockToken: "lock", CorrelationID: "inc-1", DeadLetterSource: "snapshot",
		ApplicationProperties: map[string]string{"stage": "snapshot", "DeadLetterReason": queue.ReasonMaxDeliveryCount},
	}
	sys := Sys{MethodName: "Failed", UtcNow: time.Date(2026, 11, 20, 3, 14, 11, 0, time.UTC), RandGuid: "g"}
	got, err := ServiceBusInvocation("message", "", msg, sys)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "servicebus-quirks.invocation.json", got)
	var inv struct {
		Data     map[string]json.RawMessage
		Metadata map[string]json.RawMessage
	}
	if err := json.Unmarshal(got, &inv); err != nil {
		t.Fatal(err)
	}
	var once, twice string
	if err := json.Unmarshal(inv.Data["message"], &once); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(once), &twice); err != nil || twice != body {
		t.Fatalf("Data.message is not the body encoded twice: %s", inv.Data["message"])
	}
	for key, want := range map[string]string{
		"DeliveryCount":    `{"x":1}`,      // shadowed by the body's deliveryCount, key spelling kept
		"MessageId":        `"\"forged\""`, // shadowed by messageid
		"SequenceNumber":   `"7"`,          // integers as strings
		"LockToken":        `"\"lock\""`,   // strings quoted
		"EnqueuedTimeUtc":  `"2026-11-20T03:14:10.12"`,
		"DeadLetterSource": `"\"snapshot\""`,
		"count":            `"3"`,
		"ok":               `"true"`,
		"incidentId":       `"\"inc-1\""`,
		"nested":           `{"a":[1,2]}`,
		"none":             `null`,
		"sys":              `{"MethodName":"Failed","UtcNow":"2026-11-20T03:14:11Z","RandGuid":"g"}`,
	} {
		if g := string(inv.Metadata[key]); g != want {
			t.Errorf("Metadata.%s = %s, want %s", key, g, want)
		}
	}
	for _, k := range []string{"messageid", "deliveryCount", "Sys"} {
		if _, dup := inv.Metadata[k]; dup {
			t.Errorf("Metadata has both %s and the host's key", k)
		}
	}
	if !strings.Contains(string(inv.Metadata["ApplicationProperties"]), `"DeadLetterReason":"MaxDeliveryCountExceeded"`) {
		t.Errorf("ApplicationProperties %s", inv.Metadata["ApplicationProperties"])
	}

	bin, err := ServiceBusInvocation("message", "binary", msg, sys)
	if err != nil {
		t.Fatal(err)
	}
	req, err := hostproto.DecodeRequest(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := req.Payload("message"); err != nil || string(p) != body {
		t.Fatalf("binary payload %s, %v", p, err)
	}
}

func TestTimerInvocationMatchesHost(t *testing.T) {
	t.Parallel()
	want := readFile(t, filepath.Join(hostFixtures, "invocations", "timer-janitor.invocation.json"))
	status := &TimerStatus{
		Last:        time.Date(2026, 11, 20, 3, 0, 0, 1_400_000, time.UTC),
		Next:        time.Date(2026, 11, 20, 3, 15, 0, 0, time.UTC),
		LastUpdated: time.Date(2026, 11, 20, 3, 0, 0, 1_400_000, time.UTC),
	}
	got := TimerInvocation("timer", status, false, fixtureSys(t, want))
	sameJSON(t, got, want)
	golden(t, "timer-janitor.invocation.json", got)

	first := TimerInvocation("timer", nil, true, Sys{MethodName: "Janitor", UtcNow: status.Next, RandGuid: "g"})
	req, err := hostproto.DecodeRequest(bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := req.Timer("timer")
	if err != nil || !tm.IsPastDue || !tm.Last.IsZero() {
		t.Fatalf("timer %+v, %v", tm, err)
	}
}

func BenchmarkServiceBusInvocation(b *testing.B) {
	fixture := readFile(b, filepath.Join(hostFixtures, "invocations", "servicebus-snapshot.invocation.json"))
	req, err := hostproto.DecodeRequest(bytes.NewReader(fixture))
	if err != nil {
		b.Fatal(err)
	}
	sb, err := req.ServiceBus("message")
	if err != nil {
		b.Fatal(err)
	}
	msg := queue.Message{MessageID: sb.MessageID, ContentType: sb.ContentType, Body: sb.Body,
		ApplicationProperties: sb.ApplicationProperties, SequenceNumber: 14, EnqueuedTime: time.Now(), DeliveryCount: 1, LockToken: "t"}
	sys := Sys{MethodName: "Snapshot", UtcNow: time.Now(), RandGuid: "g"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ServiceBusInvocation("message", "", msg, sys); err != nil {
			b.Fatal(err)
		}
	}
}
