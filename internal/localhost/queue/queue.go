// Package queue is the in-memory Service Bus of `handler local`: named queues with the semantics
// vmrescue relies on in Azure, delivered to a handler with the Functions host's trigger behaviour.
//
//   - Peek-lock: a delivery holds the message under a lock of LockDuration. While the handler runs,
//     the lock is renewed as the Functions host does (host.json maxAutoLockRenewalDuration); a
//     lock that runs out makes the message available again, and the late completion is lost.
//   - DeliveryCount rises with every delivery. A message abandoned (the handler failed) or whose
//     lock ran out after MaxDeliveryCount deliveries is dead-lettered with reason
//     MaxDeliveryCountExceeded; with ForwardDeadLettersTo it is forwarded there, as Azure's
//     forwardDeadLetteredMessagesTo does, with DeadLetterReason, DeadLetterErrorDescription and
//     DeadLetterSource set.
//   - ScheduledEnqueueTime: the message stays invisible until then.
//   - Duplicate detection: a message whose MessageID was sent to the same queue within
//     DuplicateWindow is accepted and dropped.
//   - Bounded concurrency: at most MaxConcurrentCalls deliveries of a queue run at once
//     (host.json maxConcurrentCalls).
//   - autoCompleteMessages: a handler that returns nil completes the message; an error abandons it.
//
// Time is the wall clock; ScheduleScale compresses scheduled waits for fast local runs.
package queue

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"
)

// Defaults, as vmrescue's Service Bus namespace configures its queues (infra/modules/servicebus.bicep)
// and as the Functions host configures its processor.
const (
	DefaultLockDuration       = 5 * time.Minute
	DefaultMaxDeliveryCount   = 10
	DefaultDuplicateWindow    = 24 * time.Hour
	DefaultMaxConcurrentCalls = 16
	DefaultMaxAutoLockRenewal = 5 * time.Minute
	// MaxMessageSize is the largest message a Standard namespace takes, in bytes.
	MaxMessageSize = 256 << 10
)

// Dead-letter properties, as Service Bus names them.
const (
	PropDeadLetterReason      = "DeadLetterReason"
	PropDeadLetterDescription = "DeadLetterErrorDescription"
	// ReasonMaxDeliveryCount is the reason Service Bus gives a message it dead-letters after too
	// many deliveries.
	ReasonMaxDeliveryCount = "MaxDeliveryCountExceeded"
)

// lockRenewBuffer is how long before a lock runs out the host renews it.
const lockRenewBuffer = 10 * time.Second

// Errors.
var (
	ErrUnknownQueue = errors.New("unknown queue")
	ErrTooLarge     = errors.New("message too large")
	ErrStopped      = errors.New("broker stopped")
)

// Message is a Service Bus message. The sender sets the fields up to ScheduledEnqueueTime; the
// broker sets the others on each delivery.
type Message struct {
	MessageID             string
	ContentType           string
	CorrelationID         string
	Subject               string
	ApplicationProperties map[string]string
	Body                  []byte
	ScheduledEnqueueTime  time.Time // zero: now

	SequenceNumber   int64
	EnqueuedTime     time.Time // when it became available (the scheduled time for a scheduled message)
	DeliveryCount    int
	LockToken        string
	LockedUntil      time.Time
	DeadLetterSource string // the queue a forwarded dead letter came from
}

func (m Message) clone() Message {
	m.ApplicationProperties = maps.Clone(m.ApplicationProperties)
	m.Body = slices.Clone(m.Body)
	return m
}

