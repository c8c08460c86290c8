package hostproto

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
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata file name, or rewrites it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(name, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("read golden (run with -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the decoded result (run with -update if the change is intended)\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// decodedMessage is ServiceBusMessage with the body shown as JSON rather than base64.
type decodedMessage struct {
	Body                  json.RawMessage
	MessageID             string
	DeliveryCount         int
	SequenceNumber        int64
	EnqueuedTime          time.Time
	ContentType           string
	ApplicationProperties map[string]string
	LockToken             string
	Shadowed              []string `json:",omitempty"`
}

// decoded is what a golden file holds for one invocation.
type decoded struct {
	Sys        Sys
	ServiceBus *decodedMessage `json:",omitempty"`
	Events     []Event         `json:",omitempty"`
	Timer      *Timer          `json:",omitempty"`
	Error      string          `json:",omitempty"`
}

func decodeFile(t *testing.T, path string) decoded {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req, err := DecodeRequest(f)
	if err != nil {
		t.Fatalf("DecodeRequest: %v", err)
	}
	out := decoded{Sys: req.Sys()}
	name := filepath.Base(path)
	switch {
	case strings.HasPrefix(name, "servicebus-"):
		m, err := req.ServiceBus("message")
		if err != nil {
			out.Error = err.Error()
		}
		out.ServiceBus = &decodedMessage{
			Body: m.Body, MessageID: m.MessageID, DeliveryCount: m.DeliveryCount,
			SequenceNumber: m.SequenceNumber, EnqueuedTime: m.EnqueuedTime, ContentType: m.ContentType,
			ApplicationProperties: m.ApplicationProperties, LockToken: m.LockToken, Shadowed: m.Shadowed,
		}
	case strings.HasPrefix(name, "eventgrid-"):
		out.Events, err = req.Events("event")
		if err != nil {
			out.Error = err.Error()
		}
	case strings.HasPrefix(name, "timer-"):
		tm, err := req.Timer("timer")
		if err != nil {
			out.Error = err.Error()
		}
		out.Timer = &tm
	default:
		t.Fatalf("%s: name must start with servicebus-, eventgrid- or timer-", name)
	}
	return out
}

func marshalGolden(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestInvocationsGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/invocations/*.invocation.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no invocation files: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			got := decodeFile(t, path)
			golden(t, strings.TrimSuffix(path, ".json")+".golden", marshalGolden(t, got))
		})
	}
}

func TestEventsGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/events/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no event files: %v", err)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			body, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			events, err := ParseEvents(body)
			if err != nil {
				t.Fatalf("ParseEvents: %v", err)
			}
			golden(t, strings.TrimSuffix(path, ".json")+".golden", marshalGolden(t, events))
		})
	}
}

// TestQuirks states the decoded values the golden files hold for each host quirk, so a wrong
// golden file cannot be accepted by -update unnoticed.
func TestQuirks(t *testing.T) {
	stageBody := func(t *testing.T, body []byte) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("body is not a JSON object: %v: %s", err, body)
		}
		return m
	}
	cases := []struct {
		file      string
		messageID string
		delivery  int
		seq       int64
		enqueued  time.Time
		stage     string
		props     map[string]string
		shadowed  []string
	}{
		{"servicebus-snapshot", "inc-20261120-031407-7f3c:snapshot", 1, 14,
			time.Date(2026, 11, 20, 3, 14, 10, 0, time.UTC), "snapshot",
			map[string]string{"incidentId": "inc-20261120-031407-7f3c", "stage": "snapshot"}, nil},
		{"servicebus-once", "inc-20261120-031407-7f3c:rescue-attach", 3, 15,
			time.Date(2026, 11, 20, 3, 16, 42, 512000000, time.UTC), "rescue-attach",
			map[string]string{"incidentId": "inc-20261120-031407-7f3c", "stage": "rescue-attach", "attempt": "2", "dryRun": "false"}, nil},
		{"servicebus-object", "inc-20261120-031407-7f3c:offline-patch", 1, 16,
			time.Date(2026, 11, 20, 3, 21, 5, 0, time.UTC), "offline-patch",
			map[string]string{"incidentId": "inc-20261120-031407-7f3c", "stage": "offline-patch"}, nil},
		{"servicebus-binary", "inc-20261120-031407-7f3c:harvest-dump", 2, 27,
			time.Date(2026, 11, 20, 4, 2, 17, 0, time.UTC), "harvest-dump",
			map[string]string{"incidentId": "inc-20261120-031407-7f3c", "stage": "harvest-dump"}, nil},
		{"servicebus-shadowed", "forged-id", 0, 31,
			time.Date(2026, 11, 20, 5, 0, 1, 0, time.UTC), "failed",
			map[string]string{"incidentId": "inc-20261120-031407-7f3c", "stage": "failed", "DeadLetterReason": "MaxDeliveryCountExceeded"},
			[]string{"MessageId", "DeliveryCount", "EnqueuedTimeUtc", "ApplicationProperties"}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			f, err := os.Open("testdata/invocations/" + tc.file + ".invocation.json")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			req, err := DecodeRequest(f)
			if err != nil {
				t.Fatal(err)
			}
			m, err := req.ServiceBus("message")
			if err != nil {
				t.Fatal(err)
			}
			if m.MessageID != tc.messageID || m.DeliveryCount != tc.delivery || m.SequenceNumber != tc.seq {
				t.Errorf("MessageID, DeliveryCount, SequenceNumber = %q, %d, %d; want %q, %d, %d",
					m.MessageID, m.DeliveryCount, m.SequenceNumber, tc.messageID, tc.delivery, tc.seq)
			}
			if !m.EnqueuedTime.Equal(tc.enqueued) || m.EnqueuedTime.Location() != time.UTC {
				t.Errorf("EnqueuedTime = %v, want %v", m.EnqueuedTime, tc.enqueued)
			}
			if m.ContentType != "application/json" {
				t.Errorf("ContentType = %q, want application/json (the host's value)", m.ContentType)
			}
			if got := stageBody(t, m.Body)["stage"]; got != tc.stage {
				t.Errorf("body stage = %v, want %s", got, tc.stage)
			}
			if !mapsEqual(m.ApplicationProperties, tc.props) {
				t.Errorf("ApplicationProperties = %v, want %v", m.ApplicationProperties, tc.props)
			}
			if !slices.Equal(m.Shadowed, tc.shadowed) {
				t.Errorf("Shadowed = %v, want %v", m.Shadowed, tc.shadowed)
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestSys(t *testing.T) {
	t.Parallel()
	f, err := os.Open("testdata/invocations/timer-janitor.invocation.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req, err := DecodeRequest(f)
	if err != nil {
		t.Fatal(err)
	}
	want := Sys{MethodName: "Janitor", UtcNow: time.Date(2026, 11, 20, 3, 15, 0, 2100000, time.UTC), RandGuid: "c8b1e6f2-3d47-4a95-8e0c-6f2a9d1b7e34"}
	if got := req.Sys(); got != want {
		t.Errorf("Sys() = %+v, want %+v", got, want)
	}
	if got := (&Request{}).Sys(); got != (Sys{}) {
		t.Errorf("Sys() without metadata = %+v, want zero", got)
	}
}

func TestSubscriptionValidation(t *testing.T) {
	t.Parallel()
	body, err := os.ReadFile("testdata/events/subscription-validation.eventgrid.json")
	if err != nil {
		t.Fatal(err)
	}
	events, err := ParseEvents(body)
	if err != nil {
		t.Fatal(err)
	}
	code, ok := IsSubscriptionValidation(events[0])
	if !ok || code != "512d38b6-c7b8-40c8-89fe-f46f9e9622b6" {
		t.Errorf("IsSubscriptionValidation = %q, %v; want the validation code, true", code, ok)
	}
	crash, err := os.ReadFile("testdata/events/resource-annotated-crashed.eventgrid.json")
	if err != nil {
		t.Fatal(err)
	}
	events, err = ParseEvents(crash)
	if err != nil {
		t.Fatal(err)
	}
	if code, ok := IsSubscriptionValidation(events[0]); ok {
		t.Errorf("a Resource Health event is taken for a validation handshake (code %q)", code)
	}
	if _, ok := IsSubscriptionValidation(Event{Type: SubscriptionValidationEventType, Data: json.RawMessage(`{"validationCode":""}`)}); ok {
		t.Error("an empty validation code is accepted")
	}
}

func TestDecodeRequestBadInput(t *testing.T) {
	t.Parallel()
	big := append(append([]byte(`{"Data":{"message":"x"},"Metadata":{}}`), bytes.Repeat([]byte{' '}, MaxBody)...), '\n')
	exact := append([]byte(`{"Data":{}}`), bytes.Repeat([]byte{' '}, MaxBody-len(`{"Data":{}}`))...)
	cases := []struct {
		name string
		body io.Reader
		want error // nil: accepted
	}{
		{"not JSON", strings.NewReader(`{"Data":`), ErrBadRequest},
		{"empty", strings.NewReader(""), ErrBadRequest},
		{"array", strings.NewReader(`[{"Data":{}}]`), ErrBadRequest},
		{"string", strings.NewReader(`"{\"Data\":{}}"`), ErrBadRequest},
		{"missing Data", strings.NewReader(`{"Metadata":{}}`), ErrBadRequest},
		{"null Data", strings.NewReader(`{"Data":null}`), ErrBadRequest},
		{"Data array", strings.NewReader(`{"Data":[{"message":"x"}]}`), ErrBadRequest},
		{"Data string", strings.NewReader(`{"Data":"{}"}`), ErrBadRequest},
		{"Metadata array", strings.NewReader(`{"Data":{},"Metadata":[]}`), ErrBadRequest},
		{"trailing garbage", strings.NewReader(`{"Data":{}} {}`), ErrBadRequest},
		{"over 1 MiB", bytes.NewReader(big), ErrTooLarge},
		{"MaxBytesReader", http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(bytes.NewReader(big)), 1024), ErrTooLarge},
		{"exactly 1 MiB", bytes.NewReader(exact), nil},
		{"lower-case keys", strings.NewReader(`{"data":{"m":1},"metadata":null}`), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := DecodeRequest(tc.body)
			if tc.want == nil {
				if err != nil || req == nil || req.Data == nil {
					t.Fatalf("DecodeRequest = %v, %v; want a request", req, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeRequest error = %v, want %v", err, tc.want)
			}
			if req != nil {
				t.Errorf("DecodeRequest returned a request with error %v", err)
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestDecodeRequestReadError(t *testing.T) {
	t.Parallel()
	_, err := DecodeRequest(failingReader{})
	if err == nil || errors.Is(err, ErrBadRequest) || errors.Is(err, ErrTooLarge) {
		t.Fatalf("read failure = %v; want an error that is neither bad request nor too large", err)
	}
}

func mustDecode(t *testing.T, body string) *Request {
	t.Helper()
	req, err := DecodeRequest(strings.NewReader(body))
	if err != nil {
		t.Fatalf("DecodeRequest(%s): %v", body, err)
	}
	return req
}

func TestServiceBusBadInput(t *testing.T) {
	t.Parallel()
	deep := `{"a":1}`
	for range maxEncodingDepth + 1 {
		b, _ := json.Marshal(deep)
		deep = string(b)
	}
	cases := []struct {
		name    string
		body    string
		binding string
		wantID  string // metadata still decoded
	}{
		{"missing binding", `{"Data":{},"Metadata":{"MessageId":"\"m1\""}}`, "message", ""},
		{"number body", `{"Data":{"message":5},"Metadata":{"MessageId":"\"m1\""}}`, "message", "m1"},
		{"null body", `{"Data":{"message":null},"Metadata":{"MessageId":"\"m1\""}}`, "message", "m1"},
		{"bool body", `{"Data":{"message":true},"Metadata":{"MessageId":"\"m1\""}}`, "message", "m1"},
		{"empty string", `{"Data":{"message":""},"Metadata":{"MessageId":"\"m1\""}}`, "message", "m1"},
		{"string of a number", `{"Data":{"message":"\"12\""},"Metadata":{"MessageId":"m1"}}`, "message", "m1"},
		{"text", `{"Data":{"message":"hello"},"Metadata":{"MessageId":"m1"}}`, "message", "m1"},
		{"base64 of text", `{"Data":{"message":"aGVsbG8="},"Metadata":{"MessageId":"m1"}}`, "message", "m1"},
		{"too deep", `{"Data":{"message":` + deep + `},"Metadata":{"MessageId":"m1"}}`, "message", "m1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := mustDecode(t, tc.body)
			m, err := req.ServiceBus(tc.binding)
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("ServiceBus error = %v, want ErrBadRequest", err)
			}
			if m.Body != nil {
				t.Errorf("Body = %s, want none", m.Body)
			}
			if m.MessageID != tc.wantID {
				t.Errorf("MessageID = %q, want %q", m.MessageID, tc.wantID)
			}
		})
	}
}

func TestServiceBusMetadataShapes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		meta     string
		id       string
		delivery int
		seq      int64
		props    map[string]string
	}{
		{"numbers", `{"MessageId":"a","DeliveryCount":2,"SequenceNumber":9007199254740993}`, "a", 2, 9007199254740993, nil},
		{"strings", `{"MessageId":"\"a\"","DeliveryCount":"2","SequenceNumber":"7"}`, "a", 2, 7, nil},
		{"quoted strings", `{"MessageId":"\"\\\"a\\\"\"","DeliveryCount":"\"2\""}`, `"a"`, 2, 0, nil},
		{"float count", `{"DeliveryCount":2.0}`, "", 2, 0, nil},
		{"bad count", `{"DeliveryCount":"two","SequenceNumber":"1.5"}`, "", 0, 0, nil},
		{"negative count", `{"DeliveryCount":-1}`, "", 0, 0, nil},
		{"huge count", `{"DeliveryCount":"99999999999"}`, "", 0, 0, nil},
		{"case-insensitive keys", `{"messageid":"\"a\"","deliverycount":"4"}`, "a", 4, 0, nil},
		{"exact case first", `{"messageId":"\"lower\"","MessageId":"\"exact\""}`, "exact", 0, 0, nil},
		{"duplicate keys: first wins", `{"MessageId":"\"first\"","MessageId":"\"second\""}`, "first", 0, 0, nil},
		{"properties as string", `{"ApplicationProperties":"{\"k\":\"v\",\"n\":1,\"o\":{ \"x\" : [1, 2] },\"z\":null}"}`, "", 0, 0,
			map[string]string{"k": "v", "n": "1", "o": `{"x":[1,2]}`, "z": ""}},
		{"properties wrong type", `{"ApplicationProperties":[1],"UserProperties":{"u":"1"}}`, "", 0, 0, map[string]string{"u": "1"}},
		{"escaped keys", `{"Message\u0049d":"\"esc\""}`, "esc", 0, 0, nil},
		{"no metadata", `null`, "", 0, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := mustDecode(t, `{"Data":{"message":"{\"stage\":\"snapshot\"}"},"Metadata":`+tc.meta+`}`)
			m, err := req.ServiceBus("message")
			if err != nil {
				t.Fatal(err)
			}
			if m.MessageID != tc.id || m.DeliveryCount != tc.delivery || m.SequenceNumber != tc.seq {
				t.Errorf("got %q, %d, %d; want %q, %d, %d", m.MessageID, m.DeliveryCount, m.SequenceNumber, tc.id, tc.delivery, tc.seq)
			}
			if !mapsEqual(m.ApplicationProperties, tc.props) {
				t.Errorf("ApplicationProperties = %v, want %v", m.ApplicationProperties, tc.props)
			}
			if string(m.Body) != `{"stage":"snapshot"}` {
				t.Errorf("Body = %s", m.Body)
			}
		})
	}
}

func TestBindingNameCaseInsensitive(t *testing.T) {
	t.Parallel()
	req := mustDecode(t, `{"Data":{"Message":{"stage":"failed"}}}`)
	m, err := req.ServiceBus("message")
	if err != nil || string(m.Body) != `{"stage":"failed"}` {
		t.Fatalf("ServiceBus = %s, %v", m.Body, err)
	}
}

func TestEventsBadInput(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, event string }{
		{"number", `5`},
		{"empty array", `[]`},
		{"array of numbers", `[1,2]`},
		{"no id", `{"eventType":"x","subject":"s"}`},
		{"no eventType", `{"id":"1","subject":"s"}`},
		{"id not a string", `{"id":1,"eventType":"x"}`},
		{"bad eventTime", `{"id":"1","eventType":"x","eventTime":"yesterday"}`},
		{"cloudevent without source", `{"id":"1","type":"x","specversion":"1.0"}`},
		{"cloudevent 2.0", `{"id":"1","type":"x","source":"s","specversion":"2.0"}`},
		{"one bad in a batch", `[{"id":"1","eventType":"x"},{"id":"2"}]`},
		{"string of text", `"not an event"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := mustDecode(t, `{"Data":{"event":`+tc.event+`}}`)
			if events, err := req.Events("event"); !errors.Is(err, ErrBadRequest) {
				t.Errorf("Events = %v, %v; want ErrBadRequest", events, err)
			}
			if events, err := ParseEvents([]byte(tc.event)); !errors.Is(err, ErrBadRequest) {
				t.Errorf("ParseEvents = %v, %v; want ErrBadRequest", events, err)
			}
		})
	}
	if _, err := ParseEvents([]byte(`[{"id":`)); !errors.Is(err, ErrBadRequest) {
		t.Errorf("ParseEvents(malformed) = %v, want ErrBadRequest", err)
	}
	if _, err := mustDecode(t, `{"Data":{}}`).Events("event"); !errors.Is(err, ErrBadRequest) {
		t.Errorf("Events(missing binding) = %v, want ErrBadRequest", err)
	}
}

func TestTimerBadInput(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, timer string }{
		{"array", `[]`},
		{"IsPastDue not a bool", `{"IsPastDue":"maybe"}`},
		{"ScheduleStatus a number", `{"ScheduleStatus":3}`},
		{"Next not a time", `{"ScheduleStatus":{"Next":"soon"}}`},
		{"Last a number", `{"ScheduleStatus":{"Last":12}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := mustDecode(t, `{"Data":{"timer":`+tc.timer+`}}`)
			if tm, err := req.Timer("timer"); !errors.Is(err, ErrBadRequest) {
				t.Errorf("Timer = %+v, %v; want ErrBadRequest", tm, err)
			}
		})
	}
}

func TestUnquoteMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		`""`, `"plain"`, `"\"quoted\""`, `"tab\there"`, `"\/\\\b\f\n\r\t"`, `"\u00e9\u4e2d"`,
		`"\ud83d\ude00"`, `"\ud83d"`, `"\ude00x"`, `"\ud83d\u0041"`, "\"\xff\xfeinvalid\"", `"é中😀"`,
		`"\u0000"`, `"a\ud83d\ud83d\ude00"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatalf("encoding/json rejects %s: %v", s, err)
		}
		got, ok := unquote([]byte(s))
		if !ok || string(got) != want {
			t.Errorf("unquote(%s) = %q, %v; want %q", s, got, ok, want)
		}
	}
	for _, s := range []string{`"`, `abc`, `"\x"`, `"\u12"`, `"\u12g4"`, `"a"b"`, "\"a\nb\"", `"\"`} {
		if got, ok := unquote([]byte(s)); ok {
			t.Errorf("unquote(%s) = %q, accepted", s, got)
		}
	}
}

func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`"a"`, `"\u00e9"`, `"\ud83d\ude00"`, `"\\\"x\\\""`, "\"\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want string
		werr := json.Unmarshal(b, &want)
		got, ok := unquote(trimSpace(b)) // callers hand unquote a trimmed literal
		if werr == nil && (!ok || string(got) != want) {
			t.Fatalf("unquote(%q) = %q, %v; encoding/json gives %q", b, got, ok, want)
		}
		if werr != nil && ok && json.Valid(b) {
			t.Fatalf("unquote(%q) accepted a value encoding/json rejects: %v", b, werr)
		}
	})
}

func TestWalkers(t *testing.T) {
	t.Parallel()
	obj := []byte(" {\n \"a\" : [1, {\"b\":\"}\"}] ,\"c\\\"d\":\"x\\\"y\", \"e\": -1.5e3 ,\"f\":{} } ")
	var keys, vals []string
	if !members(obj, func(k, v []byte) bool {
		keys = append(keys, keyString(k))
		vals = append(vals, string(v))
		return true
	}) {
		t.Fatal("members rejected an object")
	}
	wantKeys := []string{"a", `c"d`, "e", "f"}
	wantVals := []string{`[1, {"b":"}"}]`, `"x\"y"`, `-1.5e3`, `{}`}
	if !slices.Equal(keys, wantKeys) || !slices.Equal(vals, wantVals) {
		t.Errorf("members = %q %q; want %q %q", keys, vals, wantKeys, wantVals)
	}
	var elems []string
	elements([]byte(`[ 1 ,"]", [2,3] ,{"a":[]}, null]`), func(_ int, v []byte) bool {
		elems = append(elems, string(v))
		return true
	})
	if want := []string{"1", `"]"`, "[2,3]", `{"a":[]}`, "null"}; !slices.Equal(elems, want) {
		t.Errorf("elements = %q, want %q", elems, want)
	}
	for _, bad := range []string{``, `{`, `{"a"}`, `{"a":`, `{"a":"x`, `[`, `{a:1}`} {
		members([]byte(bad), func(_, _ []byte) bool { return true })
		elements([]byte(bad), func(int, []byte) bool { return true })
	}
}

func TestWrite(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		status int
		resp   Response
		want   int
	}{
		{"empty", http.StatusOK, Response{}, http.StatusOK},
		{"outputs and logs", http.StatusAccepted, Response{
			Outputs:     map[string]any{"res": map[string]any{"statusCode": 202, "body": map[string]string{"incidentId": "inc-20261120-031407-7f3c"}}},
			Logs:        []string{"stage snapshot started", "snapshot <vmr-inc-20261120-031407-7f3c-backup> exists"},
			ReturnValue: map[string]bool{"ok": true},
		}, http.StatusAccepted},
		{"transient failure", http.StatusServiceUnavailable, Response{Logs: []string{"throttled: retry"}}, http.StatusServiceUnavailable},
		{"invalid status", 0, Response{}, http.StatusInternalServerError},
		{"unencodable output", http.StatusOK, Response{Outputs: map[string]any{"bad": make(chan int)}, Logs: []string{"before"}}, http.StatusInternalServerError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				Write(w, tc.status, tc.resp)
			}))
			defer srv.Close()
			res, err := srv.Client().Post(srv.URL+"/Snapshot", "application/json", strings.NewReader(`{"Data":{}}`))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tc.want {
				t.Errorf("status = %d, want %d", res.StatusCode, tc.want)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var shape struct {
				Outputs map[string]json.RawMessage
				Logs    []string
			}
			if err := json.Unmarshal(body, &shape); err != nil || shape.Outputs == nil || shape.Logs == nil {
				t.Errorf("body %s: Outputs and Logs must be {} and [] at least (err %v)", body, err)
			}
			golden(t, "testdata/responses/"+strings.ReplaceAll(tc.name, " ", "-")+".golden", body)
		})
	}
}
