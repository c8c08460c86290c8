package pipeline

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/incident"
)

// Pacing ARM's write budget. ARM gives a principal a budget of writes per subscription (1,200 an
// hour by default), counted over a sliding hour, and answers 429 beyond it. A storm that spends the
// budget as fast as it can empties it well inside the hour, and then nothing goes until the first
// writes leave the window: not even the Run Command that would set an idle rescue VM to work, so
// the rescue VMs idle while incidents wait. A steady storm needs about as many writes as the
// budget refills, so the pipeline spends it at the rate it refills: a token bucket per
// subscription, refilled at WritesPerHour an hour (compressed by TimeScale under the local host),
// with a burst of a fiftieth of it. Deletes are not paced: ARM counts them against a budget of
// their own, fifteen times larger.
//
// When writes wait for the bucket, a rollback's go first (they give a VM its own disk back), then
// those that keep the rescue VMs at work: a Run Command's submission, then attaches, detaches and
// the disk copies they attach, then the rest (deallocations, snapshots, OS disk swaps, starts,
// boot diagnostics, tickets). Within each class, the incident nearest to its end goes first (a
// ticket, a harvest, a reboot, ...), as for a LUN (wake.go): a storm then ends on few incidents
// with short ways to go, not on many harvests that waited behind new patches. The bucket is this
// instance's: instances that scale out each pace to the whole budget, and ARM's 429 (retried as
// before) then paces them together. Pacing exactly at the refill rate with a burst can still
// overfill the sliding hour now and then; ARM answers 429, which spends nothing.

// writePriority orders writes that wait for the write budget: lower goes first.
type writePriority int

// The classes of writes, most urgent first.
const (
	classRun   = iota // a Run Command's submission: an agent at work
	classDisk         // an attach, a detach, a disk copy: the next runs' disks
	classOther        // the rest
	classes
)

// nearestEnd lists the stages by their distance to the incident's end, nearest first. A rollback's
// writes (StageFailed) go before every class.
var nearestEnd = [...]incident.Stage{
	incident.StageSupportTicket, incident.StageHarvestDump, incident.StageReattachReboot,
	incident.StageOfflinePatch, incident.StageRescueAttach, incident.StageSnapshot,
}

// priorities is the number of writePriority values: the rollback's, then each class's stages.
const priorities = writePriority(1 + classes*len(nearestEnd))

// priorityOf is the priority of a write of op by a stage. A rollback's writes go before all others:
// they give a VM its own disk back.
func priorityOf(op string, stage incident.Stage) writePriority {
	if stage == incident.StageFailed {
		return 0
	}
	class := classOther
	switch op {
	case "VirtualMachineRunCommands.BeginCreateOrUpdate":
		class = classRun
	case "VirtualMachines.BeginAttachDetachDataDisks", "Disks.BeginCreateOrUpdate":
		class = classDisk
	}
	rank := slices.Index(nearestEnd[:], stage)
	if rank < 0 {
		rank = len(nearestEnd) - 1
	}
	return writePriority(1 + class*len(nearestEnd) + rank)
}

// pacer is a token bucket per subscription with prioritized waiters.
type pacer struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time
	sleep func(context.Context, time.Duration) error

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens  float64
	at      time.Time
	waiting [priorities]int
}

// newPacer paces to perHour writes an hour, the hour compressed by scale. perHour <= 0 paces
// nothing (nil).
func newPacer(perHour int, scale float64) *pacer {
	if perHour <= 0 {
		return nil
	}
	if scale <= 0 {
		scale = 1
	}
	rate := float64(perHour) / (time.Hour.Seconds() * scale)
	return &pacer{rate: rate, burst: max(float64(perHour)/50, 1), now: time.Now, sleep: sleep}
}

// wait takes one write of subscriptionID's budget at priority pr, waiting while the bucket is
// empty or a write of a higher priority waits.
func (pc *pacer) wait(ctx context.Context, subscriptionID string, pr writePriority) error {
	if pc == nil {
		return nil
	}
	key := strings.ToLower(subscriptionID)
	registered := false
	for {
		pc.mu.Lock()
		if pc.buckets == nil {
			pc.buckets = map[string]*bucket{}
		}
		b := pc.buckets[key]
		now := pc.now()
		if b == nil {
			b = &bucket{tokens: pc.burst, at: now}
			pc.buckets[key] = b
		}
		b.tokens = min(pc.burst, b.tokens+now.Sub(b.at).Seconds()*pc.rate)
		b.at = now
		ahead := 0
		for p := range pr {
			ahead += b.waiting[p]
		}
		if b.tokens >= 1 && ahead == 0 {
			b.tokens--
			if registered {
				b.waiting[pr]--
			}
			pc.mu.Unlock()
			return nil
		}
		if !registered {
			b.waiting[pr]++
			registered = true
		}
		// Until there are tokens for the writes ahead and this one.
		d := time.Duration((float64(ahead) + 1 - b.tokens) / pc.rate * float64(time.Second))
		pc.mu.Unlock()
		if err := pc.sleep(ctx, max(d, time.Millisecond)); err != nil {
			pc.mu.Lock()
			b.waiting[pr]--
			pc.mu.Unlock()
			return err
		}
	}
}

// subscriptionOf returns the subscription id of an ARM resource id, or "".
func subscriptionOf(resourceID string) string {
	parts := strings.Split(strings.Trim(resourceID, "/"), "/")
	if len(parts) >= 2 && strings.EqualFold(parts[0], "subscriptions") {
		return parts[1]
	}
	return ""
}
