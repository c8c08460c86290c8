package localhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azsim/winsim"
	"github.com/vmrescue/vmrescue/internal/azurite"
	"github.com/vmrescue/vmrescue/internal/config"
)

// npmInstallTimeout bounds the one-off npm install of Azurite.
const npmInstallTimeout = 5 * time.Minute

// StackOptions configures StartStack.
type StackOptions struct {
	// Host configures the host; its Env is extended with the stack's settings (FleetSettings,
	// storage, ARM endpoint).
	Host Options
	// Fleet seeds the simulator; nil is azsim.DefaultFleet().
	Fleet *azsim.Fleet
	// Sim configures the simulator. TimeScale defaults to Host.TimeScale; PublicURL and Logger
	// are set by StartStack.
	Sim azsim.Options
	// ConfigureSim, when set, adjusts the simulator's options just before it is made; st.Host is
	// set by then, so hooks such as OnVMStarted can deliver events through st.Host.DeliverEvents.
	ConfigureSim func(opts *azsim.Options, st *Stack)
	// AzuriteURL names a running Azurite blob service (http://127.0.0.1:PORT/devstoreaccount1) to
	// use instead of starting one.
	AzuriteURL string
	// InstallAzurite runs npm to install Azurite into .tools/azurite when it is missing.
	InstallAzurite bool
	// SimulateWindows gives every simulated disk a fake Windows, runs the real rescue agent in
	// Run Command, and makes started VMs crash again, posting VirtualMachineCrashed to the host's
	// Event Grid webhook as Resource Health does (winsim). Without it, Run Command only records.
	SimulateWindows bool
}

// Stack is everything `handler local` runs: Azurite, the Azure simulator on loopback HTTP, and
// the host with its handler child.
type Stack struct {
	Host       *Host
	Sim        *azsim.Sim
	SimURL     string // the simulator's ARM endpoint, http://127.0.0.1:PORT
	AzuriteURL string // the blob service URL
	// StorageConnectionString is the handler's VMRESCUE_STORAGE_CONNECTION_STRING.
	StorageConnectionString string

	// World is the simulated Windows side when SimulateWindows is set.
	World *winsim.World

	azurite *azurite.Server
	simSrv  *http.Server
	simLn   net.Listener
}

