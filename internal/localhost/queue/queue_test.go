package queue

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a Handler that records deliveries and answers with fn.
type recorder struct {
	mu   sync.Mutex
	got  []Message
	at   []time.Time
	fn   func(ctx context.Context, m Message) error
	seen chan Message
}

func newRecorder(fn func(ctx context.Context, m Message) error) *recorder {
	return &recorder{fn: fn, seen: make(chan Message, 100)}
}

func (r *recorder) handle(ctx context.Context, m Message) error {
	r.mu.Lock()
	r.got = append(r.got, m)
	r.at = append(r.at, time.Now())
	r.mu.Unlock()
	r.seen <- m
	if r.fn == nil {
		return nil
	}
	return r.fn(ctx, m)
}

func (r *recorder) next(t *testing.T, within time.Duration) Message {
	t.Helper()
	select {
	case m := <-r.seen:
		return m
	case <-time.After(within):
		t.Fatalf("no delivery within %s", within)
		return Message{}
	}
}

func (r *recorder) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case m := <-r.seen:
		t.Fatalf("unexpected delivery of %s (DeliveryCount %d)", m.MessageID, m.DeliveryCount)
	case <-time.After(within):
	}
}

func newBroker(t *testing.T, queues map[string]Options) *Broker {
	t.Helper()
	b := NewBroker()
	for name, o := range queues {
		if err := b.AddQueue(name, o); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(b.Stop)
	return b
}

func send(t *testing.T, b *Broker, q string, m Message) SendResult {
	t.Helper()
	r, err := b.Send(q, m)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// waitStats polls until cond holds for the queue's stats.
func waitStats(t *testing.T, b *Broker, q string, within time.Duration, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := b.Stats()[q]
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s: condition not met within %s: %+v", q, within, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCompleteAndMessageFields(t *testing.T) {
	t.Parallel()
	b := newBroker(t, map[string]Options{"q": {}})
	rec := newRecorder(nil)
	if err := b.Subscribe(t.Context(), "q", rec.handle); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	res := send(t, b, "q", Message{MessageID: "m1", ContentType: "application/json", Body: []byte(`{"a":1}`),
		ApplicationProperties: map[string]string{"k": "v"}})
	if res.Duplicate || res.SequenceNumber == 0 {
		t.Fatalf("send result %+v", res)
	}
	m := rec.next(t, 2*time.Second)
	if m.DeliveryCount != 1 || m.MessageID != "m1" || string(m.Body) != `{"a":1}` || m.ApplicationProperties["k"] != "v" {
		t.Fatalf("delivered %+v", m)
	}
	if len(m.LockToken) != 36 || m.LockedUntil.Sub(before) < DefaultLockDuration-time.Second {
		t.Fatalf("lock token %q, locked until %s", m.LockToken, m.LockedUntil)
	}
	if m.EnqueuedTime.Before(before.Add(-time.Second)) || m.SequenceNumber != res.SequenceNumber {
		t.Fatalf("enqueued %s seq %d", m.EnqueuedTime, m.SequenceNumber)
	}
	s := waitStats(t, b, "q", 2*time.Second, func(s Stats) bool { return s.Completed == 1 })
	if s.Active+s.Locked+s.Scheduled != 0 || s.Deliveries != 1 || s.Abandoned != 0 {
		t.Fatalf("stats after completion: %+v", s)
	}
	if !b.Idle() {
		t.Fatal("broker not idle after completion")
	}
}

func TestAbandonRedeliversThenDeadLettersToFailed(t *testing.T) {
	t.Parallel()
	b := newBroker(t, map[string]Options{
		"stage":  {MaxDeliveryCount: 3, ForwardDeadLettersTo: "failed"},
		"failed": {MaxDeliveryCount: 2},
	})
	stage := newRecorder(func(context.Context, Message) error { return errors.New("transient") })
	failed := newRecorder(func(context.Context, Message) error { return errors.New("still failing") })
	if err := b.Subscribe(t.Context(), "stage", stage.handle); err != nil {
		t.Fatal(err)
	}
	send(t, b, "stage", Message{MessageID: "inc:stage", Body: []byte(`{}`), ApplicationProperties: map[string]string{"stage": "snapshot"}})
	for want := 1; want <= 3; want++ {
		if m := stage.next(t, 2*time.Second); m.DeliveryCount != want {
			t.Fatalf("delivery %d has DeliveryCount %d", want, m.DeliveryCount)
		}
	}
	stage.none(t, 100*time.Millisecond)
	s := waitStats(t, b, "stage", time.Second, func(s Stats) bool { return s.Forwarded == 1 })
	if s.Abandoned != 3 || s.DeadLetters != 1 || s.DeadLettered != 0 || s.Active != 0 {
		t.Fatalf("stage stats %+v", s)
	}

	// The forwarded dead letter starts over on "failed"; its own dead letters stay there.
	if err := b.Subscribe(t.Context(), "failed", failed.handle); err != nil {
		t.Fatal(err)
	}
	m := failed.next(t, 2*time.Second)
	if m.DeliveryCount != 1 || m.MessageID != "inc:stage" || m.DeadLetterSource != "stage" ||
		m.ApplicationProperties[PropDeadLetterReason] != ReasonMaxDeliveryCount ||
		m.ApplicationProperties["stage"] != "snapshot" || m.ApplicationProperties[PropDeadLetterDescription] == "" {
		t.Fatalf("forwarded dead letter %+v", m)
	}
	if m2 := failed.next(t, 2*time.Second); m2.DeliveryCount != 2 {
		t.Fatalf("second delivery on failed has DeliveryCount %d", m2.DeliveryCount)
	}
	waitStats(t, b, "failed", time.Second, func(s Stats) bool { return s.DeadLettered == 1 })
	if dl := b.DeadLetters("failed"); len(dl) != 1 || dl[0].MessageID != "inc:stage" {
		t.Fatalf("dead letters of failed: %+v", dl)
	}
}

func TestLockExpiryRedelivers(t *testing.T) {
	t.Parallel()
	const lock = 150 * time.Millisecond
	b := newBroker(t, map[string]Options{"q": {LockDuration: lock, MaxAutoLockRenewal: -1}})
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock() // a failed check must not leave b.Stop waiting on the blocked delivery
	var calls atomic.Int32
	rec := newRecorder(func(ctx context.Context, m Message) error {
		if calls.Add(1) == 1 {
			<-release // outlives its lock
		}
		return nil
	})
	if err := b.Subscribe(t.Context(), "q", rec.handle); err != nil {
		t.Fatal(err)
	}
	send(t, b, "q", Message{MessageID: "slow"})
	first := rec.next(t, 2*time.Second)
	second := rec.next(t, 2*time.Second)
	if first.DeliveryCount != 1 || second.DeliveryCount != 2 || first.LockToken == second.LockToken {
		t.Fatalf("deliveries: %d/%s then %d/%s", first.DeliveryCount, first.LockToken, second.DeliveryCount, second.LockToken)
	}
	// The lock runs from when the broker locked the message, which can be well before the
	// handler is entered on a loaded machine; measure against the lock's own expiry.
	rec.mu.Lock()
	redelivered := rec.at[1]
	rec.mu.Unlock()
	if redelivered.Before(first.LockedUntil) {
		t.Fatalf("redelivered at %s, before the first lock ran out at %s", redelivered, first.LockedUntil)
	}
	s := waitStats(t, b, "q", time.Second, func(s Stats) bool { return s.Completed == 1 })
	if s.LockLost != 1 {
		t.Fatalf("stats %+v", s)
	}
	unblock() // the late completion of the first delivery is lost, not counted
	s = waitStats(t, b, "q", time.Second, func(s Stats) bool { return s.InFlight == 0 })
	if s.Completed != 1 || s.Deliveries != 2 {
		t.Fatalf("stats after the late completion %+v", s)
	}
}

func TestLockRenewalKeepsLongDelivery(t *testing.T) {
	t.Parallel()
	const lock = 100 * time.Millisecond
	b := newBroker(t, map[string]Options{"q": {LockDuration: lock, MaxAutoLockRenewal: 5 * time.Second}})
	rec := newRecorder(func(ctx context.Context, m Message) error {
		time.Sleep(5 * lock)
		return nil
	})
	if err := b.Subscribe(t.Context(), "q", rec.handle); err != nil {
		t.Fatal(err)
	}
	send(t, b, "q", Message{MessageID: "long"})
	rec.next(t, 2*time.Second)
	s := waitStats(t, b, "q", 3*time.Second, func(s Stats) bool { return s.Completed == 1 })
	if s.Deliveries != 1 || s.LockLost != 0 || s.LockRenewals < 3 {
		t.Fatalf("stats %+v", s)
	}
}

func TestLockRenewalStopsAtMaxAutoLockRenewal(t *testing.T) {
	t.Parallel()
	const lock = 100 * time.Millisecond
	b := newBroker(t, map[string]Options{"q": {LockDuration: lock, MaxAutoLockRenewal: 3 * lock}})
	release := make(chan struct{})
	defer close(release)
	var calls atomic.Int32
	rec := newRecorder(func(ctx context.Context, m Message) error {
		if calls.Add(1) == 1 {
			<-release
		}
		return nil
	})
	if err := b.Subscribe(t.Context(), "q", rec.handle); err != nil {
		t.Fatal(err)
	}
	send(t, b, "q", Message{MessageID: "stuck"})
	first := rec.next(t, 2*time.Second)
	second := rec.next(t, 3*time.Second)
	rec.mu.Lock()
	redelivered := rec.at[1]
	rec.mu.Unlock()
	// Renewed until 3 locks' time from the receive (the first lock ends one lock after it),
	// then the last renewal's lock ran out.
	renewedUntil := first.LockedUntil.Add(2 * lock)
	if second.DeliveryCount != 2 || redelivered.Before(renewedUntil) {
		t.Fatalf("second delivery DeliveryCount %d at %s, renewals ran to %s", second.DeliveryCount, redelivered, renewedUntil)
	}
}

func TestScheduledEnqueue(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		scale float64
		delay time.Duration
		want  time.Duration
	}{
		{"real time", 1, 300 * time.Millisecond, 300 * time.Millisecond},
		{"scaled", 0.25, 1200 * time.Millisecond, 300 * time.Millisecond},
		{"in the past", 1, -time.Minute, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, map[string]Options{"q": {ScheduleScale: tc.scale}})
			rec := newRecorder(nil)
			if err := b.Subscribe(t.Context(), "q", rec.handle); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			send(t, b, "q", Message{MessageID: "later", ScheduledEnqueueTime: sent.Add(tc.delay)})
			if tc.want > 0 {
				if s := b.Stats()["q"]; s.Scheduled != 1 {
					t.Fatalf("stats right after send %+v", s)
				}
				rec.none(t, tc.want/2)
			}
			m := rec.next(t, tc.want+2*time.Second)
			rec.mu.Lock()
			got := rec.at[0].Sub(sent)
			rec.mu.Unlock()
			if got < tc.want || got > tc.want+time.Second {
				t.Fatalf("delivered after %s, want about %s", got, tc.want)
			}
			if m.EnqueuedTime.Before(sent.Add(tc.want - time.Millisecond)) {
				t.Fatalf("EnqueuedTime %s is before the scheduled time", m.EnqueuedTime)
			}
		})
	}
}

