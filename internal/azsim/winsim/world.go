package winsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent/wintest"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/hostproto"
)

// Options configures the simulated Windows world.
type Options struct {
	// EventURL receives the VirtualMachineCrashed events, as Event Grid delivers them: the host's
	// webhook, e.g. http://127.0.0.1:7071/runtime/webhooks/eventgrid?functionName=HealthAlert.
	EventURL string
	// PostEvent, when set, delivers the events instead of EventURL (for tests, or the host's
	// DeliverEvents). With neither, crashes raise no event.
	PostEvent EventPoster
	// EventSchema is hostproto.SchemaEventGrid (default) or hostproto.SchemaCloudEvents.
	EventSchema string
	// DumpScale is the size of a simulated dump file relative to the real one; default
	// DefaultDumpScale. Free space is checked, and run times are computed, with the real size.
	DumpScale float64
	// Latency overrides entries of DefaultLatency(). The time scale is azsim.Options.TimeScale.
	Latency azsim.LatencyTable
	// AgentCheck is how the bootstrap's agent download is checked; default AgentDownload.
	AgentCheck AgentCheck
	// HTTPClient downloads the agent and posts events; nil is a client with bounded timeouts.
	HTTPClient *http.Client
	// Logger receives the world's log; nil discards it.
	Logger *slog.Logger
}

// DefaultDumpScale keeps simulated dumps small enough to harvest into Azurite in memory: an
// 8 GiB complete dump is an 8 MiB file.
const DefaultDumpScale = 1.0 / 1024

// AgentCheck is how the executor checks the agent the bootstrap would download.
type AgentCheck string

// Agent checks.
const (
	// AgentDownload downloads AgentUrl, as the bootstrap does, and compares its SHA-256 with
	// AgentSha256 (once per rescue VM and hash: the bootstrap caches the binary by hash).
	AgentDownload AgentCheck = "download"
	// AgentWellFormed only checks that AgentUrl is a URL and AgentSha256 64 hex digits.
	AgentWellFormed AgentCheck = "well-formed"
)

// agentDownloadTimeout bounds the bootstrap's download of the agent.
const agentDownloadTimeout = 2 * time.Minute

// World is the simulated Windows side of a simulated subscription: the Windows disks of the
// fleet, a simulated Windows (wintest.Machine) on each rescue VM running the real agent through
// managed Run Command, and the guests of the fleet VMs, which crash, write dumps and raise
// Resource Health events when started. Make it with New, Install it into azsim.Options before
// azsim.New, then Bind it to the simulator; or use NewLocal.
type World struct {
	opts   Options
	log    *slog.Logger
	timing timing
	now    func() time.Time
	post   EventPoster
	client *http.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	attachMu sync.Mutex // serializes attach and detach across machines

	bound chan struct{} // closed by Bind

	mu       sync.Mutex
	closed   bool
	sim      *azsim.Sim
	machines map[string]*rescueMachine // by lower rescue VM id
	where    map[*Disk]attachment
	boots    map[string][]*Boot // by lower VM id
	changed  chan struct{}      // closed and replaced when a boot record changes
}

type attachment struct {
	m   *rescueMachine
	lun int
}

