package azsim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	computefake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8/fake"
	supportfake "github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport/fake"
)

// Options configures a Sim. The zero value is a simulator for tests: no waiting, no faults, no
// write budget, a recording Run Command executor and the wall clock.
type Options struct {
	// TimeScale multiplies every latency of the table; 0 makes every operation complete at its
	// first poll. `handler local --time-scale`.
	TimeScale float64
	// Latency overrides the latency table; nil is DefaultLatency().
	Latency LatencyTable
	// Faults injects faults into requests. `handler local --faults RATE --seed S`.
	Faults FaultConfig
	// WriteBudget limits ARM writes and deletes per window; zero is unlimited.
	WriteBudget WriteBudget
	// Executor runs managed Run Commands; nil is a *RecordingExecutor answering exit code 0.
	Executor RunCommandExecutor
	// Clock is the simulator's time; nil is the wall clock.
	Clock Clock
	// PublicURL is the base URL at which Handler() is served, for the boot diagnostics URIs that
	// RetrieveBootDiagnosticsData returns. Default http://127.0.0.1 (not reachable: set it when
	// serving the handler).
	PublicURL string
	// ContentFor gives the content of each fleet VM's original OS disk; nil (or a nil result) is
	// a Files describing the VM's volume.
	ContentFor func(VMSpec) Content
	// OnVMStarted is called, in its own goroutine, when a Start of a VM completes: the hook for
	// the crash loop of a fleet VM.
	OnVMStarted func(vmID string)
	// GuestReportsAgent says a guest simulator reports each fleet VM's VM agent: after a Start
	// the agent is Not Ready until SetAgentReady, as it stays for a guest that crash-loops at
	// boot. Without it, the agent of a running VM is always Ready.
	GuestReportsAgent bool
	// StrictSnapshotCopy refuses to create a disk from an incremental snapshot whose
	// CompletionPercent is below 100. Azure documents that incremental snapshots of standard
	// managed disks are usable at once (and applies the rule only to Premium SSD v2 and Ultra
	// disks), so it is off by default.
	StrictSnapshotCopy bool
	// MinPollInterval is the shortest Retry-After the simulator sends while an LRO is running;
	// default 5ms.
	MinPollInterval time.Duration
	// Logger receives the simulator's own log; nil discards it.
	Logger *slog.Logger
}

// Call is one request the simulator answered.
type Call struct {
	Time      time.Time
	Op        string // e.g. VirtualMachines.BeginDeallocate
	Method    string
	Path      string
	Status    int
	ErrorCode string
	Poll      bool // a poll of a long-running operation
	// Write is any request but a GET or HEAD. Delete marks a DELETE among them: ARM counts it
	// against the subscription's deletes, not its writes.
	Write, Delete bool
	Fault         FaultKind
	CorrelationID string // x-ms-correlation-request-id
	// Latency is the simulated time the request itself took (at the time scale): the latency
	// table's read or write figure, plus an injected timeout's wait. A long-running operation's
	// own duration is in State().Operations().
	Latency time.Duration
}

// Sim is the simulated Azure. Create it with New.
type Sim struct {
	opts    Options
	fleet   *Fleet
	state   *State
	timing  *timing
	compute *computefake.ServerFactory
	support *supportfake.ServerFactory
	tr      *transport

	mu       sync.Mutex
	calls    map[string]int
	callLog  []Call
	faultLog []FaultEvent
	faultSeq map[string]int
	spent    [2][]time.Time         // times of the writes and deletes in the budget's window, by budgetKind
	lros     map[string]*pendingLRO // by operation id
	lroSeq   int
}