// Options configures one queue. Zero fields take the defaults above.
type Options struct {
	LockDuration       time.Duration
	MaxDeliveryCount   int
	DuplicateWindow    time.Duration
	MaxConcurrentCalls int
	// MaxAutoLockRenewal is how long the host keeps renewing a delivery's lock while the handler
	// runs; negative disables renewal.
	MaxAutoLockRenewal time.Duration
	// ForwardDeadLettersTo names the queue that receives this queue's dead letters; empty keeps
	// them in this queue's dead-letter queue.
	ForwardDeadLettersTo string
	// ScheduleScale multiplies the wait of a scheduled message (ScheduledEnqueueTime minus the
	// send time), for fast local runs; zero or negative is 1 (real time).
	ScheduleScale float64
	// Timeout bounds one delivery (host.json functionTimeout); the handler's context ends then and
	// the delivery counts as failed. Zero is no bound.
	Timeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.LockDuration <= 0 {
		o.LockDuration = DefaultLockDuration
	}
	if o.MaxDeliveryCount <= 0 {
		o.MaxDeliveryCount = DefaultMaxDeliveryCount
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	if o.MaxConcurrentCalls <= 0 {
		o.MaxConcurrentCalls = DefaultMaxConcurrentCalls
	}
	if o.MaxAutoLockRenewal == 0 {
		o.MaxAutoLockRenewal = DefaultMaxAutoLockRenewal
	}
	if o.ScheduleScale <= 0 {
		o.ScheduleScale = 1
	}
	return o
}

// Handler processes one delivery. nil completes the message; an error abandons it.
type Handler func(ctx context.Context, msg Message) error

// SendResult says what became of a sent message.
type SendResult struct {
	Queue          string
	SequenceNumber int64     // 0 for a duplicate
	Duplicate      bool      // absorbed by duplicate detection
	VisibleAt      time.Time // when it becomes available
}

// Stats counts a queue's messages and deliveries.
type Stats struct {
	Active       int `json:"active"`       // available now
	Scheduled    int `json:"scheduled"`    // waiting for their ScheduledEnqueueTime
	Locked       int `json:"locked"`       // delivered and locked
	InFlight     int `json:"inFlight"`     // handler invocations running (may exceed Locked after a lock loss)
	DeadLettered int `json:"deadLettered"` // held in this queue's dead-letter queue

	Sent           int `json:"sent"`
	Duplicates     int `json:"duplicates"`
	Deliveries     int `json:"deliveries"`
	Completed      int `json:"completed"`
	Abandoned      int `json:"abandoned"`
	LockRenewals   int `json:"lockRenewals"`
	LockLost       int `json:"lockLost"`
	DeadLetters    int `json:"deadLetters"` // dead-lettered in total, forwarded or kept
	Forwarded      int `json:"forwarded"`   // dead letters forwarded to ForwardDeadLettersTo
	MaxInFlight    int `json:"maxInFlight"` // the most handler invocations seen at once
	MaxConcurrency int `json:"maxConcurrency"`
}

// Broker holds the queues.
type Broker struct {
	mu      sync.Mutex
	queues  map[string]*queue
	seq     int64
	stopped bool
	wg      sync.WaitGroup
	now     func() time.Time
}

// NewBroker returns an empty broker.
func NewBroker() *Broker {
	return &Broker{queues: map[string]*queue{}, now: time.Now}
}

type entry struct {
	msg        Message
	sentAt     time.Time
	visibleAt  time.Time
	locked     bool
	receivedAt time.Time
	running    bool
}

type seenID struct {
	id string
	at time.Time
}

type queue struct {
	name string
	opts Options
	b    *Broker

	handler Handler
	cancel  context.CancelFunc

	entries    []*entry // available, scheduled and locked, in sequence order
	deadLetter []Message
	seen       map[string]time.Time // MessageID -> send time, for duplicate detection
	seenOrder  []seenID             // the same, oldest first, for pruning
	stats      Stats
	wake       chan struct{}
}

// AddQueue creates a queue.
func (b *Broker) AddQueue(name string, opts Options) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if name == "" {
		return errors.New("queue: empty name")
	}
	if _, dup := b.queues[name]; dup {
		return fmt.Errorf("queue %q: already exists", name)
	}
	opts = opts.withDefaults()
	b.queues[name] = &queue{name: name, opts: opts, b: b, seen: map[string]time.Time{}, wake: make(chan struct{}, 1),
		stats: Stats{MaxConcurrency: opts.MaxConcurrentCalls}}
	return nil
}

// Queues lists the queue names, sorted.
func (b *Broker) Queues() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Sorted(maps.Keys(b.queues))
}

// Send puts msg on the named queue. A message whose MessageID the queue saw within its duplicate
// window is dropped and reported as Duplicate, as Service Bus does. An empty MessageID gets a
// random one.
func (b *Broker) Send(name string, msg Message) (SendResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q, ok := b.queues[name]
	if !ok {
		return SendResult{}, fmt.Errorf("%w %q", ErrUnknownQueue, name)
	}
	if b.stopped {
		return SendResult{}, ErrStopped
	}
	if len(msg.Body) > MaxMessageSize {
		return SendResult{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(msg.Body), MaxMessageSize)
	}
	now := b.now()
	if msg.MessageID == "" {
		msg.MessageID = newUUID()
	}
	q.pruneSeen(now)
	if _, dup := q.seen[msg.MessageID]; dup {
		q.stats.Duplicates++
		return SendResult{Queue: name, Duplicate: true}, nil
	}
	q.seen[msg.MessageID] = now
	q.seenOrder = append(q.seenOrder, seenID{msg.MessageID, now})
	q.stats.Sent++
	return q.enqueueLocked(msg, now), nil
}

