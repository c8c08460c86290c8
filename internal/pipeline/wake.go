package pipeline

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// Incidents wait for a rescue VM's agent slot and for free LUNs. The reservations live in blob
// storage, shared by every instance of the app; an incident that finds one taken could only read
// it again later, and every scheduled retry of a stage costs audit records, a message and a
// delivery, while the rescue VM idles until the retry comes. So an incident waits for a bounded
// while within its invocation, in line behind the others of this process: whoever gives a
// reservation back wakes the first in line at once, and a waiter also reads again every poll
// interval, for reservations given back by another instance. After the bound the wait goes to a
// scheduled message as before.
//
// The line is first come, first served, except for one class of waiter in each line, which goes
// first (and is first come, first served among its own):
//   - For an agent slot, a patch goes before a harvest: after its run the patched incident still
//     has the reboot, the crash and its own harvest ahead of it, and every crashing VM gets its
//     patch, which may be all it needs to boot, as early as the rescue VMs allow.
//   - For a LUN, a harvest's disk goes before a new rescue disk: a LUN and an agent run are all
//     the harvest needs to give its disk back, while new disks would fill the rescue VMs with
//     disks waiting for agent runs. (A capacity run with new disks first, so that a storm would
//     end on harvests only, took 1.29 times its bound instead of 1.15 to 1.20: the harvests,
//     starved until the patches were done, then came too slowly to use the write budget.)
//   - For a rescue VM's update slot, the submission of a Run Command goes before attaches and
//     detaches: it sets the VM's agent, the scarcer resource, to work.

// waitLine is the line of invocations of this process waiting for one kind of reservation.
type waitLine struct {
	mu    sync.Mutex
	lines map[string][]*waiter
}

type waiter struct {
	woken chan struct{}
	once  sync.Once
	rank  rank
}

// rank is a waiter's place in line: it goes behind every waiter of its rank or a lower one.
type rank int

const (
	rankWoken rank = iota // was woken and found the reservation taken again: keeps the head
	rankFirst             // goes before the rest (the longer way to go)
	rankRest
)

func (w *waiter) wake() { w.once.Do(func() { close(w.woken) }) }

// join puts a waiter of rank rk in the line for key, behind every waiter of the same rank or a
// lower one. leave takes it out again (and is harmless once it was woken).
func (l *waitLine) join(key string, rk rank) (w *waiter, leave func()) {
	w = &waiter{woken: make(chan struct{}), rank: rk}
	l.mu.Lock()
	if l.lines == nil {
		l.lines = map[string][]*waiter{}
	}
	line := l.lines[key]
	at := len(line)
	for i, x := range line {
		if x.rank > rk {
			at = i
			break
		}
	}
	l.lines[key] = slices.Insert(line, at, w)
	l.mu.Unlock()
	return w, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		line := l.lines[key]
		for i, x := range line {
			if x == w {
				l.lines[key] = append(line[:i:i], line[i+1:]...)
				break
			}
		}
		if len(l.lines[key]) == 0 {
			delete(l.lines, key)
		}
	}
}

// wakeFirst wakes the first waiter in the line for key, which leaves the line.
func (l *waitLine) wakeFirst(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	line := l.lines[key]
	if len(line) == 0 {
		return
	}
	line[0].wake()
	if len(line) == 1 {
		delete(l.lines, key)
		return
	}
	l.lines[key] = line[1:]
}

// len is the number of waiters in the line for key.
func (l *waitLine) len(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.lines[key])
}

// waitInLine tries take until it succeeds, in line for key: again when woken and every poll
// interval, until within has passed (got false), ctx ends, or exit is closed (errRollbackBegun:
// see exits). A waiter that was woken and could not
// take what was given back (another instance took it first) keeps the head of the line. One that
// was woken and leaves without it (its bound, its context or an error) wakes the next: what it
// was woken for may still be free.
func waitInLine(ctx context.Context, exit <-chan struct{}, l *waitLine, key string, first bool, poll, within time.Duration, take func(context.Context) (bool, error)) (bool, error) {
	deadline := time.Now().Add(within)
	rk := rankRest
	if first {
		rk = rankFirst
	}
	w, leave := l.join(key, rk)
	got, woken := false, false
	defer func() {
		leave()
		select {
		case <-w.woken:
			woken = true
		default:
		}
		if woken && !got {
			l.wakeFirst(key)
		}
	}()
	for {
		var err error
		if got, err = take(ctx); got || err != nil {
			return got, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		t := time.NewTimer(min(poll, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-exit:
			t.Stop()
			return false, errRollbackBegun
		case <-w.woken:
			woken = true
			leave()
			w, leave = l.join(key, rankWoken)
		case <-t.C:
		}
		t.Stop()
	}
}

// An incident whose rollback has begun leaves every line it waits in, in this process. What its
// delivery waits for it would only have to give back, and the rollback waits for the delivery to
// end (awaitStages): without this, as long as the delivery's time in line. The rollback ends
// those waits each time it finds a delivery still running; the delivery records that it yields
// (errRollbackBegun) and acknowledges its message. A waiter in another instance of the app ends
// with its time in line, and the rollback waits for it.

// errRollbackBegun ends a stage delivery's wait in line when its incident's rollback has begun.
var errRollbackBegun = errors.New("the incident's rollback has begun")

// exits holds, per incident, the channel that ends its deliveries' waits in line.
type exits struct {
	mu sync.Mutex
	m  map[string]*exit
}

type exit struct {
	ch chan struct{}
	n  int // deliveries watching it
}

// watch returns the channel that leave closes for incidentID, and the function that stops
// watching it.
func (e *exits) watch(incidentID string) (<-chan struct{}, func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]*exit{}
	}
	x := e.m[incidentID]
	if x == nil {
		x = &exit{ch: make(chan struct{})}
		e.m[incidentID] = x
	}
	x.n++
	var once sync.Once
	return x.ch, func() {
		once.Do(func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			if x.n--; x.n == 0 && e.m[incidentID] == x {
				delete(e.m, incidentID)
			}
		})
	}
}

// leave ends the waits in line of incidentID's deliveries in this process.
func (e *exits) leave(incidentID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.m[incidentID]; x != nil {
		close(x.ch)
		delete(e.m, incidentID)
	}
}
