package lock_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/audit/memblob"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lock"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

const (
	testVM   = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-prod/providers/Microsoft.Compute/virtualMachines/vm-web-01"
	rescueVM = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-rescue/providers/Microsoft.Compute/virtualMachines/rescue-westeurope-1"
)

// forEachBackend runs fn against real Azurite and against memblob, which must behave the same.
func forEachBackend(t *testing.T, fn func(t *testing.T, l *lock.Locks)) {
	t.Helper()
	ctx := context.Background()
	for _, b := range []struct {
		name  string
		locks *lock.Locks
	}{
		{"azurite", lock.New(azuritetest.Client(t), azuritetest.Container(t, "locks"))},
		{"memblob", lock.NewFrom(memblob.New())},
	} {
		for range 2 { // idempotent
			if err := b.locks.EnsureContainer(ctx); err != nil {
				t.Fatalf("%s: EnsureContainer: %v", b.name, err)
			}
		}
		t.Run(b.name, func(t *testing.T) { fn(t, b.locks) })
	}
}

func ids(n int) []string {
	out := make([]string, n)
	seen := map[string]bool{}
	for i := range out {
		for {
			id := incident.NewID(time.Now())
			if !seen[id] {
				seen[id] = true
				out[i] = id
				break
			}
		}
	}
	return out
}

func TestVMLock(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, l *lock.Locks) {
		ctx := context.Background()
		in := ids(2)
		a, b := in[0], in[1]
		upper := strings.ToUpper(testVM)

		steps := []struct {
			name         string
			run          func() (string, bool, error)
			wantHolder   string
			wantAcquired bool
		}{
			{"a acquires", func() (string, bool, error) { return l.AcquireVM(ctx, testVM, a) }, a, true},
			{"b is refused", func() (string, bool, error) { return l.AcquireVM(ctx, testVM, b) }, a, false},
			{"b is refused under another case", func() (string, bool, error) { return l.AcquireVM(ctx, upper, b) }, a, false},
			{"a acquires again", func() (string, bool, error) { return l.AcquireVM(ctx, upper, a) }, a, true},
		}
		for _, s := range steps {
			h, ok, err := s.run()
			if err != nil || h != s.wantHolder || ok != s.wantAcquired {
				t.Fatalf("%s: (%q, %v, %v), want (%q, %v, nil)", s.name, h, ok, err, s.wantHolder, s.wantAcquired)
			}
		}
		if h, err := l.HolderVM(ctx, upper); err != nil || h != a {
			t.Fatalf("HolderVM = %q, %v; want %q", h, err, a)
		}
		if err := l.ReleaseVM(ctx, testVM, b); !errors.Is(err, lock.ErrNotHolder) {
			t.Fatalf("release by a non-holder: %v, want ErrNotHolder", err)
		}
		if h, _ := l.HolderVM(ctx, testVM); h != a {
			t.Fatalf("non-holder release changed the holder to %q", h)
		}
		for i := range 2 { // the second release finds the lock gone
			if err := l.ReleaseVM(ctx, upper, a); err != nil {
				t.Fatalf("release %d by the holder: %v", i+1, err)
			}
		}
		if h, err := l.HolderVM(ctx, testVM); err != nil || h != "" {
			t.Fatalf("HolderVM after release = %q, %v", h, err)
		}
		if err := l.ReleaseVM(ctx, testVM, b); err != nil {
			t.Fatalf("release of a free lock: %v", err)
		}
		if h, ok, err := l.AcquireVM(ctx, testVM, b); err != nil || !ok || h != b {
			t.Fatalf("b after release: (%q, %v, %v)", h, ok, err)
		}
	})
}

