package lock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/lock"
)

func TestSlot(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, l *lock.Locks) {
		ctx := context.Background()
		in := ids(2)
		a, b := in[0], in[1]
		before := time.Now().Add(-time.Second)

		ok, h, err := l.ReserveSlot(ctx, lock.SlotAgent, rescueVM, a)
		if err != nil || !ok || h.IncidentID != a || h.Since.Before(before) {
			t.Fatalf("a reserves: (%v, %+v, %v)", ok, h, err)
		}
		first := h.Since
		steps := []struct {
			name   string
			slot   lock.Slot
			id     string
			wantOK bool
			want   string
		}{
			{"b is refused", lock.SlotAgent, b, false, a},
			{"a again keeps its turn", lock.SlotAgent, a, true, a},
			{"the update slot is another slot", lock.SlotUpdate, b, true, b},
		}
		for _, s := range steps {
			ok, h, err := l.ReserveSlot(ctx, s.slot, rescueVM, s.id)
			if err != nil || ok != s.wantOK || h.IncidentID != s.want {
				t.Fatalf("%s: (%v, %+v, %v), want (%v, %s)", s.name, ok, h, err, s.wantOK, s.want)
			}
		}
		if h, err := l.SlotHolder(ctx, lock.SlotAgent, rescueVM); err != nil || h.IncidentID != a || !h.Since.Equal(first) {
			t.Fatalf("SlotHolder = %+v, %v; want %s since %v", h, err, a, first)
		}
		if err := l.ReleaseSlot(ctx, lock.SlotAgent, rescueVM, b); !errors.Is(err, lock.ErrNotHolder) {
			t.Fatalf("release by a non-holder: %v, want ErrNotHolder", err)
		}
		for range 2 { // the second release finds the slot free
			if err := l.ReleaseSlot(ctx, lock.SlotAgent, rescueVM, a); err != nil {
				t.Fatalf("release by the holder: %v", err)
			}
		}
		if h, err := l.SlotHolder(ctx, lock.SlotAgent, rescueVM); err != nil || !h.Free() {
			t.Fatalf("SlotHolder after release = %+v, %v", h, err)
		}
		if ok, h, err := l.ReserveSlot(ctx, lock.SlotAgent, rescueVM, b); err != nil || !ok || h.IncidentID != b {
			t.Fatalf("b after release: (%v, %+v, %v)", ok, h, err)
		}
		if _, _, err := l.ReserveSlot(ctx, lock.Slot("other"), rescueVM, a); err == nil {
			t.Error("unknown slot accepted")
		}
		if _, _, err := l.ReserveSlot(ctx, lock.SlotAgent, rescueVM, "not-an-incident"); err == nil {
			t.Error("malformed incident id accepted")
		}
	})
}

// TestTakeOverSlot: a take-over replaces only the holder as it was read; a holder that gave the
// slot back and took it again since is a new turn and is not replaced.
func TestTakeOverSlot(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, l *lock.Locks) {
		ctx := context.Background()
		in := ids(4)
		stale, next, later, last := in[0], in[1], in[2], in[3]
		if ok, _, err := l.ReserveSlot(ctx, lock.SlotAgent, rescueVM, stale); err != nil || !ok {
			t.Fatalf("reserve: %v %v", ok, err)
		}
		_, seen, err := l.ReserveSlot(ctx, lock.SlotAgent, rescueVM, next)
		if err != nil || seen.IncidentID != stale {
			t.Fatalf("refusal names %+v, %v", seen, err)
		}
		// The holder gives back and takes again: what next judged stale is gone.
		if err := l.ReleaseSlot(ctx, lock.SlotAgent, rescueVM, stale); err != nil {
			t.Fatal(err)
		}
		if ok, _, err := l.ReserveSlot(ctx, lock.SlotAgent, rescueVM, stale); err != nil || !ok {
			t.Fatalf("reserve again: %v %v", ok, err)
		}
		if ok, h, err := l.TakeOverSlot(ctx, lock.SlotAgent, rescueVM, seen, next); err != nil || ok || h.IncidentID != stale {
			t.Fatalf("take-over of a new turn: (%v, %+v, %v), want refused with %s", ok, h, err, stale)
		}
		_, seen, _ = l.ReserveSlot(ctx, lock.SlotAgent, rescueVM, next)
		if ok, h, err := l.TakeOverSlot(ctx, lock.SlotAgent, rescueVM, seen, next); err != nil || !ok || h.IncidentID != next {
			t.Fatalf("take-over: (%v, %+v, %v)", ok, h, err)
		}
		if ok, h, err := l.TakeOverSlot(ctx, lock.SlotAgent, rescueVM, seen, later); err != nil || ok || h.IncidentID != next {
			t.Fatalf("second take-over of the same stale holder: (%v, %+v, %v)", ok, h, err)
		}
		if err := l.ReleaseSlot(ctx, lock.SlotAgent, rescueVM, stale); !errors.Is(err, lock.ErrNotHolder) {
			t.Fatalf("release by the replaced holder: %v, want ErrNotHolder", err)
		}
		if err := l.ReleaseSlot(ctx, lock.SlotAgent, rescueVM, next); err != nil {
			t.Fatal(err)
		}
		if ok, h, err := l.TakeOverSlot(ctx, lock.SlotAgent, rescueVM, seen, last); err != nil || !ok || h.IncidentID != last {
			t.Fatalf("take-over of a free slot: (%v, %+v, %v)", ok, h, err)
		}
	})
}

func TestSlotRace(t *testing.T) {
	t.Parallel()
	const racers = 8
	forEachBackend(t, func(t *testing.T, l *lock.Locks) {
		t.Parallel()
		ctx := context.Background()
		in := ids(racers + 1)
		if ok, _, err := l.ReserveSlot(ctx, lock.SlotUpdate, rescueVM, in[0]); err != nil || !ok {
			t.Fatalf("reserve: %v %v", ok, err)
		}
		stale, err := l.SlotHolder(ctx, lock.SlotUpdate, rescueVM)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var winners []string
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, id := range in[1:] {
			wg.Go(func() {
				<-start
				var ok bool
				var h lock.Holder
				var err error
				if i%2 == 0 {
					ok, h, err = l.TakeOverSlot(ctx, lock.SlotUpdate, rescueVM, stale, id)
				} else {
					ok, h, err = l.ReserveSlot(ctx, lock.SlotUpdate, rescueVM, id)
				}
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				if ok != (h.IncidentID == id) {
					t.Errorf("%s: acquired=%v with holder %+v", id, ok, h)
				}
				if ok {
					mu.Lock()
					winners = append(winners, id)
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d racers hold the slot, want 1: %v", len(winners), winners)
		}
		if h, _ := l.SlotHolder(ctx, lock.SlotUpdate, rescueVM); h.IncidentID != winners[0] {
			t.Errorf("holder %+v, winner %s", h, winners[0])
		}
	})
}
