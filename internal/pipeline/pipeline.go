// Package pipeline runs vmrescue's remediation: the six stages (Snapshot, RescueAttach,
// OfflinePatch, ReattachReboot, HarvestDump, SupportTicket), the Failed stage that rolls back,
// the Janitor, and the read-only preflight of `handler plan`.
//
// Every stage follows the same rules:
//
//   - Idempotent. Names of what a stage makes derive from the incident id; it reads before it
//     creates and treats "already there" and "already gone" as success, so a redelivered message
//     or a crash anywhere followed by redelivery ends in the same state with no duplicate.
//   - The message and the audit trail are the whole state. A stage records "started", every ARM
//     write (operation, resource id, duration), and "succeeded" with what it made under
//     "artifacts" and the next stage under "next"; a redelivered message finds that record and
//     only re-sends the next stage's message, which duplicate detection absorbs.
//   - Failures are classified by ARM error code in package armerr. Transient failures with a wait
//     (Retry-After, a conflict, an agent still running, a snapshot still copying) are retried by
//     a scheduled message of the same stage (bus.SendOptions.Attempt, ScheduledAt), which holds
//     no worker; other transient failures answer 5xx and Service Bus redelivers. Terminal
//     failures are recorded and queue a rollback (the Failed stage). Rescue capacity (a LUN, a
//     rescue VM's agent or update slot) is waited for in line within the invocation first, for
//     a bounded time (wake.go), then by a scheduled message.
//   - dryRun: reads happen, writes are recorded as planned (event "skipped", dryRun true) and
//     never made.
//   - Never modify or delete a VM's original OS disk: it is only ever the source of a snapshot
//     and the target of a swap back.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/blobstore"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/disks"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lifecycle"
	"github.com/vmrescue/vmrescue/internal/lock"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/runcommand"
	"github.com/vmrescue/vmrescue/internal/server"
	"github.com/vmrescue/vmrescue/internal/skus"
	"github.com/vmrescue/vmrescue/internal/snapshots"
	"github.com/vmrescue/vmrescue/internal/support"
	"github.com/vmrescue/vmrescue/internal/vms"
	"golang.org/x/sync/singleflight"
)

// Bounds of the work of one stage. A stage must end well within the Functions host's
// functionTimeout (30 minutes): work that takes longer is resumed by a scheduled message.
const (
	// callTimeout bounds one ARM request that is not a long-running operation.
	callTimeout = time.Minute
	// lroTimeout bounds one long-running ARM operation (deallocate, start, update, attach,
	// create, delete), its polls included.
	lroTimeout = 15 * time.Minute
	// agentBudget bounds how long a stage waits for the rescue agent's Run Command before it
	// hands the wait to a scheduled message.
	agentBudget = 20 * time.Minute
	// snapshotRecheck bounds the wait before a snapshot's background copy is read again by a
	// scheduled message, however long its rate says it has left.
	snapshotRecheck = 30 * time.Minute
	// defaultLineWait bounds how long an invocation waits within itself, in line, for a rescue VM's
	// LUN or slot (wake.go) before the wait goes to a scheduled message. The agent's own run
	// (agentBudget) still fits in the host's functionTimeout after it.
	defaultLineWait = 5 * time.Minute
	// maxCopyReads bounds the reads of a snapshot's copy within one invocation while its rate
	// cannot be told.
	maxCopyReads = 3
	// maxShortCopyPauses bounds the pauses in a row, shorter than a poll interval, taken to read a
	// snapshot's copy just after its predicted end.
	maxShortCopyPauses = 2
	// defaultPoll is the pause between reads of work in progress.
	defaultPoll = 10 * time.Second
	// capacityWait is the pause before looking for rescue capacity again.
	capacityWait = 2 * time.Minute
	// agentWait is the pause before looking at an agent run again.
	agentWait = 2 * time.Minute
	// inFlightWait is the pause when another delivery of the incident is still running (of the
	// same stage, or any stage for a rollback); minInFlightWait bounds it from below on the clock,
	// when the host compresses its scheduled messages (awaitDelivery).
	inFlightWait    = 5 * time.Minute
	minInFlightWait = 5 * time.Second
	// inFlightWindow: a "started" record younger than this, from another message, is a delivery
	// still running (the host's functionTimeout plus margin).
	inFlightWindow = 35 * time.Minute
	// maxScheduledRetries bounds the scheduled retries of a stage for anything but shared
	// capacity, which is waited for without bound, and another delivery of the incident, which
	// inFlightWindow bounds (awaitDelivery).
	maxScheduledRetries = 20
	// agentSASLifetime is the life of the read SAS of the agent binary: the bootstrap downloads it
	// first thing.
	agentSASLifetime = time.Hour
	// runLogSASLifetime is the life of the SAS Run Command writes its output with.
	runLogSASLifetime = 2 * time.Hour
	// runTimeout is the Run Command's own timeout for the agent.
	runTimeout = 90 * time.Minute
	// maxRunLog bounds the Run Command output read back.
	maxRunLog = 8 << 20
	// maxManifest bounds the dump manifest read back.
	maxManifest = 1 << 20
	// maxBootDiag bounds each boot diagnostics file copied.
	maxBootDiag = 32 << 20
	// bootDiagSASMinutes is the life asked for the boot diagnostics URIs.
	bootDiagSASMinutes = 10
	// signalAttempt is the Attempt of a HarvestDump message brought forward by a crash alert: far
	// above any scheduled retry, so duplicate detection tells them apart and absorbs a resend.
	signalAttempt = 10000
	// escalateAttempt and janitorAttempt are the Attempts of the Failed messages a terminal
	// failure and the Janitor send (the API's rollback request is attempt 0).
	escalateAttempt = 1
	janitorAttempt  = 2
)

