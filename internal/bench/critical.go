package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/demo"
	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/pipeline"
)

// DefaultCriticalTimeScale is the critical-path scenario's time scale. The scenario asks for one
// where the simulated operations dominate: at 0.05 the shortest simulated request (a 150 ms
// read) still takes 7.5 ms, above a local Azurite round trip, and the incident's path is about
// 48 s, so the handler's fixed costs (storage round trips, hand-offs) show as what they are, a
// few per cent. At a smaller scale they would be measured against a path they do not scale with.
const DefaultCriticalTimeScale = 0.05

// CriticalOptions size the critical-path scenario.
type CriticalOptions struct {
	// TimeScale of this scenario (default DefaultCriticalTimeScale).
	TimeScale float64
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat, fixed at 100 by the Linux ABI.
const userHZ = 100

// CriticalPath runs one incident alone and compares its end-to-end time with the scaled sum of
// the simulated operations on its critical path (demo.Report.CriticalPath). It splits the rest
// (demo.Report.Overhead) and measures the handler's own share: its invocation time not spent
// waiting on simulated Azure, and the CPU time of the handler process.
func CriticalPath(ctx context.Context, o Options, co CriticalOptions) (Result, error) {
	if co.TimeScale <= 0 {
		co.TimeScale = DefaultCriticalTimeScale
	}
	o.TimeScale = co.TimeScale
	res := Result{Scenario: "critical-path", Params: map[string]any{"vms": 1, "timeScale": o.scale()}}
	fleet, err := makeFleet(1, 1, wideRescue)
	if err != nil {
		return res, err
	}
	env, err := start(ctx, o, fleet, noFaults, nil)
	if err != nil {
		return res, err
	}
	defer env.Stop()
	t0 := time.Now()
	// A deployed handler has its rescue agent binary in storage before incidents come: it
	// uploads it when it starts. The incident starts once that is done, so that the one-off
	// upload of tens of megabytes neither sits on its path nor holds up Azurite under it.
	if err := waitAgentUploaded(ctx, env); err != nil {
		return res, err
	}
	pid := 0
	if c := env.Stack.Host.Child(); c != nil {
		pid = c.PID()
	}
	cpu0, cpuErr := procCPU(pid)
	vmID := fleet.VMID(fleet.VMs[0].Name)
	id, err := env.PostCrash(ctx, vmID, "critical-00001", time.Now().UTC(), hostproto.SchemaEventGrid)
	if err != nil {
		return res, err
	}
	if _, err := env.Wait(ctx, id); err != nil {
		return res, err
	}
	cpu1, err := procCPU(pid)
	cpuErr = errors.Join(cpuErr, err)
	if err := waitIdle(ctx, env.Stack.Host); err != nil {
		return res, err
	}
	rep, err := env.Report(context.Background(), id)
	if err != nil {
		return res, err
	}
	res.figure("end to end", rep.Elapsed, "s")
	res.figure("critical path (scaled simulated operations)", rep.CriticalPath, "s")
	if rep.CriticalPath > 0 {
		res.target("end to end / critical path", rep.Elapsed/rep.CriticalPath, "", true, 1.05, "demo.Report.CriticalPathRatio")
		ov := rep.Overhead
		res.figure("time not explained by simulated operations", rep.Elapsed-rep.CriticalPath, "s")
		res.figure("  between invocations (queue hand-offs, host dispatch)", ov.HandOffSeconds, "s")
		res.figure("  noticing finished operations (poll granularity)", ov.NoticeSeconds, "s")
		res.figure("  rest of invocation time (handler work, storage, local HTTP)", ov.InStageSeconds, "s")
		if per, err := appendCost(ctx, env.Stack.StorageConnectionString, rep.Records); err == nil {
			res.figure(fmt.Sprintf("    of which audit trail writes (estimate: %d records x %.1f ms, the median append on this Azurite)",
				rep.Records, float64(per)/float64(time.Millisecond)), (time.Duration(rep.Records) * per).Seconds(), "s")
		}
		own := ov.NoticeSeconds + ov.InStageSeconds
		res.figure("handler's own share of end to end (noticing + rest of invocation time)", own/rep.Elapsed, "")
	}
	if cpuErr == nil && rep.Elapsed > 0 {
		res.figure("handler process CPU time during the incident", (cpu1 - cpu0).Seconds(), "s")
		res.figure("handler CPU share of end to end", (cpu1-cpu0).Seconds()/rep.Elapsed, "")
	}
	res.check("incident closed cleanly", rep.OK(), fmt.Sprintf("state %s, outcome %s, left behind %v", rep.State, rep.Outcome, rep.LeftBehind))
	res.Notes = append(res.Notes,
		"End to end runs from the alert's invocation to the end of the invocation that closed the incident; a message delivered after that (the scheduled harvest that the crash alert brought forward) is absorbed without work and is not counted. "+
			"The critical path is the union of the incident's simulated ARM request latencies, its long-running operations, Run Command executions and snapshot copy, and the wait from the VM's start to the reproduced crash's alert, at the time scale. "+
			"The handler's own share is the time inside its invocations not covered by a simulated operation: its CPU, its storage round trips (Azurite) and its polls; the hand-offs between invocations are the local host's.",
		fmt.Sprintf("Time scale %g: simulated operations dominate (a 150 ms ARM read takes %.1f ms, above a local storage round trip) and the run stays about a minute.", o.scale(), 150*o.scale()))
	res.finish(t0)
	return res, nil
}

// appendCost measures one audit append on the run's Azurite: the median of n appends to a
// scratch incident, in a container of its own that is removed afterwards.
func appendCost(ctx context.Context, connectionString string, n int) (time.Duration, error) {
	blobs, err := azblob.NewClientFromConnectionString(connectionString, nil)
	if err != nil {
		return 0, err
	}
	container := "bench-append-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	trail := audit.New(blobs, container)
	if err := trail.EnsureContainer(ctx); err != nil {
		return 0, err
	}
	defer func() { _, _ = blobs.DeleteContainer(context.WithoutCancel(ctx), container, nil) }()
	id := incident.NewID(time.Now())
	took := make([]float64, 0, n)
	for range max(n, 1) {
		t := time.Now()
		if _, err := trail.Append(ctx, id, audit.Entry{VMResourceID: "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/bench",
			Stage: string(incident.StageSnapshot), Event: incident.EventSucceeded, Detail: map[string]any{"operation": "calibration"}}); err != nil {
			return 0, err
		}
		took = append(took, float64(time.Since(t)))
	}
	slices.Sort(took)
	return time.Duration(percentile(took, 50)), nil
}

// agentUploadWait bounds the wait for the handler's start-up upload of the rescue agent.
const agentUploadWait = 2 * time.Minute

// waitAgentUploaded waits until the tools container holds a rescue agent binary, which the
// handler uploads when it starts (pipeline.Pipeline.PrepareAgent). A blob is listed only once
// its upload is committed.
func waitAgentUploaded(ctx context.Context, env *demo.Env) error {
	ctx, cancel := context.WithTimeout(ctx, agentUploadWait)
	defer cancel()
	blobs, err := azblob.NewClientFromConnectionString(env.Stack.StorageConnectionString, nil)
	if err != nil {
		return err
	}
	container := settingDefault(config.ToolsContainer)
	prefix, _, _ := strings.Cut(pipeline.AgentBlobName("x"), "x")
	for {
		page, err := blobs.NewListBlobsFlatPager(container, &azblob.ListBlobsFlatOptions{Prefix: &prefix}).NextPage(ctx)
		if err == nil && len(page.Segment.BlobItems) > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the handler did not upload the rescue agent to %s/%s: %w", container, prefix, ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// settingDefault is the default value of a handler setting.
func settingDefault(name string) string {
	for _, s := range config.Settings {
		if s.Name == name {
			return s.Default
		}
	}
	return ""
}

// procCPU reads a process's user and system CPU time from /proc/<pid>/stat (Linux).
func procCPU(pid int) (time.Duration, error) {
	if pid <= 0 {
		return 0, errors.New("no handler process")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The fields after the command name (which may hold spaces) start at the state, field 3;
	// utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}
