// Package localhost plays the Azure Functions host on one machine for `handler local`: it reads
// the app's host.json and functions/*/function.json, runs the custom handler (`handler serve`) as
// a child process the way the host does, and serves
//
//	/api/...                                    forwarded as is to the handler (httpTrigger routes)
//	/runtime/webhooks/eventgrid?functionName=F  Event Grid webhook, both schemas and handshakes
//	POST /runtime/bus/messages                  the local bus: a bus.Envelope onto its queue
//	GET  /runtime/status                        handler, queues, timers, invocation counts
//	GET  /runtime/invocations?after=N           invocations that finished, in order
//	GET  /runtime/bus/deadletters?queue=Q       dead letters kept on a queue (those of "failed")
//	POST /admin/functions/F                     run a timer function now, as the host's admin API
//
// Each serviceBusTrigger function gets an in-memory queue with Service Bus semantics (package
// queue), each timerTrigger function runs on its NCRONTAB schedule, and every invocation reaches
// the handler in the real host's shape (see invocation.go).
//
// StartStack adds what the handler needs around the host: Azurite for Blob Storage and the Azure
// simulator (package azsim) on loopback HTTP.
package localhost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/functions"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/localhost/queue"
)

// Paths the host serves besides /api.
const (
	BusPath         = "/runtime/bus"
	EventGridPath   = "/runtime/webhooks/eventgrid"
	StatusPath      = "/runtime/status"
	InvocationsPath = "/runtime/invocations"
	DeadLettersPath = "/runtime/bus/deadletters"
	AdminPath       = "/admin/functions/"
)

// DefaultAddr is where the Functions host listens locally.
const DefaultAddr = "127.0.0.1:7071"

// DeadLetterQueue is the queue that receives the dead letters of every other queue, as
// forwardDeadLetteredMessagesTo does in Azure.
const DeadLetterQueue = "failed"

// Limits and bounds of the host's own HTTP handling.
const (
	maxEnvelope        = queue.MaxMessageSize + 64<<10 // a bus.Envelope around a message body
	maxResponse        = 4 << 20                       // an invocation response read from the handler
	readHeaderTimeout  = 10 * time.Second
	idleTimeout        = 2 * time.Minute
	proxyReadyWait     = 30 * time.Second // an /api request waits this long for a restarting handler
	invocationHistory  = 5000             // invocations kept for /runtime/invocations
	minTimerGap        = time.Second      // the shortest pause between two runs of one timer
	pastDueAfter       = 5 * time.Second  // a timer run this late is IsPastDue
	serverStopTimeout  = 5 * time.Second
	invocationLogLimit = 50 // Logs lines kept per invocation record
)

// Options configures a Host.
type Options struct {
	// App is the app to host; nil loads AppDir.
	App    *App
	AppDir string
	// Addr is the listen address; "127.0.0.1:0" picks a free port. Default DefaultAddr.
	Addr string
	// HandlerPath is the custom handler executable; default the running executable.
	HandlerPath string
	// HandlerArgs are its arguments; nil is host.json's customHandler arguments.
	HandlerArgs []string
	// HandlerPort fixes the handler's FUNCTIONS_CUSTOMHANDLER_PORT; 0 picks a free port.
	HandlerPort int
	// Env holds app settings for the handler, on top of this process's environment. The host sets
	// FUNCTIONS_CUSTOMHANDLER_PORT, VMRESCUE_LOCAL_BUS_URL and VMRESCUE_TIME_SCALE itself.
	Env []string
	// TimeScale compresses the host's own clock: scheduled messages and timer schedules run
	// TimeScale times as long (0.05: twenty times faster). Zero is 1.
	TimeScale float64
	// Queue settings; zero takes the defaults of package queue (as vmrescue's infrastructure sets
	// its queues) and host.json.
	MaxDeliveryCount int
	LockDuration     time.Duration
	DuplicateWindow  time.Duration
	// DisableTimers leaves timer functions to POST /admin/functions/<name>.
	DisableTimers bool
	// RecordRequests keeps each invocation's request payload in its record (tests).
	RecordRequests bool
	// Output receives the handler's log and the host's, line by line; nil is os.Stderr.
	Output io.Writer
	// ReadyTimeout and StopTimeout bound the handler's start and stop.
	ReadyTimeout time.Duration
	StopTimeout  time.Duration
}

