package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport"
	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/blobstore"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/intake"
	"github.com/vmrescue/vmrescue/internal/lifecycle"
	"github.com/vmrescue/vmrescue/internal/lock"
	"github.com/vmrescue/vmrescue/internal/pipeline"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/server"
	"github.com/vmrescue/vmrescue/internal/skus"
	"github.com/vmrescue/vmrescue/internal/support"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

// env is one simulated subscription (azsim behind the SDK's fake servers), real Azurite for the
// audit trail, locks, dumps and the agent binary, a recording bus with Service Bus semantics,
// and a real intake for signals.
type env struct {
	t      *testing.T
	sim    *azsim.Sim
	fleet  *azsim.Fleet
	cfg    config.Config
	trail  *audit.Store
	locks  *lock.Locks
	blobs  *blobstore.Store
	signer *blobstore.SharedKey
	bus    *recBus
	agent  *fakeAgent
	intake *intake.Intake
	events *eventRecorder
	// current is the pipeline that signals reach; tests that build several keep it the latest.
	mu      sync.Mutex
	current *pipeline.Pipeline
	// started receives each VM whose start completed, once the guest's reaction (a crash and
	// its alert) has been played.
	started chan string
}

type envOptions struct {
	fleet     *azsim.Fleet
	mutate    func(*config.Config)
	latency   azsim.LatencyTable
	timeScale float64
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, fleet: o.fleet, bus: newRecBus(), events: newEventRecorder(t), started: make(chan string, 64)}
	if e.fleet == nil {
		e.fleet = azsim.DefaultFleet()
	}
	e.agent = &fakeAgent{env: e}
	var h http.Handler = http.NotFoundHandler()
	var hmu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hmu.Lock()
		hh := h
		hmu.Unlock()
		hh.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	sim, err := azsim.New(e.fleet, azsim.Options{
		Executor: e.agent, PublicURL: srv.URL, ContentFor: contentFor, OnVMStarted: e.onVMStarted,
		Latency: o.latency, TimeScale: o.timeScale,
	})
	if err != nil {
		t.Fatal(err)
	}
	hmu.Lock()
	h = sim.Handler()
	hmu.Unlock()
	e.sim = sim

	client := azuritetest.Client(t)
	ctx := context.Background()
	c := func(prefix string) string { return azuritetest.Container(t, prefix) }
	e.cfg = config.Config{
		AllowedSubscriptions: []string{strings.ToLower(e.fleet.SubscriptionID)},
		ReproWait:            10 * time.Minute,
		OptOutTag:            incident.TagOptOut,
		Retention:            168 * time.Hour,
		StallTimeout:         2 * time.Hour,
		LeaveDeallocated:     true,
		Support: config.Support{Enabled: true, Severity: "moderate", FirstName: "Ops", LastName: "Team",
			Email: "ops@example.com", Country: "usa", Language: "en-us", TimeZone: "UTC"},
		AuditContainer: c("audit"), DumpsContainer: c("dumps"), LocksContainer: c("locks"), ToolsContainer: c("tools"),
	}
	for _, r := range e.fleet.RescueVMs {
		e.cfg.RescueVMs = append(e.cfg.RescueVMs, e.fleet.VMID(r.Name))
	}
	if o.mutate != nil {
		o.mutate(&e.cfg)
	}
	e.trail = audit.New(client, e.cfg.AuditContainer)
	e.locks = lock.New(client, e.cfg.LocksContainer)
	if err := e.trail.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.locks.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	e.blobs = &blobstore.Store{Client: client}
	e.signer, err = blobstore.SharedKeyFromConnectionString(azuritetest.ConnectionString(t))
	if err != nil {
		t.Fatal(err)
	}
	e.intake = &intake.Intake{Trail: e.trail, Locks: e.locks, Bus: e.bus, Scope: e.cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnSignal: func(ctx context.Context, id, vm string, trig incident.Trigger) error {
			return e.pipeline().Signal(ctx, id, vm, trig)
		}}
	e.current = e.newPipeline(nil)
	return e
}

// agentPath is a stand-in for the windows agent build: the bytes do not matter, their hash does.
var agentPath = sync.OnceValue(func() string {
	dir, err := os.MkdirTemp("", "vmrescue-agent")
	if err != nil {
		panic(err)
	}
	p := filepath.Join(dir, "handler-agent.exe")
	if err := os.WriteFile(p, []byte("MZ vmrescue agent stand-in for tests"), 0o644); err != nil {
		panic(err)
	}
	return p
})