func TestVMLockRace(t *testing.T) {
	t.Parallel()
	const racers = 16
	forEachBackend(t, func(t *testing.T, l *lock.Locks) {
		t.Parallel()
		ctx := context.Background()
		in := ids(racers)
		type result struct {
			id, holder string
			ok         bool
			err        error
		}
		results := make([]result, racers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, id := range in {
			wg.Go(func() {
				<-start
				h, ok, err := l.AcquireVM(ctx, testVM, id)
				results[i] = result{id, h, ok, err}
			})
		}
		close(start)
		wg.Wait()
		var winners []string
		for _, r := range results {
			if r.err != nil {
				t.Fatalf("%s: %v", r.id, r.err)
			}
			if r.ok {
				winners = append(winners, r.id)
			}
		}
		if len(winners) != 1 {
			t.Fatalf("%d winners, want exactly 1: %v", len(winners), winners)
		}
		for _, r := range results {
			if r.holder != winners[0] {
				t.Errorf("%s was told the holder is %q, winner is %q", r.id, r.holder, winners[0])
			}
		}
		if h, _ := l.HolderVM(ctx, testVM); h != winners[0] {
			t.Errorf("HolderVM = %q, want %q", h, winners[0])
		}
	})
}

func TestTakeOverVM(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, l *lock.Locks) {
		ctx := context.Background()
		in := ids(5)
		stale, other, next, later, last := in[0], in[1], in[2], in[3], in[4]
		if _, ok, err := l.AcquireVM(ctx, testVM, stale); err != nil || !ok {
			t.Fatalf("acquire: %v %v", ok, err)
		}
		steps := []struct {
			name          string
			staleID, newI string
			wantHolder    string
			wantAcquired  bool
		}{
			{"wrong stale holder named", other, next, stale, false},
			{"the named stale holder", stale, next, next, true},
			{"repeated take-over", stale, next, next, true},
			{"stale holder already replaced", stale, later, next, false},
		}
		for _, s := range steps {
			h, ok, err := l.TakeOverVM(ctx, testVM, s.staleID, s.newI)
			if err != nil || h != s.wantHolder || ok != s.wantAcquired {
				t.Fatalf("%s: (%q, %v, %v), want (%q, %v, nil)", s.name, h, ok, err, s.wantHolder, s.wantAcquired)
			}
			if h, _ := l.HolderVM(ctx, testVM); h != s.wantHolder {
				t.Fatalf("%s: holder is %q, want %q", s.name, h, s.wantHolder)
			}
		}
		if err := l.ReleaseVM(ctx, testVM, stale); !errors.Is(err, lock.ErrNotHolder) {
			t.Fatalf("release by the replaced holder: %v, want ErrNotHolder", err)
		}
		if err := l.ReleaseVM(ctx, testVM, next); err != nil {
			t.Fatal(err)
		}
		if h, ok, err := l.TakeOverVM(ctx, testVM, stale, last); err != nil || !ok || h != last {
			t.Fatalf("take-over of a free lock: (%q, %v, %v)", h, ok, err)
		}
	})
}