// New makes a world. Install it and Bind it before use.
func New(opts Options) *World {
	if opts.DumpScale <= 0 {
		opts.DumpScale = DefaultDumpScale
	}
	if opts.AgentCheck == "" {
		opts.AgentCheck = AgentDownload
	}
	if opts.EventSchema == "" {
		opts.EventSchema = hostproto.SchemaEventGrid
	}
	w := &World{
		opts: opts, log: opts.Logger, now: time.Now, client: opts.HTTPClient,
		machines: map[string]*rescueMachine{}, where: map[*Disk]attachment{},
		boots: map[string][]*Boot{}, changed: make(chan struct{}), bound: make(chan struct{}),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.client == nil {
		w.client = &http.Client{Timeout: agentDownloadTimeout}
	}
	switch {
	case opts.PostEvent != nil:
		w.post = opts.PostEvent
	case opts.EventURL != "":
		w.post = PostTo(opts.EventURL, w.client, opts.EventSchema)
	}
	w.timing = newTiming(opts.Latency, 0)
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w
}

// Install points the simulator's options at the world: ContentFor builds the fleet's Windows OS
// disks, Executor runs the agent, OnVMStarted boots the guests. It takes the time scale (and the
// clock) from opts, so call it after they are set.
func (w *World) Install(opts *azsim.Options) {
	w.timing = newTiming(w.opts.Latency, opts.TimeScale)
	if opts.Clock != nil {
		w.now = opts.Clock.Now
	}
	crashed := w.now().Add(-30 * time.Minute)
	opts.ContentFor = func(s azsim.VMSpec) azsim.Content { return OSDiskFor(s, w.opts.DumpScale, crashed) }
	opts.Executor = w
	opts.OnVMStarted = w.onVMStarted
	opts.GuestReportsAgent = true
}

// Bind connects the world to the simulator made with the installed options, and gives the fleet
// VMs' data disks their simulated volumes. A VM started before Bind boots once Bind is done (the
// crash loop waits up to bindWait for it), so it may be called just after the simulator is
// served.
func (w *World) Bind(sim *azsim.Sim) error {
	w.mu.Lock()
	if w.sim != nil {
		w.mu.Unlock()
		return errors.New("winsim: already bound")
	}
	w.sim = sim
	w.mu.Unlock()
	defer close(w.bound)
	var errs []error
	for _, vm := range sim.State().VMs() {
		for _, dd := range vm.DataDisks {
			i := slices.IndexFunc(vm.Spec.DataDisks, func(s azsim.DataDiskSpec) bool { return s.LUN == dd.LUN })
			if vm.Rescue || i < 0 {
				continue
			}
			if err := sim.State().SetDiskContent(dd.DiskID, DataDiskFor(vm.ID, vm.Spec.DataDisks[i])); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// LocalOptions configures NewLocal.
type LocalOptions struct {
	// Sim configures the simulator; NewLocal sets its ContentFor, Executor and OnVMStarted. Its
	// TimeScale applies to the world as well.
	Sim azsim.Options
	// World configures the simulated Windows world.
	World Options
}

// NewLocal makes a simulator of fleet (nil is azsim.DefaultFleet()) with the Windows world
// installed and bound: what `handler local` and end-to-end tests run. Close the world when done.
func NewLocal(fleet *azsim.Fleet, opts LocalOptions) (*World, error) {
	w := New(opts.World)
	simOpts := opts.Sim
	w.Install(&simOpts)
	sim, err := azsim.New(fleet, simOpts)
	if err != nil {
		return nil, err
	}
	if err := w.Bind(sim); err != nil {
		return nil, err
	}
	return w, nil
}

// Sim is the simulator the world is bound to (nil before Bind).
func (w *World) Sim() *azsim.Sim {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sim
}

// Close stops the guests' pending boots and event deliveries and waits for them.
func (w *World) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
}

// Machine returns the simulated Windows of a rescue VM, made on its first Run Command (nil
// before).
func (w *World) Machine(rescueVMID string) *wintest.Machine {
	w.mu.Lock()
	defer w.mu.Unlock()
	if m, ok := w.machines[strings.ToLower(rescueVMID)]; ok {
		return m.win
	}
	return nil
}

// bindWait bounds how long a boot waits for Bind.
const bindWait = 30 * time.Second

// state is the bound simulator's state, waiting for Bind within bindWait.
func (w *World) state() (*azsim.State, error) {
	t := time.NewTimer(bindWait)
	defer t.Stop()
	select {
	case <-w.bound:
	case <-w.ctx.Done():
		return nil, w.ctx.Err()
	case <-t.C:
		return nil, errors.New("winsim: not bound to a simulator")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sim.State(), nil
}

// Outcome is how a boot of a fleet VM ended.
type Outcome string

// Outcomes.
const (
	OutcomeBooting     Outcome = "booting"
	OutcomeHealthy     Outcome = "healthy"     // booted to the desktop; no event
	OutcomeCrashed     Outcome = "crashed"     // stop error at boot, in a reboot loop; event raised
	OutcomeInterrupted Outcome = "interrupted" // stopped, deallocated or restarted before the end
)

// Boot is one start of a fleet VM and what its guest did.
type Boot struct {
	VMID      string
	Seq       int // 1 for the VM's first start in this simulator
	StartedAt time.Time
	OSDiskID  string
	Outcome   Outcome
	BugCheck  uint32
	// Dump is the memory dump written at the crash, nil if none; NoDump says why not.
	Dump   *DumpWritten
	NoDump string
	// Minidump is the path of the small dump written beside it, "" if none.
	Minidump string
	// EventID is the VirtualMachineCrashed event raised (set before delivery); EventAttempts
	// and EventError tell how its delivery went.
	EventID       string
	EventAttempts int
	EventError    string
	Done          bool
}

// DumpWritten is a memory dump the crash loop wrote.
type DumpWritten struct {
	DiskID    string // the managed disk holding it
	Path      string // on that disk's volume, e.g. Windows\MEMORY.DMP
	DumpFile  string // CrashControl's DumpFile, as the VM sees it
	Type      string // complete or kernel (automatic is kernel-sized)
	RealBytes int64  // the size a real dump would have
	Bytes     int64  // the size of the simulated file (RealBytes × DumpScale)
}

func (b Boot) clone() Boot {
	if b.Dump != nil {
		d := *b.Dump
		b.Dump = &d
	}
	return b
}

// Boots lists the starts of a VM so far, oldest first.
func (w *World) Boots(vmID string) []Boot {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Boot
	for _, b := range w.boots[strings.ToLower(vmID)] {
		out = append(out, b.clone())
	}
	return out
}

// WaitBoot waits until the n-th start (from 1) of a VM is done (its guest healthy, or crashed
// and its event delivered or given up) and returns it.
func (w *World) WaitBoot(ctx context.Context, vmID string, n int) (Boot, error) {
	for {
		w.mu.Lock()
		bs := w.boots[strings.ToLower(vmID)]
		ch := w.changed
		if n >= 1 && n <= len(bs) && bs[n-1].Done {
			b := bs[n-1].clone()
			w.mu.Unlock()
			return b, nil
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return Boot{}, fmt.Errorf("winsim: boot %d of %s: %w", n, vmID, ctx.Err())
		case <-ch:
		}
	}
}

// update changes a boot record under the lock and wakes WaitBoot.
func (w *World) update(b *Boot, fn func(*Boot)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fn(b)
	close(w.changed)
	w.changed = make(chan struct{})
}