// newPipeline builds a pipeline with fresh caches whose ARM requests go through wrap (nil: the
// simulator's transport as is).
func (e *env) newPipeline(wrap func(policy.Transporter) policy.Transporter) *pipeline.Pipeline {
	e.t.Helper()
	var tr policy.Transporter = e.sim.Transport()
	if wrap != nil {
		tr = wrap(tr)
	}
	opts := armclient.WithPolicies(&arm.ClientOptions{ClientOptions: policy.ClientOptions{
		Transport: tr,
		Retry:     policy.RetryOptions{RetryDelay: time.Millisecond, MaxRetryDelay: 10 * time.Millisecond},
	}})
	sub, cred := e.fleet.SubscriptionID, azsim.Credential()
	must := func(err error) {
		if err != nil {
			e.t.Fatal(err)
		}
	}
	vmc, err := armcompute.NewVirtualMachinesClient(sub, cred, opts)
	must(err)
	dc, err := armcompute.NewDisksClient(sub, cred, opts)
	must(err)
	sc, err := armcompute.NewSnapshotsClient(sub, cred, opts)
	must(err)
	rc, err := armcompute.NewVirtualMachineRunCommandsClient(sub, cred, opts)
	must(err)
	kc, err := armcompute.NewResourceSKUsClient(sub, cred, opts)
	must(err)
	tc, err := armsupport.NewTicketsClient(sub, cred, opts)
	must(err)
	svc, err := armsupport.NewServicesClient(cred, opts)
	must(err)
	pcc, err := armsupport.NewProblemClassificationsClient(cred, opts)
	must(err)
	p := &pipeline.Pipeline{
		Config: e.cfg,
		Azure: pipeline.Azure{VMs: vmc, Disks: dc, Snapshots: sc, RunCommands: rc, SKUs: skus.NewCatalog(kc), Tickets: tc,
			Classifier: &support.Classifier{Services: svc, Classifications: pcc, Override: e.cfg.Support.Classification}},
		Trail: e.trail, Locks: e.locks, Bus: e.bus, Blobs: e.blobs, Signer: e.signer, AgentPath: agentPath(),
		Events: &lifecycle.Publisher{Client: e.events.client(e.t)}, HTTP: &http.Client{Timeout: 30 * time.Second},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Poll: 5 * time.Millisecond, LineWait: 50 * time.Millisecond,
	}
	if err := p.Validate(); err != nil {
		e.t.Fatal(err)
	}
	e.mu.Lock()
	e.current = p
	e.mu.Unlock()
	return p
}

func (e *env) pipeline() *pipeline.Pipeline {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.current
}

// open opens an incident for a fleet VM through intake, as an alert would.
func (e *env) open(vmName string, dry bool) string {
	e.t.Helper()
	vm, err := resourceid.ParseVM(e.fleet.VMID(vmName))
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := e.intake.Open(context.Background(), intake.Request{
		VM: vm, DryRun: dry,
		Trigger: incident.Trigger{Kind: incident.TriggerAlert, EventID: "ev-" + vmName, Annotation: intake.AnnotationCrashed},
	})
	if err != nil || !res.Opened {
		e.t.Fatalf("open incident for %s: %+v %v", vmName, res, err)
	}
	return res.IncidentID
}

// maxDeliveries is the queues' MaxDeliveryCount: after that a message is dead-lettered to
// "failed".
const maxDeliveries = 5

// step delivers the next message to its stage. It returns false when no message is left.
func (e *env) step(p *pipeline.Pipeline) (delivered, bool) {
	e.t.Helper()
	d, ok := e.bus.pop()
	if !ok {
		return delivered{}, false
	}
	runner := p.Stages()[d.queue]
	err := runner.Run(context.Background(), d.msg, server.Delivery{MessageID: d.id, DeliveryCount: d.count, EnqueuedTime: d.at})
	d.err = err
	if err != nil && !fault.IsTerminal(err) {
		if d.count < maxDeliveries {
			e.bus.redeliver(d)
		} else {
			e.bus.deadLetter(d)
		}
	}
	return d, true
}

