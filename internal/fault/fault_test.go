package fault

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestClassification(t *testing.T) {
	base := errors.New("boom")
	tests := []struct {
		name     string
		err      error
		terminal bool
		delay    time.Duration
	}{
		{"plain is transient", base, false, 0},
		{"terminal", Terminal(base), true, 0},
		{"wrapped terminal", fmt.Errorf("snapshot: %w", Terminal(base)), true, 0},
		{"retry after", fmt.Errorf("x: %w", RetryAfter(base, 7*time.Second)), false, 7 * time.Second},
		{"nil", Terminal(nil), false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsTerminal(tc.err); got != tc.terminal {
				t.Errorf("IsTerminal = %v, want %v", got, tc.terminal)
			}
			d, ok := Delay(tc.err)
			if ok != (tc.delay != 0) || d != tc.delay {
				t.Errorf("Delay = %v,%v want %v", d, ok, tc.delay)
			}
			if tc.err != nil && !errors.Is(tc.err, base) {
				t.Error("cause lost")
			}
		})
	}
}

func TestRecorded(t *testing.T) {
	base := errors.New("boom")
	err := fmt.Errorf("stage: %w", Recorded(Terminal(base)))
	if !IsRecorded(err) || !IsTerminal(err) || !errors.Is(err, base) {
		t.Fatalf("marks lost: recorded=%v terminal=%v", IsRecorded(err), IsTerminal(err))
	}
	if IsRecorded(Terminal(base)) || Recorded(nil) != nil {
		t.Fatal("unmarked error reported as recorded")
	}
}
