package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/vms"
)

// Admission to the Snapshot stage. A storm brings more crashing VMs than the rescue pool has LUNs,
// and the Snapshot stage of every one of them would otherwise run at once: a deallocate and a
// snapshot each, two ARM writes per VM, all spent at the start from the subscription's write
// budget for incidents that then wait minutes for a LUN, and the Snapshot queue so busy with them
// that the first incidents' copy reads wait behind them while the rescue VMs idle. So an incident
// enters the Snapshot stage's writes only while fewer incidents of this instance than the pool has
// LUNs in its region and zone are admitted and still without a LUN; the others ask again after
// admissionWait (a scheduled retry, holding no worker), and are admitted as the admitted ones get
// their LUN (or end). A backlog of the pool's size is deep enough that no LUN given back waits for
// a snapshot: a snapshot's copy takes minutes, and so does a LUN's turn.
//
// The pool's LUNs are read when the handler starts (PreparePool) and again each time an incident
// looks for a LUN. Until they are known, nothing is held back.
//
// The count is this instance's own: an incident that goes on in another instance leaves it here
// only after backlogTTL, and until then holds back one admission too many. Instances that scale
// out each admit up to the pool's size, which only weakens the limit.

// backlogTTL is how long an admitted incident counts in the instance that admitted it, unless it
// is seen to get a LUN (or to end) before: the bound on a wait this instance may not observe. It
// is compressed by the local host's time scale.
const backlogTTL = 30 * time.Minute

// backlog counts, by region and zone, the incidents of this instance admitted to the Snapshot
// stage and still without a LUN, and remembers the LUNs of the rescue pool there as last read.
type backlog struct {
	mu      sync.Mutex
	waiting map[string]backlogEntry // incident id
	luns    map[string]int          // region and zone
}

type backlogEntry struct {
	where string
	since time.Time
}

// placeKey is the region and zone key of the backlog.
func placeKey(location, zone string) string {
	return strings.ToLower(strings.ReplaceAll(location, " ", "")) + "/" + zone
}

// setLUNs records the LUNs of the rescue pool in a region and zone.
func (b *backlog) setLUNs(where string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.luns == nil {
		b.luns = map[string]int{}
	}
	b.luns[where] = n
}

// remove stops counting an incident; it reports whether it was counted.
func (b *backlog) remove(id string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.waiting[id]
	delete(b.waiting, id)
	return ok
}

// admit counts the incident as admitted in where, unless where has as many admitted as its pool
// has LUNs (entries older than ttl are dropped first); an incident admitted already stays so. It
// returns the count and the limit.
func (b *backlog) admit(id, where string, now time.Time, ttl time.Duration) (ok bool, n, limit int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.waiting == nil {
		b.waiting = map[string]backlogEntry{}
	}
	if _, in := b.waiting[id]; in {
		return true, 0, 0
	}
	for k, e := range b.waiting {
		switch {
		case now.Sub(e.since) > ttl:
			delete(b.waiting, k)
		case e.where == where:
			n++
		}
	}
	limit, known := b.luns[where]
	// One is always admitted when none waits: its RescueAttach reads the pool again, should the
	// pool have been read with no rescue VM running.
	if known && n >= max(limit, 1) {
		return false, n, limit
	}
	b.waiting[id] = backlogEntry{where: where, since: now}
	return true, n + 1, limit
}

// admit lets the incident enter the Snapshot stage's writes in location and zone, or asks for the
// stage to run again after admissionWait. It does not wait in line in the invocation: the waiters
// would hold the snapshot queue's workers, which admitted incidents need for their copy reads.
func (p *Pipeline) admit(ctx context.Context, r *run, location, zone string) error {
	if r.dry {
		return nil
	}
	where := placeKey(location, zone)
	ttl := time.Duration(float64(backlogTTL) * p.timeScale())
	ok, n, limit := p.backlog.admit(r.msg.IncidentID, where, p.now(), ttl)
	if ok {
		return nil
	}
	return &waitError{reason: fmt.Sprintf("%d incidents are admitted and wait for one of the %d LUNs in %s: the snapshot waits, to keep the write budget for them", n, limit, where),
		delay: admissionWait, unbounded: true}
}

// admissionWait is the pause of an incident not yet admitted to the Snapshot stage. Many wait in
// a storm, each look costs a delivery and audit records, and with many waiting one of them looks
// often enough.
const admissionWait = 10 * time.Minute

// leaveBacklog stops counting an incident as admitted and waiting for a LUN, which makes room
// for the next incident that asks.
func (p *Pipeline) leaveBacklog(incidentID string) {
	p.backlog.remove(incidentID)
}

// PreparePool reads the rescue pool's LUNs by region and zone (each rescue VM's size's data-disk
// limit), for admission. The handler calls it in the background when it starts; a rescue VM that
// cannot be read is left out, and RescueAttach reads the pool again when it looks for a LUN.
func (p *Pipeline) PreparePool(ctx context.Context) error {
	luns := map[string]int{}
	var errs []error
	for _, id := range p.Config.RescueVMs {
		rid, err := resourceid.ParseVM(id)
		if err != nil {
			errs = append(errs, fmt.Errorf("rescue VM %s: %w", id, err))
			continue
		}
		vm, err := p.getVM(ctx, rid, false)
		if armerr.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read rescue VM %s: %w", rid.Name, err))
			continue
		}
		if vm.Power != "" && vm.Power != vms.PowerRunning {
			continue
		}
		az, err := p.in(rid.SubscriptionID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		size, err := az.SKUs.Size(ctx, vm.Location, vm.Size)
		if err != nil {
			errs = append(errs, fmt.Errorf("size of rescue VM %s: %w", rid.Name, err))
			continue
		}
		luns[placeKey(vm.Location, vm.Zone)] += size.MaxDataDiskCount
	}
	if len(errs) > 0 {
		return errors.Join(errs...) // a pool read in part would hold back too much
	}
	for where, n := range luns {
		p.backlog.setLUNs(where, n)
	}
	return nil
}
