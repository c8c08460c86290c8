// Package winsim is the Windows side of vmrescue's simulated Azure (internal/azsim): the Windows
// volumes on the fleet's disks, the rescue VMs running the real rescue agent through managed Run
// Command, and the guests of the fleet VMs, which crash at boot, write memory dumps and raise
// Resource Health events. It lives beside azsim so that azsim, an ARM simulator, does not depend
// on the agent.
//
// # Putting it together
//
// For `handler local` and end-to-end tests:
//
//	w, err := winsim.NewLocal(fleet, winsim.LocalOptions{
//	    Sim:   azsim.Options{TimeScale: 0.05, PublicURL: simURL},
//	    World: winsim.Options{EventURL: "http://127.0.0.1:7071/runtime/webhooks/eventgrid?functionName=HealthAlert"},
//	})
//	defer w.Close()
//	sim := w.Sim() // serve sim.Handler(), build clients with sim.ClientOptions(), ...
//
// Where something else calls azsim.New (localhost.StartStack's ConfigureSim hook):
//
//	w := winsim.New(winsim.Options{PostEvent: ...})
//	w.Install(&simOpts)          // after TimeScale and Clock are set
//	sim, err := azsim.New(fleet, simOpts)
//	err = w.Bind(sim)            // before or just after the simulator is served
//	defer w.Close()
//
// # Exported API
//
//	func New(opts Options) *World
//	func NewLocal(fleet *azsim.Fleet, opts LocalOptions) (*World, error)
//	type LocalOptions struct { Sim azsim.Options; World Options }
//	type Options struct {
//	    EventURL    string             // the host's Event Grid webhook
//	    PostEvent   EventPoster        // instead of EventURL (tests, Host.DeliverEvents)
//	    EventSchema string             // hostproto.SchemaEventGrid (default) or SchemaCloudEvents
//	    DumpScale   float64            // simulated dump size / real size; default DefaultDumpScale (1/1024)
//	    Latency     azsim.LatencyTable // overrides DefaultLatency(); time scale is azsim.Options.TimeScale
//	    AgentCheck  AgentCheck         // AgentDownload (default) or AgentWellFormed
//	    HTTPClient  *http.Client
//	    Logger      *slog.Logger
//	}
//	func (w *World) Install(opts *azsim.Options)   // sets ContentFor, Executor, OnVMStarted
//	func (w *World) Bind(sim *azsim.Sim) error
//	func (w *World) Sim() *azsim.Sim
//	func (w *World) Close()
//	func (w *World) Run(ctx, azsim.RunCommandRequest) azsim.RunCommandResult // azsim.RunCommandExecutor
//	func (w *World) Machine(rescueVMID string) *wintest.Machine
//	func (w *World) Boots(vmID string) []Boot
//	func (w *World) WaitBoot(ctx context.Context, vmID string, n int) (Boot, error)
//	type Boot struct { VMID; Seq; StartedAt; OSDiskID; Outcome; BugCheck; Dump *DumpWritten; NoDump;
//	                   Minidump; EventID; EventAttempts; EventError; Done }
//	type Outcome string // OutcomeBooting, OutcomeHealthy, OutcomeCrashed, OutcomeInterrupted
//	type DumpWritten struct { DiskID, Path, DumpFile, Type string; RealBytes, Bytes int64 }
//	type Disk  // azsim.Content: NewDisk(*wintest.Disk), Clone, Hash, View(func(*wintest.Disk))
//	func OSDiskFor(spec azsim.VMSpec, dumpScale float64, crashed time.Time) azsim.Content
//	func DataDiskFor(vmID string, spec azsim.DataDiskSpec) *Disk
//	func CrashEvent(vmID, eventID string, at time.Time, schema string) ([]byte, error)
//	type EventPoster func(ctx context.Context, body []byte, attempt int) error
//	func PostTo(url string, client *http.Client, schema string) EventPoster
//	type PermanentError struct{ Status int }
//	func DefaultLatency() azsim.LatencyTable // Agent.*, Guest.*, ResourceHealth.EventDelay
//
// # What is modelled
//
// Disks. Each Windows fleet VM's original OS disk (OSDiskFor) is a wintest disk in the layout of
// Azure's images: gen1 MBR with System Reserved and \Boot\BCD, gen2 GPT with an EFI system
// partition and \EFI\Microsoft\Boot\BCD, the SYSTEM hive with ControlSet001 and ControlSet002 and
// Select\Current=1, the image's BCD store, the fleet's free space, and the image's disk identity
// (so a gen1 copy collides with the rescue VM's own gen1 disk). A VM with dumpPresent has
// Windows' default CrashDumpEnabled=7 and the MEMORY.DMP (and a minidump) of its last crash; any
// other has crash dumps off (CrashDumpEnabled=0), which is why it has no dump. Data disks of
// fleet VMs get one NTFS volume each (E:, F:, ... in LUN order). Disk is the azsim.Content: Clone
// deep-copies, Hash covers identity, layout, free space and every file, hive value and BCD
// element, so ChangedOriginalDisks sees any change to an original.
//
// Run Command (World.Run). Only the rescue pool runs it, and only vmrescue's bootstrap script.
// The executor checks the parameters as bootstrap.ps1 does, downloads AgentUrl and checks its
// SHA-256 (cached per rescue VM and hash, as the bootstrap caches the binary; plain http is
// accepted on loopback, where Azurite is), attaches to the rescue VM's wintest.Machine exactly
// the disks ARM has at each LUN (a new one comes up offline; one detached in ARM is detached),
// and runs agent.Agent.CLI("--request-env") with AgentRequest in its environment, as the
// bootstrap does. Output is the agent's stdout (indented result, then the result line), error its
// log, exit code the agent's (1 for a bootstrap throw); azsim keeps the 4 KB tail and writes
// outputBlobUri. Harvest uploads to its SAS for real. The run time reported to azsim is the
// Agent.* figures, the download, and for harvest the real dump size at Agent.HarvestPerGiB.
//
// Crash loop (OnVMStarted). After Guest.Boot, a healthy-after-patch VM on a disk other than its
// original boots to the desktop: no event. Any other VM crashes with the fleet's stop code:
// Windows reads Select\Current and that control set's CrashControl and, for CrashDumpEnabled
// 1 (complete: memory + 2 MiB), 2 or 7 (kernel/automatic: memory/3), writes MEMORY.DMP where
// DumpFile says (%SystemRoot%, C:, or a data volume) if the volume has room for the real size,
// plus a minidump in MinidumpDir (also for 3, minidump only); Overwrite=0 keeps an existing dump.
// crash-without-dump writes nothing, and nothing is ever written to an original OS disk (vmrescue
// never boots one during an incident; the hash check is about what vmrescue does). The write
// takes Guest.DumpWritePerGiB. The dump file is dumpfile.Synthesize's header with the stop code,
// plausible parameters and RequiredDumpSpace = the real size, sparse to the real size ×
// DumpScale. The VM stays PowerState/running, as a guest crash loop is to the platform; its boot
// diagnostics show the stop screen, and a serial log with the SAC's BLUESCREEN record only when
// the BCD store has EMS on (as patch sets it). After ResourceHealth.EventDelay a
// VirtualMachineCrashed ResourceAnnotated event (shared/fixtures/events shape) is delivered with
// Event Grid's retries (10 s, 30 s, 1 min, 5 min, scaled; 400/401/403/413 are not retried). One
// crash, dump and event per start: the further turns of the loop are not repeated. A VM
// deallocated or restarted during its boot or dump write ends "interrupted", without a dump.
//
// The VM agent is "Not Ready" after each start (azsim's GuestReportsAgent) until a boot comes up
// healthy; a crash-looping VM never reports Ready.
//
// Not modelled: Resource Health's AvailabilityStatusChanged during the loop; the page file
// (Windows writes the dump there first); Linux guests beyond crash/healthy and events; the agent
// of a fleet VM seeded running before any start (Ready).
package winsim
