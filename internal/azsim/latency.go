package azsim

import (
	"maps"
	"sync"
	"time"
)

// LatencyTable gives each operation's duration at time scale 1: for a long-running operation the
// time from its first request to its completion, for any other request the time to answer it.
// Keys are operation names ("VirtualMachines.BeginDeallocate"); DefaultOpLatency covers any
// operation the table does not name, and the pseudo-operations below cover work that is not one
// request.
type LatencyTable map[string]time.Duration

// Pseudo-operations of the latency table.
const (
	// LatencySnapshotCopy is the background copy of a new incremental snapshot: its
	// CompletionPercent rises linearly from 0 to 100 over this time after the snapshot is created.
	LatencySnapshotCopy = "Snapshots.BackgroundCopy"
	// LatencyRunCommandOverhead is what a managed Run Command adds to the script's own run time:
	// extension handler start, script download, status upload.
	LatencyRunCommandOverhead = "VirtualMachineRunCommands.Overhead"
	// LatencyRead is any read (GET, list) the table does not name.
	LatencyRead = "Read"
	// LatencyWrite is the synchronous part of any write the table does not name.
	LatencyWrite = "Write"
	// LatencyFaultTimeout is how long an injected timeout keeps the client waiting before the
	// 504 GatewayTimeout.
	LatencyFaultTimeout = "Fault.Timeout"
)

// DefaultLatency returns the default table. The figures are typical durations of each operation
// on a small Windows VM with a 127 GiB Premium SSD OS disk in a public Azure region. Azure
// publishes no latency figures for these control-plane operations, so each is an estimate from
// the sources named with it; they set the shape of a run (which steps dominate), not a promise.
//
//   - VirtualMachines.BeginDeallocate 60s, BeginPowerOff 30s, BeginStart 45s: the Azure
//     "States and billing status of Azure Virtual Machines" page describes the transitional states
//     (deallocating, starting, stopping) without durations; tens of seconds to about two minutes
//     is what `az vm deallocate` / `az vm start --verbose` report ("Command ran in ... seconds")
//     in public Azure CLI issues. The middle of that range is used.
//   - VirtualMachines.BeginUpdate / BeginCreateOrUpdate 30s: an OS disk swap is a model update
//     of a deallocated VM (Azure "Change the OS disk used by an Azure VM" procedure); no disk
//     data moves.
//   - VirtualMachines.BeginAttachDetachDataDisks 15s: hot attach of one managed disk; Azure
//     "Attach a managed data disk to a Windows VM" describes it as online, and CSI driver
//     reports (kubernetes-sigs/azuredisk-csi-driver) put attach at 10-30s.
//   - Snapshots.BeginCreateOrUpdate 10s: Azure "Create an incremental snapshot for managed disks":
//     snapshots "can be used immediately after being taken"; the PUT completes in seconds.
//   - Snapshots.BackgroundCopy 120s: the first incremental snapshot of a disk is a full copy made
//     in the background; estimate for a 127 GiB disk with little used data.
//   - Disks.BeginCreateOrUpdate 20s: a disk created from a snapshot (createOption Copy) is
//     usable as soon as the operation ends; data hydrates lazily.
//   - Disks.BeginDelete, Snapshots.BeginDelete 10s; VirtualMachineRunCommands.BeginDelete 15s.
//   - VirtualMachineRunCommands.Overhead 30s: the Run Command extension's start and status
//     reporting on top of the script's run time (Azure "Run scripts in your Windows VM by
//     using managed Run Commands": scripts run through the VM agent; up to 90 minutes).
//   - Tickets.BeginCreate 5s: the support API creates the ticket synchronously behind an LRO.
//   - Read 150ms, Write 300ms: ARM round trip for a GET or the accepted response of a write.
//   - Fault.Timeout 30s: a gateway timeout seen from the client.
func DefaultLatency() LatencyTable {
	return LatencyTable{
		"VirtualMachines.BeginDeallocate":               60 * time.Second,
		"VirtualMachines.BeginPowerOff":                 30 * time.Second,
		"VirtualMachines.BeginStart":                    45 * time.Second,
		"VirtualMachines.BeginUpdate":                   30 * time.Second,
		"VirtualMachines.BeginCreateOrUpdate":           30 * time.Second,
		"VirtualMachines.BeginAttachDetachDataDisks":    15 * time.Second,
		"Snapshots.BeginCreateOrUpdate":                 10 * time.Second,
		LatencySnapshotCopy:                             120 * time.Second,
		"Disks.BeginCreateOrUpdate":                     20 * time.Second,
		"Disks.BeginDelete":                             10 * time.Second,
		"Snapshots.BeginDelete":                         10 * time.Second,
		"VirtualMachineRunCommands.BeginCreateOrUpdate": 0, // the run time is the executor's
		LatencyRunCommandOverhead:                       30 * time.Second,
		"VirtualMachineRunCommands.BeginDelete":         15 * time.Second,
		"Tickets.BeginCreate":                           5 * time.Second,
		LatencyRead:                                     150 * time.Millisecond,
		LatencyWrite:                                    300 * time.Millisecond,
		LatencyFaultTimeout:                             30 * time.Second,
	}
}

// timing applies the time scale to the latency table.
type timing struct {
	mu    sync.RWMutex
	table LatencyTable
	scale float64
}

func newTiming(table LatencyTable, scale float64) *timing {
	if table == nil {
		table = DefaultLatency()
	}
	return &timing{table: maps.Clone(table), scale: scale}
}

// of returns the scaled duration of op; isWrite picks the fallback for an unnamed operation.
func (t *timing) of(op string, fallback string) time.Duration {
	t.mu.RLock()
	defer t.mu.RUnlock()
	d, ok := t.table[op]
	if !ok {
		d = t.table[fallback]
	}
	return time.Duration(float64(d) * t.scale)
}

// scaled scales a duration given at time scale 1.
func (t *timing) scaled(d time.Duration) time.Duration {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return time.Duration(float64(d) * t.scale)
}

// Clock tells the simulator the time. Operation completion, snapshot copy progress and the write
// budget all follow it.
type Clock interface {
	Now() time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// ManualClock is a Clock that moves only when told to. With it, use latencies of zero for the
// LROs a test polls to completion (the SDK's poller waits in real time).
type ManualClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewManualClock starts at t.
func NewManualClock(t time.Time) *ManualClock { return &ManualClock{now: t} }

// Now implements Clock.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
