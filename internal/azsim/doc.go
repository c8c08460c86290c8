// Package azsim is vmrescue's simulated Azure: a goroutine-safe state model of one subscription
// (resource groups, VMs, managed disks, snapshots, Resource SKUs, managed Run Commands, boot
// diagnostics, support tickets) behind the Azure SDK's own fake servers (armcompute/v8/fake and
// armsupport/fake). Clients are the real SDK clients with their real pipeline (retry policy,
// bearer-token policy, LRO pollers); only the transport is the simulator.
//
// The stage tests use it in-process; `handler local` serves it over loopback HTTP. Both go through
// the same transport, so the same rules, latencies, faults and call counts apply to both.
//
// # Two ways in
//
// In-process (stage tests):
//
//	sim, err := azsim.New(azsim.DefaultFleet(), azsim.Options{})
//	vms, _ := armcompute.NewVirtualMachinesClient(sim.SubscriptionID(), azsim.Credential(), sim.ComputeClientOptions())
//	tickets, _ := armsupport.NewTicketsClient(sim.SubscriptionID(), azsim.Credential(), sim.SupportClientOptions())
//
// Over HTTP (`handler local`): serve sim.Handler() on 127.0.0.1, and in the handler process build
// every ARM client with azsim.EndpointClientOptions("http://127.0.0.1:PORT") and any
// azcore.TokenCredential (azsim.Credential() is a static one). EndpointClientOptions points the
// ResourceManager cloud endpoint at the simulator and sets
// policy.ClientOptions.InsecureAllowCredentialWithHTTP (azcore >= v1.12; present in v1.24.0),
// without which the SDK's bearer-token policy refuses to send a token over plain http.
//
// # Exported API
//
//	func New(fleet *Fleet, opts Options) (*Sim, error)
//	type Options struct {
//	    TimeScale   float64            // multiplies every latency; 0 = no waiting (tests)
//	    Latency     LatencyTable       // nil = DefaultLatency()
//	    Faults      FaultConfig        // Rate, Seed, Kinds: deterministic injected faults
//	    WriteBudget WriteBudget        // ARM writes and deletes per window per subscription; 0 = unlimited
//	    Executor    RunCommandExecutor // nil = RecordingExecutor (records, returns configured output)
//	    Clock       Clock              // nil = wall clock; *ManualClock in tests
//	    PublicURL   string             // base URL of Handler(), for boot diagnostics URIs
//	    ContentFor  func(VMSpec) Content // content of each seeded original OS disk; nil = Files
//	    OnVMStarted func(vmID string)  // called (in a goroutine) when a Start completes
//	    GuestReportsAgent bool         // a started fleet VM's agent is Not Ready until SetAgentReady
//	    StrictSnapshotCopy bool        // refuse a disk from an incremental snapshot below 100%
//	    MinPollInterval time.Duration  // shortest Retry-After while an LRO runs (default 5ms)
//	    Logger      *slog.Logger
//	}
//	func (s *Sim) Fleet() *Fleet
//	func (s *Sim) SubscriptionID() string
//	func (s *Sim) Location() string
//	func (s *Sim) State() *State
//	func (s *Sim) ClientOptions() *arm.ClientOptions        // compute + support, one transport
//	func (s *Sim) ComputeClientOptions() *arm.ClientOptions
//	func (s *Sim) SupportClientOptions() *arm.ClientOptions
//	func (s *Sim) Transport() policy.Transporter
//	func (s *Sim) Handler() http.Handler                    // ARM routes + /azsim/bootdiag/...
//	func (s *Sim) Calls() map[string]int                    // "VirtualMachines.BeginDeallocate" -> n
//	func (s *Sim) CallCount(op string) int
//	func (s *Sim) CallLog() []Call                          // every request, with correlation id
//	func (s *Sim) ResetCalls()
//	func (s *Sim) FaultLog() []FaultEvent
//	func Credential() azcore.TokenCredential
//	func EndpointClientOptions(endpoint string) *arm.ClientOptions
//
// Operation names are the SDK client and method without "Client": "VirtualMachines.Get",
// "VirtualMachines.BeginDeallocate", "VirtualMachines.BeginUpdate",
// "VirtualMachines.BeginCreateOrUpdate", "VirtualMachines.BeginAttachDetachDataDisks",
// "VirtualMachines.RetrieveBootDiagnosticsData", "Disks.BeginCreateOrUpdate", "Disks.BeginDelete",
// "Disks.NewListByResourceGroupPager", "Snapshots.BeginCreateOrUpdate", "Snapshots.Get",
// "ResourceSKUs.NewListPager", "VirtualMachineRunCommands.BeginCreateOrUpdate",
// "VirtualMachineRunCommands.GetByVirtualMachine", "Tickets.CheckNameAvailability",
// "Tickets.BeginCreate", "ProblemClassifications.NewListPager", ... A Begin* LRO counts once; its
// polls are not calls (they are in CallLog with Poll set). Each SDK retry of a request counts.
//
// State (all methods are safe for concurrent use; getters return copies):
//
//	func (st *State) VM(id string) (VM, bool)        // ids compare case-insensitively
//	func (st *State) VMs() []VM
//	func (st *State) Disk(id string) (Disk, bool)
//	func (st *State) Disks() []Disk
//	func (st *State) Snapshot(id string) (Snapshot, bool) // CompletionPercent computed now
//	func (st *State) Snapshots() []Snapshot
//	func (st *State) Tickets() []Ticket
//	func (st *State) RunCommands(vmID string) []RunCommand
//	func (st *State) DiskContent(diskID string) (Content, bool) // the live content (not a copy)
//	func (st *State) SetDiskContent(id string, c Content) error  // re-baselines an original
//	func (st *State) ChangedOriginalDisks() []string  // original OS disks changed or gone
//	func (st *State) Violations() []Violation         // safety rule breaches, e.g. delete of an original
//	func (st *State) Operations() []Operation        // every LRO, Run Command execution and snapshot copy, with its simulated span
//	func (st *State) Tagged(tag string) []string      // ids of VMs/disks/snapshots carrying the tag
//	func (st *State) SetPowerState(vmID string, p PowerState) error
//	func (st *State) SetAgentReady(vmID, osDiskID string) error // the guest booted from it; its agent reports Ready
//	func (st *State) SetBootDiagnostics(vmID string, screenshot, serialLog []byte) error
//	func (st *State) SetVMTags(vmID string, tags map[string]string) error
//	func (st *State) ResourceID(kind, resourceGroup, name string) string // kind: virtualMachines|disks|snapshots
//
// Also exported: VM, Disk, Snapshot, DataDiskRef, RunCommand, RunCommandParam, Ticket, Violation
// (+ Violation* kinds), PowerState (+ Power* values), Provisioning* states, Code* ARM error codes,
// VMSize, Sizes, LookupSize, SizeForMemory, SupportCatalog, SupportService,
// ProblemClassification, WindowsVMServiceDisplayName, Files/NewFiles, ManualClock/NewManualClock,
// LatencyTable/DefaultLatency and the Latency* pseudo-operations, FaultKind (+ Fault* kinds,
// AllFaults), FaultEvent, WriteBudget, Call.
//
// Disk content: each disk and snapshot holds a Content (interface{ Clone() Content; Hash() string }).
// A snapshot or a disk made from a source holds source.Clone() taken at creation, so nothing done
// to a copy reaches the original. Files is the default implementation (path -> bytes). Original
// OS disks remember their Hash() at seeding; ChangedOriginalDisks compares.
//
// Run Command: VirtualMachineRunCommands.BeginCreateOrUpdate validates (VM running, one run command
// executing per VM) and calls Options.Executor.Run in a goroutine with a RunCommandRequest (script,
// parameters, protected parameters, output/error blob URIs, the VM and its attached data disks with
// their live Content). The LRO completes when Run returns and its simulated duration has passed;
// GetByVirtualMachine with $expand=instanceView reports executionState, exitCode, start/end time
// and the last 4 KB of output and error, as Azure does. When OutputBlobURI/ErrorBlobURI are set
// the simulator appends the full output there through azblob (append blob), as the Run Command
// agent would.
//
//	type RunCommandExecutor interface {
//	    Run(ctx context.Context, req RunCommandRequest) RunCommandResult
//	}
//	type RunCommandRequest struct { VM VM; RunCommand RunCommand; DataDisks []AttachedDisk }
//	func (r RunCommandRequest) Param(name string) (string, bool) // parameters and protected ones
//	type AttachedDisk struct { LUN int32; DiskID string; Content Content }
//	type RunCommandResult struct { ExitCode int32; Output, Error string; Duration time.Duration }
//	type RunCommandFunc func(ctx, RunCommandRequest) RunCommandResult // adapter
//	type RecordingExecutor struct{ Result RunCommandResult } // Requests(), SetResult()
//
// A Run Command PUT on a rescue VM is refused with 409 Conflict while another runs on that VM; it
// does not block other operations on the VM (attach/detach by other incidents go on).
//
// Fleet (JSON, see fleets/default.json; DefaultFleet() returns it):
//
//	func DefaultFleet() *Fleet
//	func LoadFleet(path string) (*Fleet, error)
//	func ParseFleet(data []byte) (*Fleet, error)
//	func (f *Fleet) VMID(name string) string          // id of a fleet VM or rescue VM by name
//
// ARM rules enforced (status, code as ARM sends them; body {"error":{"code","message","target"}}):
//   - OS disk swap (VM PUT or PATCH changing storageProfile.osDisk.managedDisk.id): VM not
//     deallocated -> 409 OperationNotAllowed; OS type or hyperVGeneration of the new disk differs ->
//     409 PropertyChangeNotAllowed; zone differs -> 400 BadRequest; disk attached elsewhere -> 409
//     ConflictingUserInput; VM with Azure Disk Encryption -> 409
//     OSDiskSwapNotSupportedForVMsUsingDiskEncryption.
//   - Attach/detach: above the size's MaxDataDiskCount -> 409 OperationNotAllowed; LUN in use ->
//     400 InvalidParameter; LUN outside 0..63 -> 400 InvalidParameter; disk attached to another VM
//     -> 409 ConflictingUserInput; zone differs -> 400 BadRequest; unknown disk -> 404 NotFound.
//   - Disk delete while attached -> 409 OperationNotAllowed. Deleting or rewriting an original OS
//     disk -> 409 OperationNotAllowed and a recorded Violation.
//   - With Options.StrictSnapshotCopy, a disk from an incremental snapshot whose CompletionPercent
//     < 100 -> 409 OperationNotAllowed (off by default: Azure documents incremental snapshots of
//     standard disks as usable at once; the pipeline waits for 100% anyway).
//   - Disk or snapshot PUT on an existing name with other creationData -> 409
//     PropertyChangeNotAllowed; with the same creationData it is an update (tags).
//   - DELETE of a disk, snapshot or run command that does not exist succeeds at once (ARM's 204).
//   - Any write on a resource with an operation in progress -> 409 Conflict ("The request failed
//     due to conflict with a concurrent request...").
//   - Run Command on a VM that is not running -> 409 OperationNotAllowed; while another runs on the
//     same VM -> 409 Conflict.
//   - Missing resources -> 404 ResourceNotFound; missing resource group -> 404 ResourceGroupNotFound.
//
// LROs: the fake server answers the first request with its PollerResponder (one "InProgress"
// response, then the terminal result) and keeps the result. The simulator turns that first answer
// into ARM's: 202/201/200 with an Azure-AsyncOperation header (and a Location header for POST and
// DELETE) naming an operation of its own at
// /subscriptions/{id}/providers/Microsoft.Compute/locations/{region}/operations/{opId}, with
// Retry-After-Ms set to the time left. So the SDK's real Azure-AsyncOperation poller runs, and
// concurrent operations on one resource (two incidents attaching to one rescue VM) are polled
// apart, in-process and over HTTP alike (the fake poller protocol keys polls by resource path,
// which cannot tell them apart). Status polls answer {"status":"InProgress"} until the operation
// is due, then "Succeeded"; the poller's final GET (Location URL for POST, the resource for
// PUT/PATCH) returns the fake's terminal result or the resource. An operation that needs no work
// (deallocating a deallocated VM, deleting what is gone) completes in the first response.
// provisioningState is "Updating"/"Creating"/"Deleting" while an operation runs; power state goes
// through "deallocating", "starting" and "stopping"; operations complete when due even if nobody
// polls. Snapshot CompletionPercent rises linearly over the "Snapshots.BackgroundCopy" latency
// after the snapshot is created. Polls and, in-process, the poller's final GET are in CallLog
// with Poll set and are not counted in Calls (over HTTP the final GET of a PUT is counted as a Get).
//
// Faults: with FaultConfig{Rate: 0.1, Seed: 7}, each request (not polls) draws from a hash of
// (seed, operation, path, n-th call of that operation on that path), so the same run gives the same
// faults whatever the interleaving. Kinds: 429 (Retry-After), 500, 503, timeout (the request IS
// applied, then the response is lost: 504 GatewayTimeout after a delay), 409 Conflict (writes only).
// WriteBudget{Writes: 1200, Deletes: 15000, Window: time.Hour} answers writes (PUT, PATCH, POST)
// and deletes beyond their limits with 429 SubscriptionRequestsThrottled and Retry-After; as ARM
// does, it counts a DELETE against the deletes only. Retry-After-Ms and Retry-After carry scaled delays.
package azsim