// Trail is the part of the audit trail the pipeline uses (*audit.Store).
type Trail interface {
	Append(ctx context.Context, incidentID string, e audit.Entry) (audit.Record, error)
	Read(ctx context.Context, incidentID string) ([]audit.Record, error)
	State(ctx context.Context, incidentID string) (string, error)
	List(ctx context.Context, state string) ([]string, error)
}

// Locks is the part of the locks the pipeline uses (*lock.Locks).
type Locks interface {
	ReleaseVM(ctx context.Context, vmResourceID, incidentID string) error
	ReserveLUN(ctx context.Context, rescueVMID string, lun int32, incidentID string) (acquired bool, holder string, err error)
	ReleaseLUN(ctx context.Context, rescueVMID string, lun int32, incidentID string) error
	LUNHolders(ctx context.Context, rescueVMID string) (map[int32]string, error)
	ReserveSlot(ctx context.Context, s lock.Slot, rescueVMID, incidentID string) (acquired bool, holder lock.Holder, err error)
	TakeOverSlot(ctx context.Context, s lock.Slot, rescueVMID string, stale lock.Holder, incidentID string) (acquired bool, holder lock.Holder, err error)
	ReleaseSlot(ctx context.Context, s lock.Slot, rescueVMID, incidentID string) error
	SlotHolder(ctx context.Context, s lock.Slot, rescueVMID string) (lock.Holder, error)
}

var _ Locks = (*lock.Locks)(nil)

// Azure holds the clients of the Azure APIs the pipeline calls in one subscription. Classifier is
// the tenant's, read from Pipeline.Azure.
type Azure struct {
	VMs         vms.API
	Disks       disks.API
	Snapshots   snapshots.API
	RunCommands runcommand.API
	SKUs        *skus.Catalog
	Tickets     support.TicketsAPI
	Classifier  *support.Classifier
}

