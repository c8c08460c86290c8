package localhost

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/vmrescue/vmrescue/internal/localhost/queue"
)

// Invocation records one invocation of a function: what triggered it and how it ended.
type Invocation struct {
	Seq        int64         `json:"seq"`
	Function   string        `json:"function"`
	Trigger    string        `json:"trigger"`
	Start      time.Time     `json:"start"`
	Duration   time.Duration `json:"-"`
	DurationMS float64       `json:"durationMs"`
	Status     int           `json:"status,omitempty"` // the handler's HTTP status; 0 without an answer
	Outcome    string        `json:"outcome"`          // running, succeeded or failed
	Error      string        `json:"error,omitempty"`
	HandlerPID int           `json:"handlerPid,omitempty"`
	Logs       []string      `json:"logs,omitempty"`
	// Service Bus deliveries
	Queue         string `json:"queue,omitempty"`
	MessageID     string `json:"messageId,omitempty"`
	DeliveryCount int    `json:"deliveryCount,omitempty"`
	IncidentID    string `json:"incidentId,omitempty"`
	Stage         string `json:"stage,omitempty"`
	// Event Grid events
	EventID   string `json:"eventId,omitempty"`
	EventType string `json:"eventType,omitempty"`
	Subject   string `json:"subject,omitempty"`
	// Forwarded HTTP requests: method and path
	Path string `json:"path,omitempty"`
	// Request is the payload sent to the handler, with Options.RecordRequests.
	Request json.RawMessage `json:"request,omitempty"`
}

// Outcomes of an invocation.
const (
	OutcomeRunning   = "running"
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
)

func outcome(ok bool) string {
	if ok {
		return OutcomeSucceeded
	}
	return OutcomeFailed
}

func nowUTC() time.Time { return time.Now().UTC() }

// InvocationCounts counts invocations by outcome.
type InvocationCounts struct {
	Total     int `json:"total"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Running   int `json:"running"`
}

// HandlerStatus describes the handler child process.
type HandlerStatus struct {
	PID      int      `json:"pid"`
	Port     int      `json:"port"`
	URL      string   `json:"url"`
	Ready    bool     `json:"ready"`
	Restarts int      `json:"restarts"`
	Exits    []string `json:"exits,omitempty"`
}

// TimerStatusView describes a timer function.
type TimerStatusView struct {
	Schedule string    `json:"schedule"`
	Last     time.Time `json:"last"`
	Next     time.Time `json:"next"`
	Runs     int       `json:"runs"`
}

// Status is the host's state, served at /runtime/status.
type Status struct {
	URL         string                     `json:"url"`
	StartedAt   time.Time                  `json:"startedAt"`
	TimeScale   float64                    `json:"timeScale"`
	Handler     HandlerStatus              `json:"handler"`
	Queues      map[string]queue.Stats     `json:"queues"`
	Timers      map[string]TimerStatusView `json:"timers"`
	Invocations InvocationCounts           `json:"invocations"`
	Running     []Invocation               `json:"running"`
	// Idle is true when no queue holds a message (available, scheduled or locked) and no
	// invocation runs: the pipeline has nothing left to do.
	Idle bool `json:"idle"`
}

// Status returns the host's state.
func (h *Host) Status() Status {
	h.mu.Lock()
	st := Status{URL: h.URL(), StartedAt: h.started, TimeScale: h.opts.TimeScale, Timers: map[string]TimerStatusView{}}
	child := h.child
	h.mu.Unlock()
	if child != nil {
		st.Handler = HandlerStatus{PID: child.PID(), Port: child.Port(), URL: child.URL(), Ready: child.Ready(),
			Restarts: child.Restarts(), Exits: child.Exits()}
	}
	st.Queues = h.broker.Stats()
	for name, ts := range h.timers {
		st.Timers[name] = ts.view()
	}
	h.invMu.Lock()
	st.Invocations = h.counts
	st.Invocations.Running = len(h.running)
	st.Running = slices.SortedFunc(maps.Values(h.running), func(a, b Invocation) int { return int(a.Seq - b.Seq) })
	h.invMu.Unlock()
	st.Idle = st.Invocations.Running == 0 && h.broker.Idle()
	return st
}

// begin records an invocation that starts and returns its sequence number.
func (h *Host) begin(rec Invocation) int64 {
	h.invMu.Lock()
	defer h.invMu.Unlock()
	h.invSeq++
	rec.Seq, rec.Outcome = h.invSeq, OutcomeRunning
	rec.Request = nil
	h.running[rec.Seq] = rec
	return rec.Seq
}

// end records the end of invocation seq.
func (h *Host) end(seq int64, rec Invocation) {
	h.invMu.Lock()
	defer h.invMu.Unlock()
	delete(h.running, seq)
	rec.Seq = seq
	h.appendLocked(rec)
}

// record adds an invocation that has already ended.
func (h *Host) record(rec Invocation) {
	h.invMu.Lock()
	defer h.invMu.Unlock()
	h.invSeq++
	rec.Seq = h.invSeq
	h.appendLocked(rec)
}

func (h *Host) appendLocked(rec Invocation) {
	rec.DurationMS = float64(rec.Duration.Microseconds()) / 1000
	h.counts.Total++
	if rec.Outcome == OutcomeSucceeded {
		h.counts.Succeeded++
	} else {
		h.counts.Failed++
	}
	h.invs = append(h.invs, rec)
	if len(h.invs) > invocationHistory {
		h.invs = slices.Delete(h.invs, 0, len(h.invs)-invocationHistory)
	}
}

// Invocations returns the finished invocations whose sequence number is above after, in the
// order they finished.
func (h *Host) Invocations(after int64) []Invocation {
	h.invMu.Lock()
	defer h.invMu.Unlock()
	var out []Invocation
	for _, r := range h.invs {
		if r.Seq > after {
			out = append(out, r)
		}
	}
	return out
}

// serveInvocations answers GET /runtime/invocations?after=N[&function=F][&incident=ID].
func (h *Host) serveInvocations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, _ := strconv.ParseInt(q.Get("after"), 10, 64)
	fn, inc := q.Get("function"), q.Get("incident")
	out := []Invocation{}
	for _, rec := range h.Invocations(after) {
		if (fn == "" || rec.Function == fn) && (inc == "" || rec.IncidentID == inc) {
			out = append(out, rec)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// deadLetterView is a dead letter as /runtime/bus/deadletters shows it.
type deadLetterView struct {
	MessageID             string            `json:"messageId"`
	SequenceNumber        int64             `json:"sequenceNumber"`
	DeliveryCount         int               `json:"deliveryCount"`
	DeadLetterSource      string            `json:"deadLetterSource,omitempty"`
	ApplicationProperties map[string]string `json:"applicationProperties"`
	Body                  json.RawMessage   `json:"body"`
}

// serveDeadLetters answers GET /runtime/bus/deadletters?queue=Q (default "failed").
func (h *Host) serveDeadLetters(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("queue")
	if name == "" {
		name = DeadLetterQueue
	}
	out := []deadLetterView{}
	for _, m := range h.broker.DeadLetters(name) {
		body := json.RawMessage(m.Body)
		if !json.Valid(body) {
			body, _ = json.Marshal(string(m.Body))
		}
		out = append(out, deadLetterView{MessageID: m.MessageID, SequenceNumber: m.SequenceNumber,
			DeliveryCount: m.DeliveryCount, DeadLetterSource: m.DeadLetterSource,
			ApplicationProperties: m.ApplicationProperties, Body: body})
	}
	writeJSON(w, http.StatusOK, out)
}