// drain delivers messages, scheduled ones included (time is skipped), until none is left.
func (e *env) drain(p *pipeline.Pipeline) []delivered {
	e.t.Helper()
	var out []delivered
	for i := 0; ; i++ {
		if i > 200 {
			e.t.Fatalf("the pipeline did not settle after 200 deliveries: %v", stagesOf(out))
		}
		d, ok := e.step(p)
		if !ok {
			return out
		}
		out = append(out, d)
	}
}

func stagesOf(ds []delivered) []string {
	var out []string
	for _, d := range ds {
		s := string(d.queue)
		if d.err != nil {
			s += "(" + d.err.Error() + ")"
		}
		out = append(out, s)
	}
	return out
}

// state reads an incident's state and view.
func (e *env) records(id string) []audit.Record {
	e.t.Helper()
	recs, err := e.trail.Read(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

func (e *env) state(id string) string {
	e.t.Helper()
	s, err := e.trail.State(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// recBus is a bus.Sender with Service Bus semantics: duplicate detection by MessageID, scheduled
// delivery (delivered in time order, time skipped), redelivery and dead-lettering.
type recBus struct {
	mu    sync.Mutex
	seen  map[string]bool
	queue []delivered
	seq   int
	sent  []bus.Envelope
}

type delivered struct {
	queue incident.Stage
	msg   incident.Message
	id    string
	at    time.Time
	count int
	seq   int
	err   error
}

func newRecBus() *recBus { return &recBus{seen: map[string]bool{}} }

func (b *recBus) Send(_ context.Context, msg incident.Message, opts bus.SendOptions) error {
	env, err := bus.NewEnvelope(msg, opts)
	if err != nil {
		return err
	}
	var wire incident.Message
	if err := json.Unmarshal(env.Body, &wire); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen[env.MessageID] {
		return nil // duplicate detection absorbs it
	}
	b.seen[env.MessageID] = true
	b.sent = append(b.sent, env)
	b.seq++
	b.queue = append(b.queue, delivered{queue: incident.Stage(env.Queue), msg: wire, id: env.MessageID, at: opts.ScheduledAt, count: 1, seq: b.seq})
	return nil
}

func (b *recBus) order() {
	slices.SortStableFunc(b.queue, func(x, y delivered) int {
		if c := x.at.Compare(y.at); c != 0 {
			return c
		}
		return x.seq - y.seq
	})
}

func (b *recBus) pop() (delivered, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		return delivered{}, false
	}
	b.order()
	d := b.queue[0]
	b.queue = b.queue[1:]
	return d, true
}

func (b *recBus) peek() (delivered, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		return delivered{}, false
	}
	b.order()
	return b.queue[0], true
}

func (b *recBus) redeliver(d delivered) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d.count++
	d.err = nil
	b.queue = append([]delivered{d}, b.queue...)
}

func (b *recBus) deadLetter(d delivered) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	b.queue = append(b.queue, delivered{queue: incident.StageFailed, msg: d.msg, id: d.id, count: 1, seq: b.seq})
}

// sentTo lists the envelopes accepted for a queue.
func (b *recBus) sentTo(stage incident.Stage) []bus.Envelope {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []bus.Envelope
	for _, e := range b.sent {
		if e.Queue == string(stage) {
			out = append(out, e)
		}
	}
	return out
}

// eventRecorder is an Event Grid topic on loopback HTTP that records the CloudEvents the real
// azeventgrid client publishes.
type eventRecorder struct {
	mu     sync.Mutex
	events []map[string]any
	srv    *httptest.Server
}

func newEventRecorder(t *testing.T) *eventRecorder {
	r := &eventRecorder{}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var batch []map[string]any
		if err := json.NewDecoder(req.Body).Decode(&batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.events = append(r.events, batch...)
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *eventRecorder) client(t *testing.T) lifecycle.API {
	c, err := azeventgrid.NewClientWithSharedKeyCredential(r.srv.URL+"/api/events", azcore.NewKeyCredential("test-key"),
		&azeventgrid.ClientOptions{ClientOptions: policy.ClientOptions{Transport: r.srv.Client()}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// types lists the published events as type:incidentId.
func (r *eventRecorder) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.events {
		data, _ := ev["data"].(map[string]any)
		out = append(out, fmt.Sprint(ev["type"], ":", data["incidentId"], ":", data["outcome"]))
	}
	return out
}