// StartStack starts Azurite (unless AzuriteURL is given), the simulator and the host, and waits
// until the handler is ready. On error everything started is stopped again.
func StartStack(ctx context.Context, opts StackOptions) (st *Stack, err error) {
	st = &Stack{}
	defer func() {
		if err != nil {
			_ = st.Stop(context.Background())
		}
	}()
	out := opts.Host.Output
	if out == nil {
		out = os.Stderr
	}
	fleet := opts.Fleet
	if fleet == nil {
		fleet = azsim.DefaultFleet()
	}

	st.AzuriteURL = opts.AzuriteURL
	if st.AzuriteURL == "" {
		if opts.InstallAzurite {
			if err := EnsureAzurite(ctx, out); err != nil {
				return st, err
			}
		}
		srv, err := azurite.StartOnDisk(ctx) // a long local run stores gigabytes of dumps
		if err != nil {
			return st, fmt.Errorf("azurite: %w", err)
		}
		st.azurite, st.AzuriteURL = srv, srv.BlobURL
	}
	st.StorageConnectionString = azurite.ConnectionString(st.AzuriteURL)

	st.simLn, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return st, fmt.Errorf("simulator: %w", err)
	}
	st.SimURL = "http://" + st.simLn.Addr().String()

	simScale := opts.Sim.TimeScale
	if simScale == 0 && opts.Host.TimeScale > 0 {
		simScale = opts.Host.TimeScale
	}
	hopts := opts.Host
	hopts.Env = append(FleetSettings(fleet, os.LookupEnv), hopts.Env...)
	hopts.Env = append(ScaleSettings(simScale, os.LookupEnv), hopts.Env...)
	hopts.Env = append(hopts.Env,
		config.StorageConnection+"="+st.StorageConnectionString,
		config.ARMEndpoint+"="+st.SimURL,
	)
	st.Host, err = New(hopts)
	if err != nil {
		return st, err
	}

	simOpts := opts.Sim
	simOpts.TimeScale = simScale
	simOpts.PublicURL = st.SimURL
	if simOpts.Logger == nil {
		simOpts.Logger = slog.New(slog.NewTextHandler(&lineWriter{w: out, prefix: "[azsim] "},
			&slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if opts.SimulateWindows {
		webhook := st.Host.URL() + "/runtime/webhooks/eventgrid?functionName=HealthAlert"
		st.World = winsim.New(winsim.Options{PostEvent: winsim.PostTo(webhook, nil, "eventgrid"), Logger: simOpts.Logger})
		st.World.Install(&simOpts)
	}
	if opts.ConfigureSim != nil {
		opts.ConfigureSim(&simOpts, st)
	}
	st.Sim, err = azsim.New(fleet, simOpts)
	if err != nil {
		return st, err
	}
	if st.World != nil {
		if err := st.World.Bind(st.Sim); err != nil {
			return st, fmt.Errorf("simulated Windows: %w", err)
		}
	}
	st.simSrv = &http.Server{Handler: st.Sim.Handler(), ReadHeaderTimeout: readHeaderTimeout, IdleTimeout: idleTimeout}
	go func() { _ = st.simSrv.Serve(st.simLn) }()

	if err := st.Host.Start(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// Stop stops the host and its handler, the simulator and Azurite, in that order.
func (st *Stack) Stop(ctx context.Context) error {
	var errs []error
	if st.Host != nil {
		errs = append(errs, st.Host.Stop(ctx))
	}
	if st.simSrv != nil {
		sctx, cancel := context.WithTimeout(ctx, serverStopTimeout)
		if err := st.simSrv.Shutdown(sctx); err != nil {
			errs = append(errs, st.simSrv.Close())
		}
		cancel()
	} else if st.simLn != nil {
		st.simLn.Close()
	}
	if st.World != nil {
		st.World.Close()
	}
	if st.azurite != nil {
		st.azurite.Stop()
	}
	return errors.Join(errs...)
}

// Describe lists where everything listens, one line each.
func (st *Stack) Describe() string {
	var b strings.Builder
	h := st.Host
	fmt.Fprintf(&b, "Functions host    %s\n", h.URL())
	fmt.Fprintf(&b, "  HTTP API        %s/%s/...\n", h.URL(), h.app.Host.RoutePrefix)
	for _, f := range h.app.Functions {
		if f.Trigger == "eventGridTrigger" {
			fmt.Fprintf(&b, "  Event Grid      %s%s?functionName=%s\n", h.URL(), EventGridPath, f.Name)
		}
	}
	fmt.Fprintf(&b, "  local bus       %s%s\n", h.BusURL(), "/messages")
	fmt.Fprintf(&b, "  status          %s%s\n", h.URL(), StatusPath)
	fmt.Fprintf(&b, "  invocations     %s%s?after=0\n", h.URL(), InvocationsPath)
	if c := h.Child(); c != nil {
		fmt.Fprintf(&b, "handler           %s (pid %d)\n", c.URL(), c.PID())
	}
	fmt.Fprintf(&b, "Azure simulator   %s (subscription %s, %s)\n", st.SimURL, st.Sim.SubscriptionID(), st.Sim.Location())
	fmt.Fprintf(&b, "Azurite (blob)    %s\n", st.AzuriteURL)
	return b.String()
}

// Local defaults of the support contact, which config requires when tickets are on.
const (
	localContactFirstName = "Local"
	localContactLastName  = "Operator"
	localContactEmail     = "ops@example.com"
)

// FleetSettings are the handler settings that follow from the fleet: the subscription in scope,
// the rescue VMs, and a support contact. A setting that lookup finds already set (in the
// environment the handler inherits) is left alone.
func FleetSettings(f *azsim.Fleet, lookup func(string) (string, bool)) []string {
	var rescue []string
	for _, r := range f.RescueVMs {
		rescue = append(rescue, f.VMID(r.Name))
	}
	var env []string
	for _, kv := range [][2]string{
		{config.AllowedSubscriptions, f.SubscriptionID},
		{config.RescueVMs, strings.Join(rescue, ",")},
		{config.ContactFirstName, localContactFirstName},
		{config.ContactLastName, localContactLastName},
		{config.ContactEmail, localContactEmail},
	} {
		if v, ok := lookup(kv[0]); ok && v != "" {
			continue
		}
		env = append(env, kv[0]+"="+kv[1])
	}
	return env
}

// defaultPollInterval is the handler's VMRESCUE_POLL_INTERVAL at time scale 1.
const defaultPollInterval = 10 * time.Second

// minPollInterval bounds the scaled poll interval from below (the setting's own minimum).
const minPollInterval = time.Millisecond

// ScaleSettings are the handler settings that follow from the simulator's time scale: the pause
// between the handler's reads of work in progress, scaled as the simulated operations are, so
// that the handler does not sleep through a copy that the time scale made short. A setting that
// lookup finds already set is left alone.
func ScaleSettings(scale float64, lookup func(string) (string, bool)) []string {
	if v, ok := lookup(config.PollInterval); ok && v != "" {
		return nil
	}
	if scale <= 0 || scale >= 1 {
		return nil // no waiting at all, or the real pace: the default applies
	}
	poll := max(time.Duration(float64(defaultPollInterval)*scale), minPollInterval)
	return []string{config.PollInterval + "=" + poll.String()}
}

// EnsureAzurite installs Azurite from npm, at the pinned version, into .tools/azurite of the
// module root (or the working directory outside a checkout) when azurite-blob cannot be found.
func EnsureAzurite(ctx context.Context, out io.Writer) error {
	if _, err := azurite.Executable(); err == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("azurite-blob is not installed and npm is not on PATH: install Node.js (which brings npm), then run `make tools`, or set VMRESCUE_AZURITE to an azurite-blob executable")
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	for dir := root; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			root = dir
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	dir := filepath.Join(root, ".tools", "azurite")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(out, "Azurite is not installed: installing azurite@%s from npm into %s (once)...\n", azurite.Version, dir)
	ctx, cancel := context.WithTimeout(ctx, npmInstallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "azurite@"+azurite.Version)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("npm install azurite@%s in %s: %w", azurite.Version, dir, err)
	}
	if _, err := azurite.Executable(); err != nil {
		return fmt.Errorf("npm installed azurite but it cannot be found: %w", err)
	}
	return nil
}