// Host is the local Functions host.
type Host struct {
	opts   Options
	app    *App
	log    *slog.Logger
	out    io.Writer
	ln     net.Listener
	srv    *http.Server
	broker *queue.Broker
	routes []httpRoute
	client *http.Client
	proxy  *httputil.ReverseProxy

	mu      sync.Mutex
	child   *Child
	started time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	timers  map[string]*timerState
	stopped bool

	invMu   sync.Mutex
	invSeq  int64
	invs    []Invocation
	running map[int64]Invocation
	counts  InvocationCounts
}

// New loads the app, creates its queues and listens on Addr; Start runs it.
func New(opts Options) (*Host, error) {
	if opts.App == nil {
		app, err := LoadApp(opts.AppDir)
		if err != nil {
			return nil, err
		}
		opts.App = app
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.Output == nil {
		opts.Output = os.Stderr
	}
	if opts.TimeScale <= 0 {
		opts.TimeScale = 1
	}
	if opts.HandlerArgs == nil {
		opts.HandlerArgs = opts.App.Host.Arguments
	}
	if opts.HandlerPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("handler executable: %w", err)
		}
		opts.HandlerPath = exe
	}
	out := &lineWriter{w: opts.Output, prefix: "[host] "}
	h := &Host{
		opts: opts, app: opts.App, out: opts.Output,
		log: slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})),
		broker:  queue.NewBroker(),
		routes:  httpRoutes(opts.App),
		client:  &http.Client{}, // each invocation is bounded by its context (functionTimeout)
		timers:  map[string]*timerState{},
		running: map[int64]Invocation{},
	}
	hasDLQ := false
	for _, f := range h.app.Functions {
		hasDLQ = hasDLQ || (f.Trigger == functions.ServiceBus && f.Queue == DeadLetterQueue)
	}
	for _, f := range h.app.Functions {
		switch f.Trigger {
		case functions.ServiceBus:
			qo := queue.Options{
				LockDuration: opts.LockDuration, MaxDeliveryCount: opts.MaxDeliveryCount,
				DuplicateWindow: opts.DuplicateWindow, MaxConcurrentCalls: h.app.Host.MaxConcurrentCalls,
				MaxAutoLockRenewal: h.app.Host.MaxAutoLockRenewal, ScheduleScale: opts.TimeScale,
				Timeout: h.app.Host.FunctionTimeout,
			}
			if h.app.Host.MaxAutoLockRenewal == 0 {
				qo.MaxAutoLockRenewal = -1
			}
			if hasDLQ && f.Queue != DeadLetterQueue {
				qo.ForwardDeadLettersTo = DeadLetterQueue
			}
			if err := h.broker.AddQueue(f.Queue, qo); err != nil {
				return nil, err
			}
		case functions.Timer:
			h.timers[f.Name] = &timerState{fn: f, runNow: make(chan struct{}, 1)}
		}
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", opts.Addr, err)
	}
	h.ln = ln
	h.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(h.childURL())
			pr.Out.Host = pr.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeProblem(w, r, http.StatusBadGateway, "the handler did not answer: "+err.Error())
		},
	}
	h.srv = &http.Server{
		Handler:           h.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	return h, nil
}

// URL is the host's base URL, http://127.0.0.1:PORT.
func (h *Host) URL() string { return "http://" + h.ln.Addr().String() }

// BusURL is the local bus URL the handler is given (VMRESCUE_LOCAL_BUS_URL).
func (h *Host) BusURL() string { return h.URL() + BusPath }

