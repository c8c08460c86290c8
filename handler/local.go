package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/localhost"
)

func init() { extraCommands["local"] = localCmd }

// localStopTimeout bounds the stop of everything `handler local` started.
const localStopTimeout = 45 * time.Second

const localUsage = `usage: handler local [flags]

Plays the Azure Functions host on this machine: starts Azurite and the Azure simulator, runs
"handler serve" as the custom handler child, and serves the functions on 127.0.0.1.

flags:
`

// localCmd runs `handler local` until SIGINT or SIGTERM.
func localCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, localUsage); fs.PrintDefaults() }
	fleetFile := fs.String("fleet", "", "fleet file (JSON); empty uses the default fleet")
	port := fs.Int("port", 7071, "port of the Functions host on 127.0.0.1 (0 picks a free one)")
	handlerPort := fs.Int("handler-port", 0, "fixed FUNCTIONS_CUSTOMHANDLER_PORT of the handler child (0 picks a free one)")
	timeScale := fs.Float64("time-scale", 1, "multiplies the simulated Azure latencies, scheduled waits and timer schedules (0.05: twenty times faster; 0: simulator without latency)")
	faults := fs.Float64("faults", 0, "rate of injected ARM faults, 0..1 (429, 500, 503, timeouts, conflicts)")
	seed := fs.Int64("seed", 1, "seed of the injected faults")
	appDir := fs.String("app", "", "app folder holding host.json and the function folders (default: found from the working directory)")
	handlerPath := fs.String("handler", "", "custom handler executable (default: this executable)")
	maxDelivery := fs.Int("max-delivery-count", 0, "deliveries before a message is dead-lettered to failed (default 10)")
	noTimers := fs.Bool("no-timers", false, "do not run timer functions on their schedule (POST /admin/functions/<name> still runs them)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "handler local: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *timeScale < 0 || *faults < 0 || *faults > 1 || *port < 0 || *port > 65535 || *handlerPort < 0 || *handlerPort > 65535 {
		fmt.Fprintln(stderr, "handler local: --time-scale must be >= 0, --faults in 0..1, ports in 0..65535")
		return 2
	}

	fleet := azsim.DefaultFleet()
	if *fleetFile != "" {
		f, err := azsim.LoadFleet(*fleetFile)
		if err != nil {
			fmt.Fprintf(stderr, "handler local: %v\n", err)
			return 1
		}
		fleet = f
	}
	dir := *appDir
	if dir == "" {
		wd, err := os.Getwd()
		if err == nil {
			dir, err = localhost.FindAppDir(wd)
		}
		if err != nil {
			// A packaged app keeps host.json beside the executable.
			exe, exeErr := os.Executable()
			if exeErr != nil {
				fmt.Fprintf(stderr, "handler local: %v\n", err)
				return 1
			}
			if dir, err = localhost.FindAppDir(filepath.Dir(exe)); err != nil {
				fmt.Fprintf(stderr, "handler local: %v\n", err)
				return 1
			}
		}
	}

	hostScale := *timeScale
	st, err := localhost.StartStack(ctx, localhost.StackOptions{
		Host: localhost.Options{
			AppDir: dir, Addr: fmt.Sprintf("127.0.0.1:%d", *port), HandlerPath: *handlerPath,
			HandlerPort: *handlerPort, TimeScale: hostScale, MaxDeliveryCount: *maxDelivery,
			DisableTimers: *noTimers, Output: stderr,
		},
		Fleet:           fleet,
		Sim:             azsim.Options{TimeScale: *timeScale, Faults: azsim.FaultConfig{Rate: *faults, Seed: *seed}},
		InstallAzurite:  true,
		SimulateWindows: true,
	})
	if err != nil {
		fmt.Fprintf(stderr, "handler local: %v\n", err)
		return 1
	}
	fmt.Fprint(stdout, st.Describe())
	fmt.Fprintln(stdout, "ready; Ctrl-C stops everything")
	<-ctx.Done()
	fmt.Fprintln(stderr, "handler local: stopping")
	sctx, cancel := context.WithTimeout(context.Background(), localStopTimeout)
	defer cancel()
	if err := st.Stop(sctx); err != nil {
		fmt.Fprintf(stderr, "handler local: stop: %v\n", err)
		return 1
	}
	return 0
}