// New builds a simulator seeded with fleet (nil is DefaultFleet()).
func New(fleet *Fleet, opts Options) (*Sim, error) {
	if fleet == nil {
		fleet = DefaultFleet()
	}
	if err := fleet.Validate(); err != nil {
		return nil, fmt.Errorf("azsim: fleet: %w", err)
	}
	if opts.TimeScale < 0 {
		return nil, fmt.Errorf("azsim: time scale %v is negative", opts.TimeScale)
	}
	if opts.Faults.Rate < 0 || opts.Faults.Rate > 1 {
		return nil, fmt.Errorf("azsim: fault rate %v is not in 0..1", opts.Faults.Rate)
	}
	if opts.Clock == nil {
		opts.Clock = wallClock{}
	}
	if opts.Executor == nil {
		opts.Executor = &RecordingExecutor{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.PublicURL == "" {
		opts.PublicURL = "http://127.0.0.1"
	}
	if opts.MinPollInterval <= 0 {
		opts.MinPollInterval = 5 * time.Millisecond
	}
	tm := newTiming(opts.Latency, opts.TimeScale)
	st := newState(fleet.SubscriptionID, fleet.Location, opts.Clock, tm, opts.Logger)
	st.executor, st.onStarted, st.strictCopy, st.publicURL = opts.Executor, opts.OnVMStarted, opts.StrictSnapshotCopy, opts.PublicURL
	st.guestAgent = opts.GuestReportsAgent
	st.blobs = sasAppender{}
	if err := st.seed(fleet, opts.ContentFor); err != nil {
		return nil, fmt.Errorf("azsim: %w", err)
	}
	s := &Sim{
		opts: opts, fleet: fleet, state: st, timing: tm,
		compute: st.computeServers(), support: st.supportServers(),
		calls: map[string]int{}, faultSeq: map[string]int{}, lros: map[string]*pendingLRO{},
	}
	s.tr = &transport{sim: s}
	return s, nil
}

// SubscriptionID is the simulated subscription.
func (s *Sim) SubscriptionID() string { return s.fleet.SubscriptionID }

// Location is the simulated region.
func (s *Sim) Location() string { return s.fleet.Location }

// Fleet is the fleet the simulator was seeded with.
func (s *Sim) Fleet() *Fleet { return s.fleet }

// State is the simulator's state model.
func (s *Sim) State() *State { return s.state }

// Transport is the policy.Transporter that carries SDK requests to the simulator.
func (s *Sim) Transport() policy.Transporter { return s.tr }

// ClientOptions are options for any armcompute or armsupport client: the real SDK pipeline with
// the simulator as its transport.
func (s *Sim) ClientOptions() *arm.ClientOptions {
	return &arm.ClientOptions{ClientOptions: policy.ClientOptions{Transport: s.tr}}
}

// ComputeClientOptions are options for armcompute clients (same transport as ClientOptions).
func (s *Sim) ComputeClientOptions() *arm.ClientOptions { return s.ClientOptions() }

// SupportClientOptions are options for armsupport clients (same transport as ClientOptions).
func (s *Sim) SupportClientOptions() *arm.ClientOptions { return s.ClientOptions() }

// Credential is a static token credential for clients of the simulator.
func Credential() azcore.TokenCredential { return &azfake.TokenCredential{} }

// EndpointClientOptions are options for ARM clients that reach a simulator served by Handler at
// endpoint (http://127.0.0.1:PORT): the ResourceManager endpoint points there, and
// InsecureAllowCredentialWithHTTP lets the bearer-token policy send its token over plain http,
// which it otherwise refuses ("authorized requests are not permitted for non-TLS protected
// (https) endpoints"). The option exists in azcore since v1.12 and is in the pinned v1.24.0.
func EndpointClientOptions(endpoint string) *arm.ClientOptions {
	return &arm.ClientOptions{ClientOptions: policy.ClientOptions{
		Cloud: cloud.Configuration{
			ActiveDirectoryAuthorityHost: cloud.AzurePublic.ActiveDirectoryAuthorityHost,
			Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Endpoint: strings.TrimRight(endpoint, "/"), Audience: "https://management.core.windows.net/"},
			},
		},
		InsecureAllowCredentialWithHTTP: true,
	}}
}

// Calls counts the requests per operation (polls excluded).
func (s *Sim) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

// CallCount is the number of requests of one operation.
func (s *Sim) CallCount(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// CallLog lists every request, polls included, in order.
func (s *Sim) CallLog() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.callLog)
}

// ResetCalls clears the call counts and log.
func (s *Sim) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls, s.callLog = map[string]int{}, nil
}

// FaultLog lists the injected faults, in order.
func (s *Sim) FaultLog() []FaultEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.faultLog)
}

// opName turns the SDK's API name ("VirtualMachinesClient.BeginDeallocate") into the
// simulator's operation name ("VirtualMachines.BeginDeallocate").
func opName(api string) string {
	client, method, ok := strings.Cut(api, ".")
	if !ok {
		return api
	}
	return strings.TrimSuffix(client, "Client") + "." + method
}

// unknownEndPoll is the poll interval, at time scale 1, of an operation whose end is not known.
const unknownEndPoll = 5 * time.Second

// fakePollSuffix is the path suffix of the azcore fake poller's status requests.
const fakePollSuffix = "/get/fake/status"

