package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/bench"
)

func init() { extraCommands["bench"] = benchCmd }

const benchUsage = `usage: handler bench <scenario>[,<scenario>...|all] [flags]

scenarios: storm, chaos, capacity, critical-path, overhead
`

// benchCmd runs benchmark scenarios on the local stack and writes docs/benchmarks.md and .json.
// It exits 1 when a scenario misses a target or breaks an invariant.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, benchUsage)
		return 2
	}
	names := strings.Split(args[0], ",")
	if args[0] == "all" {
		names = bench.Scenarios
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.Options
	var s bench.Sizes
	fs.Float64Var(&o.TimeScale, "time-scale", bench.DefaultTimeScale, "multiplies simulated Azure latencies and waits")
	fs.Int64Var(&o.Seed, "seed", 1, "seeds event order, faults and kills")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "bound of each scenario")
	logs := fs.String("logs", "", "write the host's and handler's logs to this file (default: discard)")
	out := fs.String("out", "docs/benchmarks", "write <out>.md and <out>.json; empty writes nothing")
	fs.IntVar(&s.Storm.Events, "storm-events", 5000, "storm: alerts posted")
	fs.IntVar(&s.Storm.VMs, "storm-vms", 500, "storm: distinct VMs")
	fs.IntVar(&s.Storm.Concurrency, "storm-concurrency", 32, "storm: POSTs in flight")
	fs.IntVar(&s.Chaos.VMs, "chaos-vms", 40, "chaos: crashing VMs")
	fs.Float64Var(&s.Chaos.FaultRate, "chaos-faults", 0.10, "chaos: ARM fault rate")
	fs.IntVar(&s.Chaos.Kills, "chaos-kills", 20, "chaos: SIGKILLs of the handler")
	fs.DurationVar(&s.Chaos.KillUptime, "chaos-kill-uptime", 3*time.Second, "chaos: the longest the handler runs before a kill (each at a random point up to it)")
	fs.IntVar(&s.Capacity.VMs, "capacity-vms", 200, "capacity: crashing VMs")
	fs.IntVar(&s.Capacity.RescueVMs, "capacity-rescue", 4, "capacity: rescue VMs (8 LUNs each)")
	fs.IntVar(&s.Capacity.WritesPerHour, "capacity-writes", 1200, "capacity: ARM writes per hour per subscription")
	fs.IntVar(&s.Capacity.DeletesPerHour, "capacity-deletes", 15000, "capacity: ARM deletes per hour per subscription (ARM counts them apart from writes)")
	fs.Float64Var(&s.Capacity.TimeScale, "capacity-time-scale", 0.05, "capacity: time scale of this scenario")
	fs.Float64Var(&s.Critical.TimeScale, "critical-time-scale", bench.DefaultCriticalTimeScale, "critical-path: time scale of this scenario")
	fs.IntVar(&s.Overhead.Invocations, "overhead-invocations", 2000, "overhead: intake invocations measured")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *logs != "" {
		f, err := os.Create(*logs)
		if err != nil {
			fmt.Fprintf(stderr, "handler bench: %v\n", err)
			return 1
		}
		defer f.Close()
		o.Output = f
	}
	o.Progress = stderr
	rep := bench.Report{Command: "handler bench " + strings.Join(args, " "), Machine: bench.ThisMachine(), Date: time.Now()}
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "out" && f.Name != "logs" && f.Value.String() != f.DefValue {
			rep.Notes = append(rep.Notes, fmt.Sprintf("Scaled for this machine: --%s=%s (default %s).", f.Name, f.Value, f.DefValue))
		}
	})
	rep.Results = bench.Run(ctx, names, o, s)
	if *out != "" {
		if err := writeReport(rep, *out); err != nil {
			fmt.Fprintf(stderr, "handler bench: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "wrote %s.md and %s.json\n", *out, *out)
	}
	_ = rep.WriteMarkdown(stdout)
	for _, r := range rep.Results {
		if !r.Pass {
			return 1
		}
	}
	return 0
}

func writeReport(rep bench.Report, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	for _, w := range []struct {
		ext   string
		write func(io.Writer) error
	}{{".md", rep.WriteMarkdown}, {".json", rep.WriteJSON}} {
		f, err := os.Create(out + w.ext)
		if err != nil {
			return err
		}
		err = w.write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s%s: %w", out, w.ext, err)
		}
	}
	return nil
}