func (q *queue) pruneSeen(now time.Time) {
	n := 0
	for n < len(q.seenOrder) && now.Sub(q.seenOrder[n].at) >= q.opts.DuplicateWindow {
		if q.seen[q.seenOrder[n].id].Equal(q.seenOrder[n].at) {
			delete(q.seen, q.seenOrder[n].id)
		}
		n++
	}
	if n > 0 {
		q.seenOrder = slices.Delete(q.seenOrder, 0, n)
	}
}

// enqueueLocked adds msg; b.mu is held.
func (q *queue) enqueueLocked(msg Message, now time.Time) SendResult {
	q.b.seq++
	msg = msg.clone()
	msg.SequenceNumber = q.b.seq
	msg.DeliveryCount, msg.LockToken, msg.LockedUntil = 0, "", time.Time{}
	visible := now
	if !msg.ScheduledEnqueueTime.IsZero() && msg.ScheduledEnqueueTime.After(now) {
		visible = now.Add(time.Duration(float64(msg.ScheduledEnqueueTime.Sub(now)) * q.opts.ScheduleScale))
	}
	msg.EnqueuedTime = visible.UTC()
	q.entries = append(q.entries, &entry{msg: msg, sentAt: now, visibleAt: visible})
	q.signal()
	return SendResult{Queue: q.name, SequenceNumber: msg.SequenceNumber, VisibleAt: visible}
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Subscribe delivers the named queue's messages to h until ctx ends or Stop is called. A queue
// has at most one subscriber.
func (b *Broker) Subscribe(ctx context.Context, name string, h Handler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	q, ok := b.queues[name]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownQueue, name)
	}
	if b.stopped {
		return ErrStopped
	}
	if q.handler != nil {
		return fmt.Errorf("queue %q: already has a subscriber", name)
	}
	ctx, cancel := context.WithCancel(ctx)
	q.handler, q.cancel = h, cancel
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		q.run(ctx)
	}()
	return nil
}

// Stop ends every subscription and waits for the running deliveries to return; their messages
// stay on their queues.
func (b *Broker) Stop() {
	b.mu.Lock()
	b.stopped = true
	for _, q := range b.queues {
		if q.cancel != nil {
			q.cancel()
		}
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// run is a queue's dispatcher: it activates scheduled messages, renews and expires locks, and
// hands available messages to the handler while a concurrency slot is free.
func (q *queue) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.b.mu.Lock()
		if q.b.stopped || ctx.Err() != nil {
			q.b.mu.Unlock()
			return
		}
		now := q.b.now()
		next := q.maintainLocked(now)
		for q.stats.InFlight < q.opts.MaxConcurrentCalls {
			e := q.nextAvailableLocked(now)
			if e == nil {
				break
			}
			q.lockLocked(e, now)
			msg := e.msg.clone()
			q.b.wg.Add(1)
			go q.deliver(ctx, e, msg)
			if t := e.msg.LockedUntil; next.IsZero() || t.Before(next) {
				next = t
			}
		}
		q.b.mu.Unlock()

		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), time.Millisecond)
		}
		timer.Reset(wait) // Go 1.23 timers: Reset discards a pending fire
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		case <-timer.C:
		}
	}
}

// maintainLocked renews the locks of running deliveries, expires lost locks, and returns the
// earliest time at which something changes next (zero: nothing pending).
func (q *queue) maintainLocked(now time.Time) time.Time {
	var next time.Time
	soonest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	buffer := min(lockRenewBuffer, q.opts.LockDuration/2)
	for _, e := range slices.Clone(q.entries) {
		switch {
		case e.locked:
			renewUntil := e.receivedAt.Add(q.opts.MaxAutoLockRenewal)
			renewAt := e.msg.LockedUntil.Add(-buffer)
			if e.running && q.opts.MaxAutoLockRenewal > 0 && !now.Before(renewAt) && now.Before(renewUntil) {
				e.msg.LockedUntil = now.Add(q.opts.LockDuration)
				q.stats.LockRenewals++
				renewAt = e.msg.LockedUntil.Add(-buffer)
			}
			if !now.Before(e.msg.LockedUntil) {
				q.stats.LockLost++
				q.releaseLocked(e, now, "lock expired")
				continue
			}
			soonest(e.msg.LockedUntil)
			if e.running && q.opts.MaxAutoLockRenewal > 0 && renewAt.Before(renewUntil) {
				soonest(renewAt)
			}
		case e.visibleAt.After(now):
			soonest(e.visibleAt)
		}
	}
	return next
}

func (q *queue) nextAvailableLocked(now time.Time) *entry {
	for _, e := range q.entries {
		if !e.locked && !e.visibleAt.After(now) {
			return e
		}
	}
	return nil
}