func TestDuplicateDetectionWindow(t *testing.T) {
	t.Parallel()
	const window = 200 * time.Millisecond
	b := newBroker(t, map[string]Options{"q": {DuplicateWindow: window}, "other": {DuplicateWindow: window}})
	first := send(t, b, "q", Message{MessageID: "inc:snapshot"})
	again := send(t, b, "q", Message{MessageID: "inc:snapshot"})
	elsewhere := send(t, b, "other", Message{MessageID: "inc:snapshot"})
	if first.Duplicate || !again.Duplicate || again.SequenceNumber != 0 || elsewhere.Duplicate {
		t.Fatalf("first %+v, again %+v, other queue %+v", first, again, elsewhere)
	}
	if s := b.Stats()["q"]; s.Active != 1 || s.Duplicates != 1 || s.Sent != 1 {
		t.Fatalf("stats %+v", s)
	}
	time.Sleep(window + 20*time.Millisecond)
	if later := send(t, b, "q", Message{MessageID: "inc:snapshot"}); later.Duplicate {
		t.Fatalf("a send after the window was absorbed: %+v", later)
	}
	if s := b.Stats()["q"]; s.Active != 2 {
		t.Fatalf("stats after the window %+v", s)
	}
}

func TestBoundedConcurrency(t *testing.T) {
	t.Parallel()
	const limit, total = 3, 10
	b := newBroker(t, map[string]Options{"q": {MaxConcurrentCalls: limit}})
	var running, peak atomic.Int32
	rec := newRecorder(func(ctx context.Context, m Message) error {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
		running.Add(-1)
		return nil
	})
	for i := range total {
		send(t, b, "q", Message{MessageID: string(rune('a' + i))})
	}
	if err := b.Subscribe(t.Context(), "q", rec.handle); err != nil {
		t.Fatal(err)
	}
	s := waitStats(t, b, "q", 5*time.Second, func(s Stats) bool { return s.Completed == total })
	if peak.Load() != limit || s.MaxInFlight != limit {
		t.Fatalf("peak concurrency %d (stats %d), want %d", peak.Load(), s.MaxInFlight, limit)
	}
}