// pendingLRO is a long-running operation whose client may still poll.
type pendingLRO struct {
	id         string
	api        string
	path       string // the request path that began it
	op         *operation
	tr         policy.Transporter // the fake server transport that holds the operation's responder
	registered time.Time          // wall clock, for forgetting old operations
	result     *storedResponse    // the terminal response, once fetched from the fake
}

// storedResponse is a terminal LRO response kept for repeated final GETs.
type storedResponse struct {
	status int
	header http.Header
	body   []byte
}

// lroRetention is how long (wall clock) a completed operation stays queryable.
const lroRetention = 10 * time.Minute

type transport struct{ sim *Sim }

var _ policy.Transporter = (*transport)(nil)

// Do carries one request: polls are answered from the operation's progress; other requests go
// through fault injection, the write budget and the latency table to a fresh fake server
// transport, whose errors become ARM-shaped HTTP responses.
func (t *transport) Do(req *http.Request) (*http.Response, error) {
	s := t.sim
	if m := operationPathRE.FindStringSubmatch(req.URL.Path); m != nil && req.Method == http.MethodGet {
		return s.operationStatus(req, m[1], req.URL.Query().Get("monitor") == "true")
	}
	api, _ := req.Context().Value(runtime.CtxAPINameKey{}).(string)
	// An in-process request without an API name comes from the SDK's poller: the final GET of a
	// long-running PUT. It is part of the operation, not a call of its own.
	internal := api == ""
	if internal {
		api = apiFor(req.Method, req.URL.EscapedPath())
	}
	op := opName(api)
	write := req.Method != http.MethodGet && req.Method != http.MethodHead
	call := Call{Time: s.state.now(), Op: op, Method: req.Method, Path: req.URL.Path, Write: write, Delete: req.Method == http.MethodDelete, Poll: internal,
		CorrelationID: req.Header.Get("x-ms-correlation-request-id")}
	resp, err := s.serve(req, api, op, write, &call)
	if resp != nil {
		call.Status = resp.StatusCode
		call.ErrorCode = resp.Header.Get("x-ms-error-code")
	}
	s.opts.Logger.Debug("azsim request", "op", op, "method", req.Method, "path", req.URL.Path,
		"status", call.Status, "code", call.ErrorCode, "fault", call.Fault, "correlationId", call.CorrelationID)
	s.mu.Lock()
	if !internal {
		s.calls[op]++
	}
	s.callLog = append(s.callLog, call)
	s.mu.Unlock()
	return resp, err
}

// operationPathRE matches the operation URLs the simulator hands out in Azure-AsyncOperation and
// Location headers, as Compute does: /subscriptions/{id}/providers/Microsoft.Compute/locations/
// {region}/operations/{operationId}.
var operationPathRE = regexp.MustCompile(`(?i)^/subscriptions/[^/]+/providers/Microsoft\.(?:Compute|Support)/locations/[^/]+/operations/([^/]+)$`)

func (s *Sim) serve(req *http.Request, api, op string, write bool, call *Call) (*http.Response, error) {
	if api == "" {
		return newARMError(http.StatusBadRequest, CodeInvalidRequestContent, "azsim: no API name on the request").response(req), nil
	}
	if sub := subscriptionOf(req.URL.Path); sub != "" && !strings.EqualFold(sub, s.fleet.SubscriptionID) {
		return newARMError(http.StatusNotFound, CodeSubscriptionNotFound, "The subscription '%s' could not be found.", sub).response(req), nil
	}
	s.mu.Lock()
	seqKey := op + " " + strings.ToLower(req.URL.Path)
	n := s.faultSeq[seqKey]
	s.faultSeq[seqKey]++
	kind := s.opts.Faults.draw(op, req.URL.Path, n, write)
	if kind != "" {
		s.faultLog = append(s.faultLog, FaultEvent{Op: op, Path: req.URL.Path, N: n, Kind: kind})
	}
	s.mu.Unlock()
	call.Fault = kind
	if kind != "" && kind != FaultTimeout {
		return s.faultError(kind, write).response(req), nil
	}
	var remaining = -1
	counted := budgetWrites
	if call.Delete {
		counted = budgetDeletes
	}
	header := "x-ms-ratelimit-remaining-subscription-" + counted.String() + "s"
	if write {
		rem, wait, ok := s.spend(counted)
		if !ok {
			e := newARMError(http.StatusTooManyRequests, CodeSubscriptionThrottled,
				"Number of '%s' requests for subscription '%s' exceeded. Please try again after '%d' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
				counted, s.fleet.SubscriptionID, int(wait.Seconds()+0.999))
			e.RetryAfter = max(wait, time.Millisecond)
			resp := e.response(req)
			resp.Header.Set(header, "0")
			return resp, nil
		}
		remaining = rem
	}
	isLRO := strings.Contains(api, ".Begin")
	var d time.Duration
	switch {
	case isLRO || write:
		d = s.timing.of(LatencyWrite, LatencyWrite)
		if !isLRO {
			d = s.timing.of(op, LatencyWrite)
		}
	default:
		d = s.timing.of(op, LatencyRead)
	}
	call.Latency = d
	if err := sleep(req.Context(), d); err != nil {
		return nil, err
	}

	info := &reqInfo{}
	fctx := context.WithValue(context.WithValue(req.Context(), reqInfoKey{}, info), runtime.CtxAPINameKey{}, api)
	fr := req.WithContext(fctx)
	ft := s.fakeTransport(req.URL.Path)
	resp, err := ft.Do(fr)
	resp, err = s.render(req, resp, err)
	if err != nil {
		return nil, err
	}
	if remaining >= 0 {
		resp.Header.Set(header, strconv.Itoa(remaining))
	}
	s.asARMLongRunning(req, resp, api, info.op, ft)
	if kind == FaultTimeout {
		// The request was applied; its answer is lost.
		call.Latency += s.timing.of(LatencyFaultTimeout, LatencyFaultTimeout)
		if err := sleep(req.Context(), s.timing.of(LatencyFaultTimeout, LatencyFaultTimeout)); err != nil {
			return nil, err
		}
		return s.faultError(FaultTimeout, write).response(req), nil
	}
	return resp, nil
}