func (q *queue) lockLocked(e *entry, now time.Time) {
	e.locked, e.running, e.receivedAt = true, true, now
	e.msg.DeliveryCount++
	e.msg.LockToken = newUUID()
	e.msg.LockedUntil = now.Add(q.opts.LockDuration)
	q.stats.Deliveries++
	q.stats.InFlight++
	q.stats.MaxInFlight = max(q.stats.MaxInFlight, q.stats.InFlight)
}

func (q *queue) deliver(ctx context.Context, e *entry, msg Message) {
	defer q.b.wg.Done()
	hctx := ctx
	if q.opts.Timeout > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, q.opts.Timeout)
		defer cancel()
	}
	err := q.call(hctx, msg)

	q.b.mu.Lock()
	defer q.b.mu.Unlock()
	q.stats.InFlight--
	defer q.signal()
	// The delivery settles only if it still holds the lock it was given.
	if !e.locked || e.msg.LockToken != msg.LockToken {
		return
	}
	e.running = false
	if ctx.Err() != nil && q.b.stopped {
		// Shutting down: the message goes back untouched, as when a host stops mid-invocation.
		e.locked, e.msg.LockToken, e.msg.LockedUntil = false, "", time.Time{}
		return
	}
	if err == nil {
		q.stats.Completed++
		q.removeLocked(e)
		return
	}
	q.stats.Abandoned++
	q.releaseLocked(e, q.b.now(), err.Error())
}

func (q *queue) call(ctx context.Context, msg Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return q.handler(ctx, msg)
}

// releaseLocked ends a delivery that did not complete: the message becomes available again, or
// is dead-lettered once it has had MaxDeliveryCount deliveries.
func (q *queue) releaseLocked(e *entry, now time.Time, why string) {
	e.locked, e.running = false, false
	e.msg.LockToken, e.msg.LockedUntil = "", time.Time{}
	if e.msg.DeliveryCount < q.opts.MaxDeliveryCount {
		q.signal()
		return
	}
	q.removeLocked(e)
	q.stats.DeadLetters++
	dl := e.msg.clone()
	if dl.ApplicationProperties == nil {
		dl.ApplicationProperties = map[string]string{}
	}
	dl.ApplicationProperties[PropDeadLetterReason] = ReasonMaxDeliveryCount
	dl.ApplicationProperties[PropDeadLetterDescription] = fmt.Sprintf(
		"Message could not be consumed after %d delivery attempts. Last: %s", q.opts.MaxDeliveryCount, why)
	if to, ok := q.b.queues[q.opts.ForwardDeadLettersTo]; ok && to != q {
		q.stats.Forwarded++
		dl.DeadLetterSource = q.name
		dl.ScheduledEnqueueTime = time.Time{}
		to.stats.Sent++
		to.enqueueLocked(dl, now)
		return
	}
	q.deadLetter = append(q.deadLetter, dl)
}

func (q *queue) removeLocked(e *entry) {
	if i := slices.Index(q.entries, e); i >= 0 {
		q.entries = slices.Delete(q.entries, i, i+1)
	}
}

// Stats returns the counters of every queue.
func (b *Broker) Stats() map[string]Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	out := make(map[string]Stats, len(b.queues))
	for name, q := range b.queues {
		s := q.stats
		s.Active, s.Scheduled, s.Locked = 0, 0, 0
		for _, e := range q.entries {
			switch {
			case e.locked:
				s.Locked++
			case e.visibleAt.After(now):
				s.Scheduled++
			default:
				s.Active++
			}
		}
		s.DeadLettered = len(q.deadLetter)
		out[name] = s
	}
	return out
}

// DeadLetters returns the messages held in the named queue's dead-letter queue.
func (b *Broker) DeadLetters(name string) []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	q, ok := b.queues[name]
	if !ok {
		return nil
	}
	out := make([]Message, len(q.deadLetter))
	for i, m := range q.deadLetter {
		out[i] = m.clone()
	}
	return out
}

// Peek returns the messages on the named queue (available, scheduled and locked), in sequence
// order, without locking them.
func (b *Broker) Peek(name string) []Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	q, ok := b.queues[name]
	if !ok {
		return nil
	}
	out := make([]Message, 0, len(q.entries))
	for _, e := range q.entries {
		out = append(out, e.msg.clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SequenceNumber < out[j].SequenceNumber })
	return out
}

// Idle reports whether no queue holds a message that is available, scheduled or locked, and no
// delivery runs.
func (b *Broker) Idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, q := range b.queues {
		if len(q.entries) > 0 || q.stats.InFlight > 0 {
			return false
		}
	}
	return true
}

// newUUID returns a random RFC 4122 version 4 UUID, as Service Bus lock tokens are.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// NewUUID returns a random version 4 UUID.
func NewUUID() string { return newUUID() }
