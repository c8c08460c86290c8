package pipeline

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/incident"
)

// fakeClock is a clock that moves only when a pacer sleeps on it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

// TestPacerRate: the bucket lets a burst through at once, then one write per 1/rate, per
// subscription; an hour compressed by the time scale gives the hour's budget.
func TestPacerRate(t *testing.T) {
	t.Parallel()
	pc := newPacer(3600, 0.5) // 3,600 an hour in half an hour: 2 a second
	if pc.rate != 2 || pc.burst != 72 {
		t.Fatalf("rate %v, burst %v; want 2/s, 72", pc.rate, pc.burst)
	}
	clock := &fakeClock{now: time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)}
	pc.now, pc.sleep = clock.Now, clock.Sleep
	start := clock.Now()
	other := priorityOf("VirtualMachines.BeginStart", incident.StageReattachReboot)
	for range 72 + 10 {
		if err := pc.wait(context.Background(), "SUB-A", other); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := clock.Now().Sub(start), 5*time.Second; got < want-10*time.Millisecond || got > want+10*time.Millisecond {
		t.Errorf("82 writes took %v, want %v (72 at once, then 10 at 2 a second)", got, want)
	}
	before := clock.Now()
	if err := pc.wait(context.Background(), "sub-b", other); err != nil || clock.Now() != before {
		t.Errorf("another subscription waited %v (%v): each has its own budget", clock.Now().Sub(before), err)
	}
	if newPacer(0, 1) != nil {
		t.Error("a zero budget should pace nothing")
	}
	var none *pacer
	if err := none.wait(context.Background(), "sub-a", other); err != nil {
		t.Errorf("no pacer: %v", err)
	}
}

// TestPacerPriority: with the bucket empty, a write of a higher priority goes before the writes
// of lower ones that waited longer.
func TestPacerPriority(t *testing.T) {
	t.Parallel()
	pc := newPacer(3600, 1)
	pc.burst, pc.rate = 1, 20 // a token each 50 ms
	var mu sync.Mutex
	var order []writePriority
	take := func(pr writePriority) {
		if err := pc.wait(context.Background(), "sub", pr); err != nil {
			t.Error(err)
		}
		mu.Lock()
		order = append(order, pr)
		mu.Unlock()
	}
	run := priorityOf("VirtualMachineRunCommands.BeginCreateOrUpdate", incident.StageOfflinePatch)
	attach := priorityOf("VirtualMachines.BeginAttachDetachDataDisks", incident.StageRescueAttach)
	start := priorityOf("VirtualMachines.BeginStart", incident.StageReattachReboot)
	take(start) // the burst
	var wg sync.WaitGroup
	wg.Go(func() { take(start) })
	wg.Go(func() { take(attach) })
	for waiting := 0; waiting < 2; { // both wait for the next token
		time.Sleep(time.Millisecond)
		pc.mu.Lock()
		b := pc.buckets["sub"]
		waiting = b.waiting[start] + b.waiting[attach]
		pc.mu.Unlock()
	}
	wg.Go(func() { take(run) })
	wg.Wait()
	if want := []writePriority{start, run, attach, start}; !slices.Equal(order, want) {
		t.Errorf("order %v, want %v: the burst, then the run, the attach, the start", order, want)
	}
}

// TestPriorityOf: a rollback's writes first, then Run Commands, then what gives the rescue VMs
// their disks, then the rest; within each, the stage nearest to the incident's end. Deletes are
// not paced.
func TestPriorityOf(t *testing.T) {
	t.Parallel()
	ordered := []writePriority{ // most urgent first
		priorityOf("VirtualMachines.BeginUpdate", incident.StageFailed), // a rollback's swap back
		priorityOf("VirtualMachineRunCommands.BeginCreateOrUpdate", incident.StageHarvestDump),
		priorityOf("VirtualMachineRunCommands.BeginCreateOrUpdate", incident.StageOfflinePatch),
		priorityOf("VirtualMachines.BeginAttachDetachDataDisks", incident.StageHarvestDump),
		priorityOf("Disks.BeginCreateOrUpdate", incident.StageRescueAttach),
		priorityOf("Tickets.BeginCreate", incident.StageSupportTicket),
		priorityOf("VirtualMachines.BeginDeallocate", incident.StageHarvestDump),
		priorityOf("VirtualMachines.BeginStart", incident.StageReattachReboot),
		priorityOf("VirtualMachines.BeginDeallocate", incident.StageSnapshot),
	}
	for i := 1; i < len(ordered); i++ {
		if ordered[i-1] >= ordered[i] {
			t.Errorf("priority %d is %d, not ahead of %d (the next)", i-1, ordered[i-1], ordered[i])
		}
	}
	for _, pr := range ordered {
		if pr < 0 || pr >= priorities {
			t.Errorf("priority %d out of range", pr)
		}
	}
	for op, want := range map[string]bool{"Disks.BeginDelete": true, "VirtualMachineRunCommands.BeginDelete": true, "Snapshots.BeginCreateOrUpdate": false} {
		if IsDelete(op) != want {
			t.Errorf("IsDelete(%s) = %v, want %v", op, !want, want)
		}
	}
	if got := subscriptionOf("/subscriptions/abc/resourceGroups/rg"); got != "abc" {
		t.Errorf("subscriptionOf = %q", got)
	}
}