// fakeTransport is a fresh transport over the fake servers: each operation gets its own, so the
// fakes' per-path trackers never mix two operations on one resource.
func (s *Sim) fakeTransport(path string) policy.Transporter {
	if strings.Contains(strings.ToLower(path), "/providers/microsoft.support/") {
		return supportfake.NewServerFactoryTransport(s.support)
	}
	return computefake.NewServerFactoryTransport(s.compute)
}

// asARMLongRunning turns the fake server's answer to the first request of a long-running
// operation into ARM's: the fake's "InProgress" becomes an Azure-AsyncOperation header (and, for
// POST and DELETE, a Location header) naming an operation of its own, so that concurrent
// operations on one resource are polled apart, and the SDK's Azure-AsyncOperation poller follows
// it exactly as it follows ARM. An operation that completed at once is answered as ARM answers a
// synchronous completion.
func (s *Sim) asARMLongRunning(req *http.Request, resp *http.Response, api string, op *operation, tr policy.Transporter) {
	status := resp.Header.Get(fakePollerStatus)
	resp.Header.Del(fakePollerStatus)
	if op == nil || status != "InProgress" {
		return
	}
	now := time.Now()
	s.mu.Lock()
	s.lroSeq++
	id := stableUUID(fmt.Sprintf("%d|%s|%d", s.lroSeq, req.URL.Path, now.UnixNano()))
	s.lros[id] = &pendingLRO{id: id, api: api, path: req.URL.Path, op: op, tr: tr, registered: now}
	var old []*pendingLRO
	for _, p := range s.lros {
		if now.Sub(p.registered) > lroRetention {
			old = append(old, p)
		}
	}
	s.mu.Unlock()
	for _, p := range old {
		if done, _ := s.state.opState(p.op); done {
			s.mu.Lock()
			delete(s.lros, p.id)
			s.mu.Unlock()
		}
	}

	provider := "Microsoft.Compute"
	if strings.Contains(strings.ToLower(req.URL.Path), "/providers/microsoft.support/") {
		provider = "Microsoft.Support"
	}
	q := url.Values{}
	if v := req.URL.Query().Get("api-version"); v != "" {
		q.Set("api-version", v)
	}
	base := fmt.Sprintf("%s://%s/subscriptions/%s/providers/%s/locations/%s/operations/%s",
		req.URL.Scheme, req.URL.Host, s.fleet.SubscriptionID, provider, s.fleet.Location, id)
	resp.Header.Set("Azure-AsyncOperation", base+"?"+q.Encode())
	if req.Method == http.MethodPost || req.Method == http.MethodDelete {
		q.Set("monitor", "true")
		resp.Header.Set("Location", base+"?"+q.Encode())
	}
	s.setPollDelay(resp.Header, op)
}

// fakePollerStatus is the header the azcore fake servers mark LRO responses with.
const fakePollerStatus = "Fake-Poller-Status"