// App is the hosted app.
func (h *Host) App() *App { return h.app }

// Broker is the in-memory Service Bus.
func (h *Host) Broker() *queue.Broker { return h.broker }

// Child is the handler process supervisor; nil before Start.
func (h *Host) Child() *Child {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.child
}

func (h *Host) childURL() *url.URL {
	u, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(h.Child().Port()))
	return u
}

// Start serves HTTP, starts the handler and waits until it is ready, then starts delivering
// queue messages and running timers. ctx bounds the start only; Stop ends everything.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	if h.cancel != nil || h.stopped {
		h.mu.Unlock()
		return errors.New("host already started")
	}
	runCtx, cancel := context.WithCancel(context.Background())
	h.cancel, h.started = cancel, time.Now()
	h.mu.Unlock()

	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if err := h.srv.Serve(h.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			h.log.Error("host server stopped", "err", err)
		}
	}()

	env := append(slices.Clone(h.opts.Env),
		config.LocalBusURL+"="+h.BusURL(),
		// The handler divides the waits it measures on the clock by the scale at which this
		// host compresses scheduled messages, so that they are not compressed twice.
		config.TimeScale+"="+strconv.FormatFloat(h.opts.TimeScale, 'g', -1, 64),
		"FUNCTIONS_WORKER_RUNTIME=custom",
	)
	child, err := StartChild(ctx, ChildOptions{
		Path: h.opts.HandlerPath, Args: h.opts.HandlerArgs, Dir: h.app.Dir, Env: env,
		Port: h.opts.HandlerPort, Output: h.out, Prefix: "[handler] ",
		ReadyTimeout: h.opts.ReadyTimeout, StopTimeout: h.opts.StopTimeout, Logger: h.log,
	})
	if err != nil {
		_ = h.Stop(context.Background())
		return err
	}
	h.mu.Lock()
	h.child = child
	h.mu.Unlock()

	for _, f := range h.app.Functions {
		if f.Trigger == functions.ServiceBus {
			if err := h.broker.Subscribe(runCtx, f.Queue, h.deliverMessage(f)); err != nil {
				_ = h.Stop(context.Background())
				return err
			}
		}
	}
	for _, ts := range h.timers {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.runTimer(runCtx, ts)
		}()
	}
	h.log.Info("host started", "url", h.URL(), "handler", child.URL(), "functions", len(h.app.Functions))
	return nil
}

// Stop ends the timers and queue deliveries (messages in flight stay queued), stops the handler
// with SIGTERM (SIGKILL after the stop timeout), and closes the HTTP server.
func (h *Host) Stop(ctx context.Context) error {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return nil
	}
	h.stopped = true
	cancel, child := h.cancel, h.child
	h.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	h.broker.Stop()
	if child != nil {
		child.Stop()
	}
	sctx, stop := context.WithTimeout(ctx, serverStopTimeout)
	defer stop()
	err := h.srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = h.srv.Close()
	}
	h.ln.Close()
	h.wg.Wait()
	h.log.Info("host stopped")
	return err
}

// Handler is the host's HTTP surface.
func (h *Host) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+BusPath+bus.LocalPath, h.serveBus)
	mux.HandleFunc("GET "+StatusPath, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, h.Status()) })
	mux.HandleFunc("GET "+InvocationsPath, h.serveInvocations)
	mux.HandleFunc("GET "+DeadLettersPath, h.serveDeadLetters)
	mux.HandleFunc("POST "+AdminPath+"{name}", h.serveAdmin)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "running", "status_url": StatusPath})
	})
	prefix := "/" + strings.ToLower(h.app.Host.RoutePrefix)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.ToLower(r.URL.Path)
		switch {
		case p == EventGridPath || p == EventGridPath+"/":
			h.serveEventGrid(w, r)
		case p == "/" || strings.HasPrefix(p, "/runtime/") || strings.HasPrefix(p, "/admin/"):
			mux.ServeHTTP(w, r)
		case prefix == "/" || p == prefix || strings.HasPrefix(p, prefix+"/"):
			h.serveAPI(w, r)
		default:
			writeProblem(w, r, http.StatusNotFound, fmt.Sprintf("nothing at %s", r.URL.Path))
		}
	})
}