func TestTakeOverRace(t *testing.T) {
	t.Parallel()
	const racers = 8
	forEachBackend(t, func(t *testing.T, l *lock.Locks) {
		ctx := context.Background()
		in := ids(racers + 1)
		stale := in[0]
		if _, ok, err := l.AcquireVM(ctx, testVM, stale); err != nil || !ok {
			t.Fatalf("acquire: %v %v", ok, err)
		}
		var mu sync.Mutex
		var winners []string
		var wg sync.WaitGroup
		for _, id := range in[1:] {
			wg.Go(func() {
				h, ok, err := l.TakeOverVM(ctx, testVM, stale, id)
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				if ok != (h == id) {
					t.Errorf("%s: acquired=%v with holder %q", id, ok, h)
				}
				if ok {
					mu.Lock()
					winners = append(winners, id)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d take-overs succeeded, want 1: %v", len(winners), winners)
		}
	})
}

func TestLUN(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, l *lock.Locks) {
		ctx := context.Background()
		in := ids(2)
		a, b := in[0], in[1]
		otherRescue := strings.Replace(rescueVM, "-1", "-2", 1)

		steps := []struct {
			name       string
			vm         string
			lun        int32
			id         string
			wantOK     bool
			wantHolder string
		}{
			{"a reserves 3", rescueVM, 3, a, true, a},
			{"a reserves 3 again", strings.ToUpper(rescueVM), 3, a, true, a},
			{"b is refused 3", rescueVM, 3, b, false, a},
			{"b reserves 4", rescueVM, 4, b, true, b},
			{"b reserves 3 on another rescue vm", otherRescue, 3, b, true, b},
		}
		for _, s := range steps {
			ok, h, err := l.ReserveLUN(ctx, s.vm, s.lun, s.id)
			if err != nil || ok != s.wantOK || h != s.wantHolder {
				t.Fatalf("%s: (%v, %q, %v), want (%v, %q, nil)", s.name, ok, h, err, s.wantOK, s.wantHolder)
			}
		}
		holders, err := l.LUNHolders(ctx, rescueVM)
		if err != nil {
			t.Fatal(err)
		}
		if len(holders) != 2 || holders[3] != a || holders[4] != b {
			t.Fatalf("LUNHolders = %v", holders)
		}
		if err := l.ReleaseLUN(ctx, rescueVM, 3, b); !errors.Is(err, lock.ErrNotHolder) {
			t.Fatalf("release by a non-holder: %v, want ErrNotHolder", err)
		}
		for range 2 {
			if err := l.ReleaseLUN(ctx, rescueVM, 3, a); err != nil {
				t.Fatalf("release by the holder: %v", err)
			}
		}
		if holders, _ := l.LUNHolders(ctx, rescueVM); len(holders) != 1 || holders[4] != b {
			t.Fatalf("LUNHolders after release = %v", holders)
		}
		if ok, h, err := l.ReserveLUN(ctx, rescueVM, 3, b); err != nil || !ok || h != b {
			t.Fatalf("b after release: (%v, %q, %v)", ok, h, err)
		}
		for _, lun := range []int32{-1, lock.MaxLUN} {
			if _, _, err := l.ReserveLUN(ctx, rescueVM, lun, a); err == nil {
				t.Errorf("LUN %d accepted", lun)
			}
		}
		if _, _, err := l.AcquireVM(ctx, testVM, "not-an-incident"); err == nil {
			t.Error("malformed incident id accepted")
		}
	})
}

func TestLUNRace(t *testing.T) {
	t.Parallel()
	const racers, luns = 16, 8
	forEachBackend(t, func(t *testing.T, l *lock.Locks) {
		t.Parallel()
		ctx := context.Background()
		in := ids(racers)
		got := make([]int32, racers) // the LUN each incident reserved, -1 for none
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, id := range in {
			wg.Go(func() {
				<-start
				got[i] = -1
				for _, lun := range rand.Perm(luns) { // each racer tries the LUNs in its own order
					ok, h, err := l.ReserveLUN(ctx, rescueVM, int32(lun), id)
					if err != nil {
						t.Errorf("%s: %v", id, err)
						return
					}
					if ok != (h == id) {
						t.Errorf("%s: acquired=%v with holder %q", id, ok, h)
					}
					if ok {
						got[i] = int32(lun)
						return
					}
				}
			})
		}
		close(start)
		wg.Wait()
		byLUN := map[int32][]string{}
		for i, lun := range got {
			if lun >= 0 {
				byLUN[lun] = append(byLUN[lun], in[i])
			}
		}
		if len(byLUN) != luns {
			t.Fatalf("%d LUNs reserved, want %d: %v", len(byLUN), luns, byLUN)
		}
		for lun, holders := range byLUN {
			if len(holders) != 1 {
				t.Errorf("LUN %d reserved by %v", lun, holders)
			}
		}
		holders, err := l.LUNHolders(ctx, rescueVM)
		if err != nil {
			t.Fatal(err)
		}
		for lun, ids := range byLUN {
			if holders[lun] != ids[0] {
				t.Errorf("LUNHolders[%d] = %q, want %q", lun, holders[lun], ids[0])
			}
		}
	})
}

// BenchmarkVMLock measures one acquire and release of a VM lock.
func BenchmarkVMLock(b *testing.B) {
	ctx := context.Background()
	for _, bk := range []struct {
		name  string
		locks func(b *testing.B) *lock.Locks
	}{
		{"memblob", func(b *testing.B) *lock.Locks { return lock.NewFrom(memblob.New()) }},
		{"azurite", func(b *testing.B) *lock.Locks {
			return lock.New(azuritetest.Client(b), azuritetest.Container(b, "bench"))
		}},
	} {
		l := bk.locks(b)
		if err := l.EnsureContainer(ctx); err != nil {
			b.Fatal(err)
		}
		id := incident.NewID(time.Now())
		b.Run(bk.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok, err := l.AcquireVM(ctx, testVM, id); err != nil || !ok {
					b.Fatal(ok, err)
				}
				if err := l.ReleaseVM(ctx, testVM, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
