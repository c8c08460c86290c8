package incident_test

import (
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/incident"
)

func TestOpenedAt(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 27, 3, 14, 7, 0, time.UTC)
	cases := []struct {
		id   string
		want time.Time
		ok   bool
	}{
		{incident.NewID(at.Add(400 * time.Millisecond)), at, true},
		{"inc-20261120-031407-7f3c", time.Date(2026, 11, 20, 3, 14, 7, 0, time.UTC), true},
		{"inc-20261320-031407-7f3c", time.Time{}, false}, // month 13
		{"inc-2026112-0031407-7f3c", time.Time{}, false},
		{"vmrescue-inc-20261120-031407-7f3c", time.Time{}, false},
	}
	for _, tc := range cases {
		got, ok := incident.OpenedAt(tc.id)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("OpenedAt(%q) = %v, %v; want %v, %v", tc.id, got, ok, tc.want, tc.ok)
		}
	}
}