// serveAPI forwards an HTTP request to the handler as enableForwardingHttpRequest does: original
// method, path, query, headers and body. Only a path and method that an httpTrigger function
// declares are forwarded.
func (h *Host) serveAPI(w http.ResponseWriter, r *http.Request) {
	fn, ok := findRoute(h.routes, h.app.Host.RoutePrefix, r.Method, r.URL.Path)
	if !ok {
		writeProblem(w, r, http.StatusNotFound, fmt.Sprintf("no function takes %s %s", r.Method, r.URL.Path))
		return
	}
	child := h.Child()
	if child == nil {
		writeProblem(w, r, http.StatusServiceUnavailable, "the handler is starting")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), proxyReadyWait)
	err := child.WaitReady(ctx)
	cancel()
	if err != nil {
		writeProblem(w, r, http.StatusServiceUnavailable, "the handler is not ready: "+err.Error())
		return
	}
	start := time.Now()
	rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	h.proxy.ServeHTTP(rw, r)
	h.record(Invocation{Function: fn.Name, Trigger: fn.Trigger, Start: start, Duration: time.Since(start),
		Status: rw.status, Outcome: outcome(rw.status < 500), Path: r.Method + " " + r.URL.RequestURI()})
}

// serveBus takes a bus.Envelope from the handler's Local bus.
func (h *Host) serveBus(w http.ResponseWriter, r *http.Request) {
	var env bus.Envelope
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEnvelope))
	if err != nil {
		writeProblem(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("envelope over %d bytes", maxEnvelope))
		return
	}
	if err := json.Unmarshal(body, &env); err != nil {
		writeProblem(w, r, http.StatusBadRequest, "not a bus envelope: "+err.Error())
		return
	}
	if env.Queue == "" || len(env.Body) == 0 {
		writeProblem(w, r, http.StatusBadRequest, "envelope needs queue and body")
		return
	}
	msg := queue.Message{
		MessageID: env.MessageID, ContentType: env.ContentType, CorrelationID: env.CorrelationID,
		Subject: env.Subject, ApplicationProperties: env.ApplicationProperties, Body: env.Body,
	}
	if env.ScheduledEnqueueTime != nil {
		msg.ScheduledEnqueueTime = *env.ScheduledEnqueueTime
	}
	res, err := h.broker.Send(env.Queue, msg)
	switch {
	case errors.Is(err, queue.ErrUnknownQueue):
		writeProblem(w, r, http.StatusNotFound, fmt.Sprintf("no queue %q: the queues are %s", env.Queue, strings.Join(h.broker.Queues(), ", ")))
		return
	case errors.Is(err, queue.ErrTooLarge):
		writeProblem(w, r, http.StatusRequestEntityTooLarge, err.Error())
		return
	case errors.Is(err, queue.ErrStopped):
		writeProblem(w, r, http.StatusServiceUnavailable, "the host is stopping")
		return
	case err != nil:
		writeProblem(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	if res.Duplicate {
		h.log.Info("duplicate message absorbed", "queue", env.Queue, "messageId", env.MessageID)
	}
	writeJSON(w, http.StatusAccepted, map[string]any{
		"queue": res.Queue, "messageId": env.MessageID, "sequenceNumber": res.SequenceNumber,
		"duplicate": res.Duplicate, "visibleAt": res.VisibleAt,
	})
}

// deliverMessage is the queue handler of a serviceBusTrigger function.
func (h *Host) deliverMessage(fn Function) queue.Handler {
	return func(ctx context.Context, msg queue.Message) error {
		payload, err := ServiceBusInvocation(fn.Binding, fn.DataType, msg, newSys(fn.Name, time.Now()))
		if err != nil {
			return err
		}
		rec := Invocation{
			Function: fn.Name, Trigger: fn.Trigger, Queue: fn.Queue, MessageID: msg.MessageID,
			DeliveryCount: msg.DeliveryCount, IncidentID: msg.ApplicationProperties["incidentId"],
			Stage: msg.ApplicationProperties["stage"],
		}
		return h.invoke(ctx, fn, payload, rec)
	}
}

// invoke POSTs one invocation to the handler at /<FunctionName> and records it. A non-2xx answer,
// an answer that is not JSON, or a transport error is a failed invocation.
func (h *Host) invoke(ctx context.Context, fn Function, payload []byte, rec Invocation) error {
	rec.Start = time.Now()
	if h.opts.RecordRequests {
		rec.Request = json.RawMessage(payload)
	}
	child := h.Child()
	if child == nil {
		return errors.New("handler not started")
	}
	seq := h.begin(rec)
	err := child.WaitReady(ctx)
	if err == nil {
		rec.HandlerPID = child.PID()
		rec.Status, rec.Logs, err = h.post(ctx, child.URL()+"/"+fn.Name, payload)
		if err != nil && rec.Status == 0 && ctx.Err() == nil {
			child.Suspect(rec.HandlerPID) // no answer at all: the process may have died
		}
	}
	rec.Duration = time.Since(rec.Start)
	rec.Outcome = outcome(err == nil)
	if err != nil {
		rec.Error = err.Error()
	}
	h.end(seq, rec)
	return err
}

func (h *Host) post(ctx context.Context, url string, payload []byte) (int, []string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("invoke %s: %w", req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("invoke %s: read response: %w", req.URL.Path, err)
	}
	var out hostproto.Response
	jsonErr := json.Unmarshal(body, &out)
	logs := out.Logs
	name := strings.TrimPrefix(req.URL.Path, "/")
	for _, l := range logs {
		fmt.Fprintf(h.out, "[%s] %s\n", name, l)
	}
	if len(logs) > invocationLogLimit {
		logs = logs[len(logs)-invocationLogLimit:]
	}
	switch {
	case resp.StatusCode/100 != 2:
		return resp.StatusCode, logs, fmt.Errorf("handler answered %s%s", resp.Status, lastLog(logs))
	case jsonErr != nil:
		return resp.StatusCode, logs, fmt.Errorf("handler answered %s with a body that is not an invocation response: %w", resp.Status, jsonErr)
	}
	return resp.StatusCode, logs, nil
}

func lastLog(logs []string) string {
	if len(logs) == 0 {
		return ""
	}
	return ": " + logs[len(logs)-1]
}

// serveAdmin runs a timer function now: POST /admin/functions/<name>, as the host's admin API.
func (h *Host) serveAdmin(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	fn, ok := h.app.Function(name)
	if !ok {
		writeProblem(w, r, http.StatusNotFound, fmt.Sprintf("no function %q", name))
		return
	}
	if err := h.RunTimer(fn.Name); err != nil {
		writeProblem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// Send puts a message on a queue as the handler's bus would (tests, tools).
func (h *Host) Send(env bus.Envelope) (queue.SendResult, error) {
	msg := queue.Message{MessageID: env.MessageID, ContentType: env.ContentType, CorrelationID: env.CorrelationID,
		Subject: env.Subject, ApplicationProperties: env.ApplicationProperties, Body: env.Body}
	if env.ScheduledEnqueueTime != nil {
		msg.ScheduledEnqueueTime = *env.ScheduledEnqueueTime
	}
	return h.broker.Send(env.Queue, msg)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// problem is an RFC 9457 problem details body, as the handler's API writes them.
type problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Instance string `json:"instance,omitempty"`
}

func writeProblem(w http.ResponseWriter, r *http.Request, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{Type: "about:blank", Title: http.StatusText(status), Status: status,
		Detail: detail, Instance: r.URL.Path})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
