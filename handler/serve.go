package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/vmrescue/vmrescue/internal/api"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azurite"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/intake"
	"github.com/vmrescue/vmrescue/internal/lock"
	"github.com/vmrescue/vmrescue/internal/server"
)

// Timeouts of the HTTP server. Invocations may run as long as a stage (functionTimeout), so there is
// no write timeout; the host bounds them.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	ensureTimeout     = 2 * time.Minute
	prepareTimeout    = 10 * time.Minute
)

// serve runs the custom handler until SIGTERM, then stops taking work and lets in-flight
// invocations finish within VMRESCUE_SHUTDOWN_TIMEOUT.
func serve(ctx context.Context, _ []string, stderr io.Writer) int {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintf(stderr, "handler: %v\n", err)
		return 1
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	deps, err := wire(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "handler: %v\n", err)
		return 1
	}
	defer deps.close()

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)))
	if err != nil {
		fmt.Fprintf(stderr, "handler: listen: %v\n", err)
		return 1
	}
	srv := &http.Server{
		Handler:           deps.server.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Containers are made off the start-up path, so readiness does not wait on storage.
	go deps.ensureContainers(ctx)
	go deps.prepareAgent(ctx)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("handler listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		log.Error("server stopped", "err", err)
		return 1
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("in-flight invocations did not finish in time", "err", err)
		return 1
	}
	return 0
}

// deps are the handler's clients and services.
type deps struct {
	log    *slog.Logger
	trail  *audit.Store
	locks  *lock.Locks
	sb     *azservicebus.Client
	server *server.Server
	// prepare reads the rescue pool (pipeline.Pipeline.PreparePool) and uploads the rescue agent
	// binary (pipeline.Pipeline.PrepareAgent).
	prepare func(context.Context) error
}

func wire(cfg config.Config, log *slog.Logger) (*deps, error) {
	var cred azcore.TokenCredential
	needCred := cfg.StorageConnection == "" || cfg.LocalBusURL == ""
	if needCred {
		var err error
		cred, err = credential(cfg)
		if err != nil {
			return nil, err
		}
	}
	blobs, err := blobClient(cfg, cred)
	if err != nil {
		return nil, err
	}
	d := &deps{log: log, trail: audit.New(blobs, cfg.AuditContainer), locks: lock.New(blobs, cfg.LocksContainer)}

	var sender bus.Sender
	if cfg.LocalBusURL != "" {
		sender, err = bus.NewLocal(cfg.LocalBusURL, nil)
	} else {
		d.sb, err = azservicebus.NewClient(cfg.ServiceBusNamespace, cred, nil)
		if err == nil {
			sender = bus.NewServiceBus(d.sb)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("service bus: %w", err)
	}
	in := &intake.Intake{Trail: d.trail, Locks: d.locks, Bus: sender, Scope: cfg, Log: log}
	d.server = &server.Server{
		Trail:  d.trail,
		Intake: in,
		API:    &api.API{Trail: d.trail, Intake: in, Bus: sender, Log: log},
		Log:    log,
	}
	if err := wirePipeline(cfg, cred, blobs, d, in, sender, log); err != nil {
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	return d, nil
}

// credential is the user-assigned managed identity when AZURE_CLIENT_ID is set, else the developer's
// credentials.
func credential(cfg config.Config) (azcore.TokenCredential, error) {
	if cfg.ClientID != "" {
		cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
			ID: azidentity.ClientID(cfg.ClientID),
		})
		if err != nil {
			return nil, fmt.Errorf("managed identity: %w", err)
		}
		return cred, nil
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("credential: %w", err)
	}
	return cred, nil
}

func blobClient(cfg config.Config, cred azcore.TokenCredential) (*azblob.Client, error) {
	if cfg.StorageConnection != "" {
		c, err := azblob.NewClientFromConnectionString(azurite.ExpandConnectionString(cfg.StorageConnection), nil)
		if err != nil {
			return nil, fmt.Errorf("storage connection string: %w", err)
		}
		return c, nil
	}
	c, err := azblob.NewClient(cfg.StorageBlobURL+"/", cred, nil)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return c, nil
}

func (d *deps) ensureContainers(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, ensureTimeout)
	defer cancel()
	for _, ensure := range []func(context.Context) error{d.trail.EnsureContainer, d.locks.EnsureContainer} {
		for attempt := 0; ; attempt++ {
			err := ensure(ctx)
			if err == nil {
				break
			}
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				d.log.Error("storage containers not ready", "err", err)
				return
			}
			d.log.Warn("storage not ready, retrying", "err", err, "attempt", attempt)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second << min(attempt, 4)):
			}
		}
	}
}

// prepareAgent uploads the rescue agent binary off the start-up path, so that the first incident
// after a deployment does not wait for it. A failure is logged; the stage that needs the binary
// uploads it then.
func (d *deps) prepareAgent(ctx context.Context) {
	if d.prepare == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	defer cancel()
	if err := d.prepare(ctx); err != nil && ctx.Err() == nil {
		d.log.Warn("agent binary not prepared: the first agent run uploads it", "err", err)
	}
}

func (d *deps) close() {
	if d.sb != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.sb.Close(ctx)
	}
}
