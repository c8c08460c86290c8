package hostproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func addSeeds(f *testing.F, pattern string) {
	f.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds for %s: %v", pattern, err)
	}
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzDecodeRequest feeds arbitrary bodies through the decoder and every accessor: none may
// panic, every failure must be a bad request, and what they accept must be well formed.
func FuzzDecodeRequest(f *testing.F) {
	addSeeds(f, "testdata/invocations/*.invocation.json")
	f.Add([]byte(`{"Data":{"message":"\"\\\"{}\\\"\""},"Metadata":{"DeliveryCount":"\"1\"","MessageId":{"a":1}}}`))
	f.Add([]byte(`{"Data":{"message":"e30="},"Metadata":{"ApplicationProperties":"{\"a\":null}"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeRequest(bytes.NewReader(body))
		if err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("DecodeRequest error %v is neither ErrBadRequest nor ErrTooLarge", err)
			}
			return
		}
		_ = req.Sys()
		names := []string{"message", "event", "timer", "missing"}
		for k := range req.Data {
			names = append(names, k)
		}
		for _, name := range names {
			m, err := req.ServiceBus(name)
			checkErr(t, "ServiceBus", err)
			if err == nil && (len(m.Body) == 0 || !json.Valid(m.Body) || (m.Body[0] != '{' && m.Body[0] != '[')) {
				t.Fatalf("ServiceBus(%q) body %q is not a JSON object or array", name, m.Body)
			}
			if m.DeliveryCount < 0 {
				t.Fatalf("ServiceBus(%q) DeliveryCount %d < 0", name, m.DeliveryCount)
			}
			events, err := req.Events(name)
			checkErr(t, "Events", err)
			checkEvents(t, events, err)
			_, err = req.Timer(name)
			checkErr(t, "Timer", err)
		}
	})
}

// FuzzParseEvents feeds arbitrary webhook bodies to ParseEvents.
func FuzzParseEvents(f *testing.F) {
	addSeeds(f, "testdata/events/*.json")
	f.Add([]byte(`{"id":"1","type":"t","source":"s","specversion":"1.0","data_base64":"eyJhIjoxfQ=="}`))
	f.Add([]byte(`[{"id":"1","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","data":{"validationCode":"c"}}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		events, err := ParseEvents(body)
		checkErr(t, "ParseEvents", err)
		checkEvents(t, events, err)
		for _, e := range events {
			if code, ok := IsSubscriptionValidation(e); ok && code == "" {
				t.Fatal("IsSubscriptionValidation accepted an empty code")
			}
		}
	})
}

func checkErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrBadRequest) {
		t.Fatalf("%s error %v is not ErrBadRequest", what, err)
	}
}

func checkEvents(t *testing.T, events []Event, err error) {
	t.Helper()
	if err != nil {
		if events != nil {
			t.Fatalf("events %v returned with error %v", events, err)
		}
		return
	}
	if len(events) == 0 {
		t.Fatal("no events and no error")
	}
	for _, e := range events {
		if e.ID == "" || e.Type == "" || (e.Schema != SchemaEventGrid && e.Schema != SchemaCloudEvents) {
			t.Fatalf("accepted an incomplete event %+v", e)
		}
		if e.Data != nil && !json.Valid(e.Data) {
			t.Fatalf("event %s data %q is not JSON", e.ID, e.Data)
		}
	}
}
