package pipeline

import (
	"testing"
	"time"
)

func TestCopyPause(t *testing.T) {
	t.Parallel()
	const poll = 10 * time.Second
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	cases := []struct {
		name          string
		prev, cur     copyProgress
		shortened     bool
		want          time.Duration
		wantShortened bool
	}{
		{name: "first reading: a whole interval", cur: copyProgress{10, at(0)}, want: poll},
		{name: "ends after the next poll", prev: copyProgress{10, at(0)}, cur: copyProgress{20, at(10)}, want: poll},
		{name: "ends before the next poll: read just after it", prev: copyProgress{60, at(0)}, cur: copyProgress{90, at(10)},
			want: 10*time.Second/3 + poll/20, wantShortened: true},
		{name: "ends at the next poll: a whole interval", prev: copyProgress{0, at(0)}, cur: copyProgress{50, at(10)}, want: poll},
		{name: "never twice in a row", prev: copyProgress{60, at(0)}, cur: copyProgress{90, at(10)}, shortened: true, want: poll},
		{name: "no progress", prev: copyProgress{40, at(0)}, cur: copyProgress{40, at(10)}, want: poll},
		{name: "readings out of order", prev: copyProgress{40, at(10)}, cur: copyProgress{90, at(10)}, want: poll},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, shortened := copyPause(tc.prev, tc.cur, poll, tc.shortened)
			if d := got - tc.want; d > time.Millisecond || d < -time.Millisecond || shortened != tc.wantShortened {
				t.Errorf("copyPause = %v, %v; want %v, %v", got, shortened, tc.want, tc.wantShortened)
			}
		})
	}
}