// Pipeline holds what every stage needs.
type Pipeline struct {
	Config config.Config
	// Azure are the clients of the pool's subscription, and of every subscription when
	// Subscriptions is nil.
	Azure Azure
	// Subscriptions, when set, returns the clients of a subscription (the VMs of an incident may
	// live in any allowed subscription).
	Subscriptions func(subscriptionID string) (*Azure, error)
	Trail         Trail
	Locks         Locks
	Bus           bus.Sender
	Blobs         *blobstore.Store
	Signer        blobstore.Signer
	// AgentPath is the rescue agent binary shipped with the app.
	AgentPath string
	Events    *lifecycle.Publisher
	// HTTP fetches boot diagnostics from the URIs ARM hands out.
	HTTP *http.Client
	// Poll is the pause between reads of work in progress (a Run Command, a snapshot's copy);
	// zero is 10 seconds.
	Poll time.Duration
	// LineWait bounds the wait in line for a rescue VM's LUN or slot within an invocation
	// (wake.go); zero is 5 minutes, compressed by TimeScale.
	LineWait time.Duration
	// TimeScale is the factor by which the host compresses scheduled waits (Config.TimeScale:
	// 1 in Azure, `handler local`'s --time-scale); zero is 1.
	TimeScale float64
	// WritesPerHour is the ARM write budget per subscription the pipeline paces its writes to
	// (pace.go, Config.ARMWritesPerHour); zero paces nothing.
	WritesPerHour int
	Now           func() time.Time
	Log           *slog.Logger

	lines       waitLine // invocations of this process waiting for a rescue VM's LUN or slot
	exits       exits    // ends the waits in line of incidents whose rollback has begun
	backlog     backlog  // incidents of this process waiting for a LUN, for admission (admission.go)
	pacerOnce   sync.Once
	pacer       *pacer // paces ARM writes to WritesPerHour (pace.go)
	agentOnce   sync.Once
	agent       agentFile
	agentErr    error
	agentUpload singleflight.Group

	containersMu    sync.Mutex
	containersReady bool
}

// Validate reports every missing dependency at once.
func (p *Pipeline) Validate() error {
	var errs []error
	need := func(ok bool, what string) {
		if !ok {
			errs = append(errs, fmt.Errorf("pipeline: %s is not set", what))
		}
	}
	need(p.Azure.VMs != nil, "the VMs client")
	need(p.Azure.Disks != nil, "the disks client")
	need(p.Azure.Snapshots != nil, "the snapshots client")
	need(p.Azure.RunCommands != nil, "the Run Command client")
	need(p.Azure.SKUs != nil, "the SKU catalog")
	need(p.Azure.Tickets != nil, "the support tickets client")
	need(p.Azure.Classifier != nil, "the problem classifier")
	need(p.Trail != nil, "the audit trail")
	need(p.Locks != nil, "the locks")
	need(p.Bus != nil, "the bus")
	need(p.Blobs != nil, "the blob store")
	need(p.Signer != nil, "the SAS signer")
	need(p.AgentPath != "", "the agent binary path")
	need(len(p.Config.RescueVMs) > 0, "the rescue VM pool")
	return errors.Join(errs...)
}

// Stages returns the runners of the six stages and of Failed, for server.Server.Stages.
func (p *Pipeline) Stages() map[incident.Stage]server.StageRunner {
	return map[incident.Stage]server.StageRunner{
		incident.StageSnapshot:       &stageRunner{p, incident.StageSnapshot, p.snapshot},
		incident.StageRescueAttach:   &stageRunner{p, incident.StageRescueAttach, p.rescueAttach},
		incident.StageOfflinePatch:   &stageRunner{p, incident.StageOfflinePatch, p.offlinePatch},
		incident.StageReattachReboot: &stageRunner{p, incident.StageReattachReboot, p.reattachReboot},
		incident.StageHarvestDump:    &stageRunner{p, incident.StageHarvestDump, p.harvestDump},
		incident.StageSupportTicket:  &stageRunner{p, incident.StageSupportTicket, p.supportTicket},
		incident.StageFailed:         &stageRunner{p, incident.StageFailed, p.rollback},
	}
}

// Janitor returns the timer runner that cleans up, for server.Server.Janitor.
func (p *Pipeline) Janitor() server.TimerRunner { return &janitor{p: p} }

func (p *Pipeline) now() time.Time {
	if p.Now != nil {
		return p.Now().UTC()
	}
	return time.Now().UTC()
}

// in returns the clients of a subscription.
func (p *Pipeline) in(subscriptionID string) (*Azure, error) {
	if p.Subscriptions == nil {
		return &p.Azure, nil
	}
	az, err := p.Subscriptions(subscriptionID)
	if err != nil {
		return nil, fmt.Errorf("clients of subscription %s: %w", subscriptionID, err)
	}
	return az, nil
}

