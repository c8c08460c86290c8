package server

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// knownIncidents is a Trail without storage: every incident is active. The benchmark measures the
// handler's own work, without I/O.
type knownIncidents struct{}

func (knownIncidents) Append(context.Context, string, audit.Entry) (audit.Record, error) {
	return audit.Record{}, nil
}
func (knownIncidents) State(context.Context, string) (string, error) {
	return incident.StateActive, nil
}

// BenchmarkRouteStage decodes one Service Bus invocation in the host's shape, validates it and
// routes it to its stage, without I/O (no storage, a stage that does nothing):
// go test -run '^$' -bench RouteStage -benchmem ./internal/server
func BenchmarkRouteStage(b *testing.B) {
	noop := stageFunc(func(context.Context, incident.Message, Delivery) error { return nil })
	s := &Server{Trail: knownIncidents{}, Stages: map[incident.Stage]StageRunner{incident.StageSnapshot: noop}}
	h := s.Handler()
	body, err := os.ReadFile("../hostproto/testdata/invocations/servicebus-snapshot.invocation.json")
	if err != nil {
		b.Fatal(err)
	}
	// The request and response writer are reused, so that only the handler's own work is counted.
	rd := bytes.NewReader(body)
	req := httptest.NewRequest(http.MethodPost, "/Snapshot", rd)
	w := &discardWriter{header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		w.code = 0
		h.ServeHTTP(w, req)
		if w.code != 200 {
			b.Fatalf("code %d", w.code)
		}
	}
}

type discardWriter struct {
	header http.Header
	code   int
}

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