func TestTimeoutAbandons(t *testing.T) {
	t.Parallel()
	b := newBroker(t, map[string]Options{"q": {Timeout: 50 * time.Millisecond, MaxDeliveryCount: 2}})
	rec := newRecorder(func(ctx context.Context, m Message) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if err := b.Subscribe(t.Context(), "q", rec.handle); err != nil {
		t.Fatal(err)
	}
	send(t, b, "q", Message{MessageID: "hangs"})
	rec.next(t, time.Second)
	if m := rec.next(t, time.Second); m.DeliveryCount != 2 {
		t.Fatalf("redelivery DeliveryCount %d", m.DeliveryCount)
	}
	waitStats(t, b, "q", time.Second, func(s Stats) bool { return s.Abandoned == 2 && s.DeadLettered == 1 })
}

func TestSendErrors(t *testing.T) {
	t.Parallel()
	b := newBroker(t, map[string]Options{"q": {}})
	if _, err := b.Send("nope", Message{}); !errors.Is(err, ErrUnknownQueue) {
		t.Fatalf("unknown queue: %v", err)
	}
	if _, err := b.Send("q", Message{Body: make([]byte, MaxMessageSize+1)}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("large message: %v", err)
	}
	r, err := b.Send("q", Message{})
	if err != nil || r.Duplicate {
		t.Fatalf("message without id: %+v %v", r, err)
	}
	if p := b.Peek("q"); len(p) != 1 || len(p[0].MessageID) != 36 {
		t.Fatalf("generated MessageID: %+v", p)
	}
	b.Stop()
	if _, err := b.Send("q", Message{}); !errors.Is(err, ErrStopped) {
		t.Fatalf("send after stop: %v", err)
	}
}

func TestStopLeavesMessagesQueued(t *testing.T) {
	t.Parallel()
	b := newBroker(t, map[string]Options{"q": {}})
	started := make(chan struct{})
	rec := newRecorder(func(ctx context.Context, m Message) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	})
	if err := b.Subscribe(context.Background(), "q", rec.handle); err != nil {
		t.Fatal(err)
	}
	send(t, b, "q", Message{MessageID: "inflight"})
	<-started
	b.Stop()
	s := b.Stats()["q"]
	if s.Active != 1 || s.InFlight != 0 || s.Abandoned != 0 {
		t.Fatalf("stats after stop %+v", s)
	}
}

// BenchmarkSendDeliverComplete measures one message through the broker: send, lock, deliver to
// a handler that completes it.
func BenchmarkSendDeliverComplete(b *testing.B) {
	br := NewBroker()
	if err := br.AddQueue("q", Options{MaxConcurrentCalls: 1}); err != nil {
		b.Fatal(err)
	}
	defer br.Stop()
	done := make(chan struct{}, 1)
	if err := br.Subscribe(context.Background(), "q", func(context.Context, Message) error { done <- struct{}{}; return nil }); err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"version":1}`)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := br.Send("q", Message{MessageID: strconv.Itoa(i), Body: body}); err != nil {
			b.Fatal(err)
		}
		<-done
	}
}