// subscriptions lists the subscriptions the Janitor looks in: the allowed ones and the pool's.
func (p *Pipeline) subscriptions() []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if s = strings.ToLower(s); s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, s := range p.Config.AllowedSubscriptions {
		add(s)
	}
	for _, id := range p.Config.RescueVMs {
		if rid, err := resourceid.ParseVM(id); err == nil {
			add(rid.SubscriptionID)
		}
	}
	if p.Subscriptions == nil && len(out) > 1 {
		out = out[:1] // one set of clients: one subscription
	}
	return out
}

// awaitDelivery asks for the stage to run again later because another delivery of the incident is
// still running. It waits without a bound on the number of retries: inFlightWindow, on the
// clock, bounds how long a delivery counts as running, while the number of retries depends on how
// much the host compresses them. (Twenty retries, compressed by the storm's time scale of 0.001,
// gave up on a delivery that waited in line after 6 s.) Each look costs a delivery and a read of
// the trail, so a compressed wait is still minInFlightWait on the clock.
func (p *Pipeline) awaitDelivery(format string, args ...any) error {
	return &waitError{reason: fmt.Sprintf(format, args...), delay: max(inFlightWait, p.clockWait(minInFlightWait)), unbounded: true}
}

// clockWait turns a wait measured on the clock (ARM's Retry-After, the time a snapshot copy has
// left) into the wait of a scheduled message, which the host compresses by its time scale: the
// clock already runs at the simulator's pace, so it must not be compressed again.
func (p *Pipeline) clockWait(d time.Duration) time.Duration {
	return time.Duration(float64(d) / p.timeScale())
}

// paceWrite waits for the write budget of subscriptionID before a write of op by stage (pace.go).
func (p *Pipeline) paceWrite(ctx context.Context, subscriptionID, op string, stage incident.Stage) error {
	if IsDelete(op) {
		return nil
	}
	p.pacerOnce.Do(func() { p.pacer = newPacer(p.WritesPerHour, p.timeScale()) })
	return p.pacer.wait(ctx, subscriptionID, priorityOf(op, stage))
}

// timeScale is TimeScale, 1 when unset.
func (p *Pipeline) timeScale() float64 {
	if p.TimeScale <= 0 {
		return 1
	}
	return p.TimeScale
}

// linePoll is how often an invocation waiting in line (wake.go) reads a reservation again: every
// d, the wait a scheduled retry would take (on the host's compressed clock), and minLinePoll at
// the least. Reading is only for a reservation given back by another instance of the app or held by
// an incident that can no longer use it: one given back in this process wakes the line at once.
// Reading as often as work in progress (the poll interval) would load the storage account with
// every waiter's reads.
func (p *Pipeline) linePoll(d time.Duration) time.Duration {
	return max(time.Duration(float64(d)*p.timeScale()), minLinePoll)
}

// minLinePoll bounds linePoll from below: a LUN's reading lists the reservations of every rescue
// VM of the pool, and a storm has dozens of waiters.
const minLinePoll = 5 * time.Second

// lineWait is the bound of an invocation's waits in line. It is not compressed by the time scale
// of handler local: a wait in line ends as soon as the reservation is given back, and one
// compressed to a fraction of a second turns into scheduled retries every few looks, each with
// its audit records, a message, a delivery and a read of the incident's trail (the 150-VM storm
// took 354 s compressed, 288 s with a floor of 2 s, 146 s uncompressed). A rollback does
// not wait for the waits in line of this process (exits, wake.go), and its waits for another
// instance's delivery are bounded by inFlightWindow, not by a number of retries.
func (p *Pipeline) lineWait() time.Duration {
	if p.LineWait > 0 {
		return p.LineWait
	}
	return defaultLineWait
}

func (p *Pipeline) poll() time.Duration {
	if p.Poll > 0 {
		return p.Poll
	}
	return defaultPoll
}

func (p *Pipeline) log() *slog.Logger {
	if p.Log != nil {
		return p.Log
	}
	return slog.Default()
}

// ensureContainers makes the dumps and tools containers once per process.
func (p *Pipeline) ensureContainers(ctx context.Context) error {
	p.containersMu.Lock()
	defer p.containersMu.Unlock()
	if p.containersReady {
		return nil
	}
	for _, c := range []string{p.Config.DumpsContainer, p.Config.ToolsContainer} {
		if err := p.Blobs.EnsureContainer(ctx, c); err != nil {
			return err
		}
	}
	p.containersReady = true
	return nil
}
