package pipeline_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/vmrescue/vmrescue/internal/api"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/pipeline"
)

// gate holds one step of a delivery until the test lets it go: reached is closed when the step is
// reached, and the step goes on once release is closed.
type gate struct {
	once    sync.Once
	reached chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{reached: make(chan struct{}), release: make(chan struct{})} }

// hold blocks the first caller until release; later callers pass.
func (g *gate) hold() {
	first := false
	g.once.Do(func() { first = true })
	if first {
		close(g.reached)
		<-g.release
	}
}

func (g *gate) await(t *testing.T) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the delivery never reached the gate")
	}
}

// gatedTransport holds the first request of one ARM operation at its gate, before it reaches the
// simulator.
type gatedTransport struct {
	next policy.Transporter
	op   string
	g    *gate
}

func (t *gatedTransport) Do(req *http.Request) (*http.Response, error) {
	api, _ := req.Context().Value(runtime.CtxAPINameKey{}).(string)
	client, method, _ := strings.Cut(api, ".")
	if strings.TrimSuffix(client, "Client")+"."+method == t.op && req.Method != http.MethodGet {
		t.g.hold()
	}
	return t.next.Do(req)
}

// gatedTrail holds the first append of one stage's event at its gate, before it is written.
type gatedTrail struct {
	pipeline.Trail
	stage, event string
	g            *gate
}

func (t *gatedTrail) Append(ctx context.Context, id string, e audit.Entry) (audit.Record, error) {
	if e.Stage == t.stage && e.Event == t.event {
		t.g.hold()
	}
	return t.Trail.Append(ctx, id, e)
}

// requestRollback asks for a rollback through RemediationRollback, as an operator would.
func (e *env) requestRollback(id string) {
	e.t.Helper()
	mux := http.NewServeMux()
	(&api.API{Trail: e.trail, Intake: e.intake, Bus: e.bus, Log: e.pipeline().Log}).Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/remediations/"+id+"/rollback", nil))
	if rec.Code != http.StatusAccepted {
		e.t.Fatalf("rollback request answered %d: %s", rec.Code, rec.Body)
	}
}

// deliverFailed delivers the message at the head of the failed queue.
func (e *env) deliverFailed() {
	e.t.Helper()
	d, ok := e.bus.peek()
	if !ok || d.queue != incident.StageFailed {
		e.t.Fatalf("no rollback queued first: %+v", d)
	}
	if got, _ := e.step(e.pipeline()); got.err != nil {
		e.t.Fatalf("rollback: %v", got.err)
	}
}