// operationStatus answers GET on an operation URL: the Azure-AsyncOperation status document, or,
// for the Location (monitor) URL of a finished operation, its result.
func (s *Sim) operationStatus(req *http.Request, id string, monitor bool) (*http.Response, error) {
	s.mu.Lock()
	p := s.lros[strings.ToLower(id)]
	s.mu.Unlock()
	call := Call{Time: s.state.now(), Method: req.Method, Path: req.URL.Path, Poll: true,
		CorrelationID: req.Header.Get("x-ms-correlation-request-id")}
	defer func() {
		s.mu.Lock()
		s.callLog = append(s.callLog, call)
		s.mu.Unlock()
	}()
	if p == nil {
		call.Status = http.StatusNotFound
		return newARMError(http.StatusNotFound, CodeNotFound, "Operation '%s' was not found.", id).response(req), nil
	}
	call.Op = opName(p.api)
	done, _ := s.state.opState(p.op)
	if monitor && done {
		res, err := s.lroResult(req, p)
		if err != nil {
			return nil, err
		}
		call.Status = res.status
		return &http.Response{StatusCode: res.status, Status: fmt.Sprintf("%d %s", res.status, http.StatusText(res.status)),
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: res.header.Clone(),
			Body: io.NopCloser(bytes.NewReader(res.body)), ContentLength: int64(len(res.body)), Request: req}, nil
	}
	doc := map[string]any{"name": p.id, "status": "InProgress", "startTime": p.op.started.UTC().Format(time.RFC3339Nano)}
	code := http.StatusOK
	if done {
		doc["status"] = "Succeeded"
		doc["endTime"] = p.op.due.UTC().Format(time.RFC3339Nano)
	} else if monitor {
		code = http.StatusAccepted
	}
	body, _ := json.Marshal(doc)
	resp := &http.Response{StatusCode: code, Status: fmt.Sprintf("%d %s", code, http.StatusText(code)), Proto: "HTTP/1.1",
		ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{"Content-Type": {"application/json; charset=utf-8"}},
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Request: req}
	if !done {
		s.setPollDelay(resp.Header, p.op)
	}
	call.Status = code
	return resp, nil
}

// lroResult fetches, once, the terminal response the fake server holds for the operation.
func (s *Sim) lroResult(req *http.Request, p *pendingLRO) (*storedResponse, error) {
	s.mu.Lock()
	res := p.result
	s.mu.Unlock()
	if res != nil {
		return res, nil
	}
	u := *req.URL
	u.Path, u.RawPath, u.RawQuery = p.path+fakePollSuffix, "", ""
	freq, err := http.NewRequestWithContext(context.WithValue(req.Context(), runtime.CtxAPINameKey{}, p.api), http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.tr.Do(freq)
	resp, err = s.render(req, resp, err)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	resp.Header.Del(fakePollerStatus)
	res = &storedResponse{status: resp.StatusCode, header: resp.Header, body: body}
	s.mu.Lock()
	if p.result == nil {
		p.result = res
	}
	res = p.result
	s.mu.Unlock()
	return res, nil
}

// setPollDelay tells the client when to poll: when the operation is due, or soon when its end is
// not known yet.
func (s *Sim) setPollDelay(h http.Header, op *operation) {
	done, left := s.state.opState(op)
	if !done && left <= 0 { // the end is not known yet (a Run Command still executing)
		left = s.timing.scaled(unknownEndPoll)
	}
	setRetryAfter(h, max(left, s.opts.MinPollInterval))
}

// render turns what the fake transport returned into what ARM would send.
func (s *Sim) render(req *http.Request, resp *http.Response, err error) (*http.Response, error) {
	if err == nil {
		return resp, nil
	}
	if ctxErr := req.Context().Err(); ctxErr != nil {
		return nil, ctxErr
	}
	var ae *armError
	if errors.As(err, &ae) {
		return ae.response(req), nil
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return newARMError(re.StatusCode, re.ErrorCode, "%s", re.ErrorCode).response(req), nil
	}
	if strings.Contains(err.Error(), "not implemented") || strings.Contains(err.Error(), "unhandled API") {
		return newARMError(http.StatusNotImplemented, CodeNotImplemented, "azsim does not model this operation: %v", err).response(req), nil
	}
	return newARMError(http.StatusBadRequest, CodeInvalidRequestContent, "%v", err).response(req), nil
}

// subscriptionOf returns the subscription id in an ARM path, or "".
func subscriptionOf(path string) string {
	rest, ok := strings.CutPrefix(path, "/subscriptions/")
	if !ok {
		return ""
	}
	sub, _, _ := strings.Cut(rest, "/")
	return sub
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
