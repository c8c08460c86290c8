package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/demo"
	"github.com/vmrescue/vmrescue/internal/localhost"
)

func init() { extraCommands["demo"] = demoCmd }

// demoCmd runs one incident end to end on the local stack and prints a report. It exits 1 when
// the incident did not close cleanly, and stops every process it started.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fleetFile := fs.String("fleet", "", "fleet file (JSON); empty uses the default fleet")
	vmName := fs.String("vm", "app-web-01", "the fleet VM that crashes")
	timeScale := fs.Float64("time-scale", demo.DefaultTimeScale, "multiplies simulated Azure latencies and waits")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	logs := fs.String("logs", "", "write the host's and handler's logs to this file (default: discard)")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fleet := azsim.DefaultFleet()
	if *fleetFile != "" {
		f, err := azsim.LoadFleet(*fleetFile)
		if err != nil {
			fmt.Fprintf(stderr, "handler demo: %v\n", err)
			return 1
		}
		fleet = f
	}
	vmID := fleet.VMID(*vmName)
	if vmID == "" {
		fmt.Fprintf(stderr, "handler demo: no VM %q in the fleet\n", *vmName)
		return 2
	}
	var out io.Writer = io.Discard
	if *logs != "" {
		f, err := os.Create(*logs)
		if err != nil {
			fmt.Fprintf(stderr, "handler demo: %v\n", err)
			return 1
		}
		defer f.Close()
		out = f
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	start := time.Now()
	fmt.Fprintln(stderr, "starting Azurite, the Azure simulator and the local Functions host…")
	env, err := demo.Start(ctx, demo.Options{Fleet: fleet, TimeScale: *timeScale, Output: out})
	if err != nil {
		fmt.Fprintf(stderr, "handler demo: %v\n", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintf(stderr, "handler demo: stop: %v\n", err)
		}
	}()
	fmt.Fprintf(stderr, "ready after %.1fs; posting a VirtualMachineCrashed alert for %s\n", time.Since(start).Seconds(), *vmName)

	id, err := env.PostCrash(ctx, vmID, fmt.Sprintf("demo-%d", time.Now().UnixNano()), time.Now().UTC(), "eventgrid")
	if err != nil {
		fmt.Fprintf(stderr, "handler demo: %v\n", err)
		return 1
	}
	progress := &localhost.Progress{Host: env.Stack.Host, Out: stderr, Live: localhost.IsTerminal(stderr), Incident: id}
	pctx, stopProgress := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { progress.Run(pctx); close(done) }()
	_, werr := env.Wait(ctx, id)
	stopProgress()
	<-done

	report, err := env.Report(context.Background(), id)
	if err != nil {
		fmt.Fprintf(stderr, "handler demo: report: %v\n", err)
		return 1
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(report)
	} else {
		report.Print(stdout)
		fmt.Fprintf(stdout, "wall time     %.1fs (with start-up)\n", time.Since(start).Seconds())
	}
	if werr != nil {
		fmt.Fprintf(stderr, "handler demo: %v\n", werr)
		return 1
	}
	if !report.OK() {
		fmt.Fprintln(stderr, "handler demo: the incident did not close cleanly")
		return 1
	}
	return 0
}
