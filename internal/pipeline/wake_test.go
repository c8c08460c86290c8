package pipeline

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slot is a reservation for the line tests: one holder at a time.
type slot struct {
	mu     sync.Mutex
	holder string
	order  []string // who took it, in order
}

func (s *slot) take(who string) func(context.Context) (bool, error) {
	return func(context.Context) (bool, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.holder != "" {
			return false, nil
		}
		s.holder = who
		s.order = append(s.order, who)
		return true, nil
	}
}

func (s *slot) give(l *waitLine, key string) {
	s.mu.Lock()
	s.holder = ""
	s.mu.Unlock()
	l.wakeFirst(key)
}

// waitUntil waits for cond, failing the test after a second.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a second")
		}
	}
}

// lineRig runs waiters in one line for a slot, each until it takes the slot (the poll is an
// hour, so only a wake lets one look again).
type lineRig struct {
	t   *testing.T
	l   waitLine
	s   *slot
	key string
	wg  sync.WaitGroup
}

func newLineRig(t *testing.T, key string) *lineRig {
	return &lineRig{t: t, s: &slot{holder: "holder"}, key: key}
}

// join starts a waiter and waits until it is in line.
func (r *lineRig) join(who string, first bool) {
	n := r.l.len(r.key)
	r.wg.Go(func() {
		if got, err := waitInLine(r.t.Context(), nil, &r.l, r.key, first, time.Hour, time.Minute, r.s.take(who)); !got || err != nil {
			r.t.Errorf("%s: got %v, %v", who, got, err)
		}
	})
	waitUntil(r.t, func() bool { return r.l.len(r.key) == n+1 })
}

// serve gives the slot back once per waiter in want, each time after the last taker took it, and
// checks who took it in turn.
func (r *lineRig) serve(want ...string) {
	for range want {
		r.s.mu.Lock()
		n := len(r.s.order)
		r.s.mu.Unlock()
		r.s.give(&r.l, r.key)
		waitUntil(r.t, func() bool { r.s.mu.Lock(); defer r.s.mu.Unlock(); return len(r.s.order) == n+1 })
	}
	r.wg.Wait()
	for i, who := range want {
		if r.s.order[i] != who {
			r.t.Fatalf("taken in order %v, want %v", r.s.order, want)
		}
	}
	if n := r.l.len(r.key); n != 0 {
		r.t.Errorf("%d left in line", n)
	}
}

// TestWaitInLineOrder: a reservation given back goes to the first in line, at once: patches
// (first) ahead of harvests, each first come first served.
func TestWaitInLineOrder(t *testing.T) {
	t.Parallel()
	r := newLineRig(t, "agent rescue-01")
	r.join("harvest-1", false)
	r.join("patch-1", true)
	r.join("harvest-2", false)
	r.join("patch-2", true)
	r.serve("patch-1", "patch-2", "harvest-1", "harvest-2")
}

// TestWaitInLineWokenKeepsHead: a waiter woken for a reservation that another instance took
// first keeps the head of the line, ahead of the patch behind it.
func TestWaitInLineWokenKeepsHead(t *testing.T) {
	t.Parallel()
	r := newLineRig(t, "lun")
	r.join("harvest", false)
	r.join("patch-1", true)
	r.join("patch-2", true)
	// Given back and taken at once by another instance: patch-1 is woken, finds it taken and
	// goes back in line, at its head.
	r.s.mu.Lock()
	r.s.holder = "other instance"
	r.s.mu.Unlock()
	r.l.wakeFirst(r.key)
	waitUntil(t, func() bool { return r.l.len(r.key) == 3 })
	r.serve("patch-1", "patch-2", "harvest")
}

// TestWaitInLineGivesUp: a waiter reads again each poll (a reservation given back by another
// instance wakes no one here), gives up after its bound, and a wake it did not use goes to the
// next in line.
func TestWaitInLineGivesUp(t *testing.T) {
	t.Parallel()
	const key = "lun"
	t.Run("poll finds it given back elsewhere", func(t *testing.T) {
		t.Parallel()
		var l waitLine
		s := &slot{holder: "other instance"}
		go func() {
			time.Sleep(30 * time.Millisecond)
			s.mu.Lock()
			s.holder = "" // no wake
			s.mu.Unlock()
		}()
		got, err := waitInLine(t.Context(), nil, &l, key, false, 10*time.Millisecond, time.Minute, s.take("me"))
		if !got || err != nil {
			t.Fatalf("got %v, %v", got, err)
		}
	})
	t.Run("bound", func(t *testing.T) {
		t.Parallel()
		var l waitLine
		s := &slot{holder: "holder"}
		var tries atomic.Int32
		start := time.Now()
		got, err := waitInLine(t.Context(), nil, &l, key, false, 10*time.Millisecond, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
			tries.Add(1)
			return s.take("me")(ctx)
		})
		if got || err != nil || time.Since(start) < 50*time.Millisecond || tries.Load() < 3 || l.len(key) != 0 {
			t.Fatalf("got %v, %v after %v and %d tries, %d left in line", got, err, time.Since(start), tries.Load(), l.len(key))
		}
	})
	t.Run("error ends the wait", func(t *testing.T) {
		t.Parallel()
		var l waitLine
		boom := errors.New("storage down")
		got, err := waitInLine(t.Context(), nil, &l, key, false, time.Hour, time.Minute, func(context.Context) (bool, error) { return false, boom })
		if got || !errors.Is(err, boom) || l.len(key) != 0 {
			t.Fatalf("got %v, %v", got, err)
		}
	})
	t.Run("context ends the wait", func(t *testing.T) {
		t.Parallel()
		var l waitLine
		s := &slot{holder: "holder"}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		got, err := waitInLine(ctx, nil, &l, key, false, time.Hour, time.Minute, s.take("me"))
		if got || !errors.Is(err, context.DeadlineExceeded) || l.len(key) != 0 {
			t.Fatalf("got %v, %v", got, err)
		}
	})
	t.Run("a wake that ends in an error is passed on", func(t *testing.T) {
		t.Parallel()
		var l waitLine
		s := &slot{holder: "holder"}
		var woken atomic.Bool
		first := make(chan error, 1)
		go func() {
			// Woken, its read of the slot fails: it leaves the line with the error.
			_, err := waitInLine(t.Context(), nil, &l, key, false, time.Hour, time.Minute, func(c context.Context) (bool, error) {
				if woken.Load() {
					return false, errors.New("storage down")
				}
				return false, nil
			})
			first <- err
		}()
		waitUntil(t, func() bool { return l.len(key) == 1 })
		done := make(chan bool, 1)
		go func() {
			got, _ := waitInLine(t.Context(), nil, &l, key, false, time.Hour, time.Minute, s.take("second"))
			done <- got
		}()
		waitUntil(t, func() bool { return l.len(key) == 2 })
		woken.Store(true)
		s.give(&l, key) // wakes the first only
		if err := <-first; err == nil {
			t.Fatal("first waiter: want its error")
		}
		select {
		case got := <-done:
			if !got {
				t.Fatal("second waiter did not get the slot")
			}
		case <-time.After(time.Second):
			t.Fatal("the wake was not passed on")
		}
	})
}
