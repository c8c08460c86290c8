package pipeline

import (
	"testing"
	"time"
)

func TestBacklogAdmit(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	const ttl = time.Minute
	type step struct {
		id, where string
		at        time.Duration
		ok        bool
	}
	cases := []struct {
		name  string
		luns  map[string]int
		steps []step
	}{
		{name: "pool unknown: everyone is admitted", steps: []step{
			{"a", "we/", 0, true}, {"b", "we/", 0, true}, {"c", "we/", 0, true}}},
		{name: "as many as the pool has LUNs", luns: map[string]int{"we/": 2}, steps: []step{
			{"a", "we/", 0, true}, {"b", "we/", 0, true}, {"c", "we/", 0, false}}},
		{name: "an admitted incident stays admitted", luns: map[string]int{"we/": 1}, steps: []step{
			{"a", "we/", 0, true}, {"a", "we/", 0, true}, {"b", "we/", 0, false}}},
		{name: "each region and zone on its own", luns: map[string]int{"we/": 1, "we/1": 1}, steps: []step{
			{"a", "we/", 0, true}, {"b", "we/1", 0, true}, {"c", "we/", 0, false}}},
		{name: "a pool read with no rescue VM running still admits one", luns: map[string]int{"we/": 0}, steps: []step{
			{"a", "we/", 0, true}, {"b", "we/", 0, false}}},
		{name: "an entry older than the TTL no longer counts", luns: map[string]int{"we/": 1}, steps: []step{
			{"a", "we/", 0, true}, {"b", "we/", 30 * time.Second, false}, {"b", "we/", 2 * time.Minute, true}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b backlog
			for where, n := range tc.luns {
				b.setLUNs(where, n)
			}
			for i, s := range tc.steps {
				if ok, n, limit := b.admit(s.id, s.where, t0.Add(s.at), ttl); ok != s.ok {
					t.Fatalf("step %d: admit(%s) = %v (%d of %d), want %v", i, s.id, ok, n, limit, s.ok)
				}
			}
		})
	}
}

func TestBacklogRemoveAdmitsNext(t *testing.T) {
	t.Parallel()
	var b backlog
	b.setLUNs("we/", 1)
	now := time.Now()
	if ok, _, _ := b.admit("a", "we/", now, time.Hour); !ok {
		t.Fatal("a not admitted")
	}
	if ok, _, _ := b.admit("b", "we/", now, time.Hour); ok {
		t.Fatal("b admitted beyond the pool")
	}
	if !b.remove("a") || b.remove("a") {
		t.Fatal("remove should report a once")
	}
	if ok, _, _ := b.admit("b", "we/", now, time.Hour); !ok {
		t.Fatal("b not admitted once a got its LUN")
	}
}
