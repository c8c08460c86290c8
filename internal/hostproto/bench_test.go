package hostproto

import (
	"bytes"
	"net/http/httptest"
	"os"
	"testing"
)

func benchFile(b *testing.B, path string) []byte {
	b.Helper()
	body, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkDecodeServiceBus decodes the Snapshot invocation fixture: the request and its Service
// Bus message, as a stage handler does before any I/O. Target: <= 50 µs and <= 64 allocs/op.
func BenchmarkDecodeServiceBus(b *testing.B) {
	body := benchFile(b, "testdata/invocations/servicebus-snapshot.invocation.json")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req, err := DecodeRequest(bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := req.ServiceBus("message"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEventGrid decodes the HealthAlert invocation fixture and its event.
func BenchmarkDecodeEventGrid(b *testing.B) {
	body := benchFile(b, "testdata/invocations/eventgrid-healthalert.invocation.json")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req, err := DecodeRequest(bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := req.Events("event"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite encodes a typical stage response.
func BenchmarkWrite(b *testing.B) {
	resp := Response{Logs: []string{"stage snapshot succeeded"}}
	b.ReportAllocs()
	for b.Loop() {
		Write(httptest.NewRecorder(), 200, resp)
	}
}
