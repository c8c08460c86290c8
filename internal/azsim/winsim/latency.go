package winsim

import (
	"context"
	"maps"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/azsim"
)

// Pseudo-operations of the world's latency table, next to azsim's. Like azsim's, each figure is
// a duration at time scale 1, multiplied by azsim.Options.TimeScale.
const (
	// LatencyAgentDownload is the bootstrap's first download of the agent binary on a rescue VM
	// and its Get-FileHash; later runs find it cached under its SHA-256.
	LatencyAgentDownload = "Agent.Download"
	// LatencyAgentPrefix + a command ("Agent.inspect", "Agent.patch", "Agent.harvest",
	// "Agent.restore") is the agent's own run time for that command.
	LatencyAgentPrefix = "Agent."
	// LatencyHarvestPerGiB is what harvest adds per GiB of dump uploaded (the real size, before
	// DumpScale).
	LatencyHarvestPerGiB = "Agent.HarvestPerGiB"
	// LatencyBoot is a Windows boot: from the end of Start to the desktop, or to the stop error
	// of a VM that crashes at boot.
	LatencyBoot = "Guest.Boot"
	// LatencyDumpWritePerGiB is the time Windows takes to write each GiB of a memory dump.
	LatencyDumpWritePerGiB = "Guest.DumpWritePerGiB"
	// LatencyEventDelay is the time from the crash to the VirtualMachineCrashed event reaching the
	// webhook.
	LatencyEventDelay = "ResourceHealth.EventDelay"
)

// DefaultLatency returns the world's default figures. Sources (the README's simulator section
// has the same table):
//
//   - Agent.Download 5s: a ~30 MB binary read from Blob Storage in the same region, at the tens
//     of MB/s one Invoke-WebRequest gets, plus Get-FileHash. Estimate.
//   - Agent.inspect 20s, Agent.patch 30s, Agent.restore 20s, Agent.harvest 10s: bringing the
//     disk online, `reg load`/`reg unload` of a SYSTEM hive of tens of MB, bcdedit on the store,
//     backups; estimates in line with the minutes that Azure's `az vm repair run` reports for
//     whole repair scripts.
//   - Agent.HarvestPerGiB 10s: the copy of a 127 GiB OS disk is a P10 Premium SSD, whose
//     published throughput is 100 MB/s (Azure "Managed disk types", Premium SSD sizes); reading
//     the dump is the bottleneck, not the upload.
//   - Guest.Boot 60s: a Windows Server boot on a D-series VM, from the platform's "running" to the
//     point where a boot-time stop error happens or the desktop appears. Estimate.
//   - Guest.DumpWritePerGiB 10s: the dump is written at the OS disk's throughput (P10, 100 MB/s).
//   - ResourceHealth.EventDelay 60s: Azure publishes no figure; the Health Resources system
//     topic ("Project Flash") is described as near-real-time. Estimate.
func DefaultLatency() azsim.LatencyTable {
	return azsim.LatencyTable{
		LatencyAgentDownload:                              5 * time.Second,
		LatencyAgentPrefix + string(agent.CommandInspect): 20 * time.Second,
		LatencyAgentPrefix + string(agent.CommandPatch):   30 * time.Second,
		LatencyAgentPrefix + string(agent.CommandHarvest): 10 * time.Second,
		LatencyAgentPrefix + string(agent.CommandRestore): 20 * time.Second,
		LatencyHarvestPerGiB:                              10 * time.Second,
		LatencyBoot:                                       60 * time.Second,
		LatencyDumpWritePerGiB:                            10 * time.Second,
		LatencyEventDelay:                                 60 * time.Second,
	}
}

// eventRetries is Event Grid's retry schedule for a webhook that fails, first steps (Azure
// "Event Grid message delivery and retry": 10 s, 30 s, 1 min, 5 min, 10 min, ... up to 24 h).
// The simulator stops after these, scaled like every other figure.
var eventRetries = []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute}

// minRetryWait keeps a retry at time scale 0 from spinning.
const minRetryWait = 20 * time.Millisecond

// timing applies the time scale to the world's table.
type timing struct {
	table azsim.LatencyTable
	scale float64
}

func newTiming(overrides azsim.LatencyTable, scale float64) timing {
	t := DefaultLatency()
	maps.Copy(t, overrides)
	return timing{table: t, scale: scale}
}

// base is an operation's duration at time scale 1 (0 when the table does not name it).
func (t timing) base(op string) time.Duration { return t.table[op] }

// perGiB is op's per-GiB figure applied to n bytes, at time scale 1.
func (t timing) perGiB(op string, n int64) time.Duration {
	return time.Duration(float64(t.table[op]) * float64(n) / (1 << 30))
}

// scaled applies the time scale.
func (t timing) scaled(d time.Duration) time.Duration { return time.Duration(float64(d) * t.scale) }

// sleep waits d (already scaled) or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
