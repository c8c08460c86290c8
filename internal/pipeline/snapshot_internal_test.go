package pipeline

import (
	"errors"
	"testing"
	"time"
)

func TestCopyLeft(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	cases := []struct {
		name      string
		prev, cur copyProgress
		created   time.Time
		want      time.Duration
		known     bool
	}{
		{name: "one reading: the rate since creation", cur: copyProgress{10, at(10)}, created: t0, want: 90 * time.Second, known: true},
		{name: "two readings: their rate", prev: copyProgress{60, at(0)}, cur: copyProgress{90, at(10)}, created: t0.Add(-time.Hour),
			want: 10 * time.Second / 3, known: true},
		{name: "no progress between readings: the rate since creation", prev: copyProgress{40, at(0)}, cur: copyProgress{40, at(10)},
			created: at(-30), want: 60 * time.Second, known: true},
		{name: "nothing copied yet", cur: copyProgress{0, at(10)}, created: t0},
		{name: "creation time unknown", cur: copyProgress{50, at(10)}},
		{name: "created after the reading (clock skew)", cur: copyProgress{50, at(10)}, created: at(20)},
		{name: "readings out of order", prev: copyProgress{40, at(10)}, cur: copyProgress{90, at(10)}, created: at(10)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, known := copyLeft(tc.prev, tc.cur, tc.created)
			if d := got - tc.want; d > time.Millisecond || d < -time.Millisecond || known != tc.known {
				t.Errorf("copyLeft = %v, %v; want %v, %v", got, known, tc.want, tc.known)
			}
		})
	}
}

func TestClockWait(t *testing.T) {
	t.Parallel()
	cases := []struct {
		scale float64
		in    time.Duration
		want  time.Duration
	}{
		{0, 3 * time.Second, 3 * time.Second},
		{1, 3 * time.Second, 3 * time.Second},
		{0.05, 3 * time.Second, time.Minute},
	}
	for _, tc := range cases {
		if got := (&Pipeline{TimeScale: tc.scale}).clockWait(tc.in); got != tc.want {
			t.Errorf("scale %v: clockWait(%v) = %v, want %v", tc.scale, tc.in, got, tc.want)
		}
	}
}

func TestLineWait(t *testing.T) {
	t.Parallel()
	cases := []struct {
		scale float64
		set   time.Duration
		want  time.Duration
	}{
		{0, 0, 5 * time.Minute},
		{0.05, 0, 5 * time.Minute}, // not compressed
		{0.001, 0, 5 * time.Minute},
		{0.001, 50 * time.Millisecond, 50 * time.Millisecond},
	}
	for _, tc := range cases {
		if got := (&Pipeline{TimeScale: tc.scale, LineWait: tc.set}).lineWait(); got != tc.want {
			t.Errorf("scale %v, LineWait %v: lineWait() = %v, want %v", tc.scale, tc.set, got, tc.want)
		}
	}
}

// TestAwaitDelivery: a wait for another delivery counts against no bound of retries, and on the
// clock it lasts inFlightWait, or minInFlightWait once the host compresses it.
func TestAwaitDelivery(t *testing.T) {
	t.Parallel()
	cases := []struct {
		scale float64
		delay time.Duration // of the scheduled message, before the host compresses it
	}{
		{0, 5 * time.Minute},
		{0.05, 5 * time.Minute},     // 15 s on the clock
		{0.001, 5000 * time.Second}, // 5 s on the clock, not 0.3 s
	}
	for _, tc := range cases {
		var w *waitError
		if !errors.As((&Pipeline{TimeScale: tc.scale}).awaitDelivery("delivery %s", "m"), &w) {
			t.Fatalf("scale %v: not a wait", tc.scale)
		}
		if w.delay != tc.delay || !w.unbounded || w.reason != "delivery m" {
			t.Errorf("scale %v: wait %+v, want delay %v, unbounded", tc.scale, *w, tc.delay)
		}
	}
}
