package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/azurite"
	"github.com/vmrescue/vmrescue/internal/blobstore"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/intake"
	"github.com/vmrescue/vmrescue/internal/lifecycle"
	"github.com/vmrescue/vmrescue/internal/pipeline"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/skus"
	"github.com/vmrescue/vmrescue/internal/support"
)

// bootDiagHTTPTimeout bounds the download of one boot diagnostics file.
const bootDiagHTTPTimeout = 2 * time.Minute

// wirePipeline builds the pipeline and hands its stage runners and janitor to the server, and its
// crash-signal hook to intake.
func wirePipeline(cfg config.Config, cred azcore.TokenCredential, blobs *azblob.Client, d *deps, in *intake.Intake, sender bus.Sender, log *slog.Logger) error {
	p, err := newPipeline(cfg, cred, blobs, log)
	if err != nil {
		return err
	}
	p.Trail, p.Locks, p.Bus = d.trail, d.locks, sender
	if err := p.Validate(); err != nil {
		return err
	}
	in.OnSignal = p.Signal
	d.prepare = func(ctx context.Context) error {
		// The pool first: it is a few reads, and admission to Snapshot needs it from the first alert.
		if err := p.PreparePool(ctx); err != nil && ctx.Err() == nil {
			log.Warn("rescue pool not read: Snapshot admits every incident until RescueAttach reads it", "err", err)
		}
		return p.PrepareAgent(ctx)
	}
	d.server.Stages, d.server.Janitor = p.Stages(), p.Janitor()
	return nil
}

// newPipeline builds the pipeline's Azure clients, blob store, SAS signer and lifecycle publisher.
// The caller sets Trail, Locks and Bus.
func newPipeline(cfg config.Config, cred azcore.TokenCredential, blobs *azblob.Client, log *slog.Logger) (*pipeline.Pipeline, error) {
	armCred, opts, err := armConnection(cfg, cred)
	if err != nil {
		return nil, err
	}
	pool, err := resourceid.ParseVM(cfg.RescueVMs[0])
	if err != nil {
		return nil, fmt.Errorf("rescue VM: %w", err)
	}
	clients := &azureClients{cred: armCred, opts: opts, bySub: map[string]*pipeline.Azure{}}
	svc, err := armsupport.NewServicesClient(armCred, opts)
	if err != nil {
		return nil, fmt.Errorf("support services client: %w", err)
	}
	pcs, err := armsupport.NewProblemClassificationsClient(armCred, opts)
	if err != nil {
		return nil, fmt.Errorf("problem classifications client: %w", err)
	}
	clients.classifier = &support.Classifier{Services: svc, Classifications: pcs, Override: cfg.Support.Classification}
	def, err := clients.For(pool.SubscriptionID)
	if err != nil {
		return nil, err
	}
	p := &pipeline.Pipeline{
		Config: cfg, Azure: *def, Subscriptions: clients.For, AgentPath: agentPath(cfg),
		Events: &lifecycle.Publisher{}, HTTP: &http.Client{Timeout: bootDiagHTTPTimeout}, Log: log,
		Poll: cfg.PollInterval, TimeScale: cfg.TimeScale, WritesPerHour: cfg.ARMWritesPerHour,
	}
	if blobs != nil { // `handler plan` may run without storage
		p.Blobs = &blobstore.Store{Client: blobs}
		if cfg.StorageConnection != "" {
			p.Signer, err = blobstore.SharedKeyFromConnectionString(azurite.ExpandConnectionString(cfg.StorageConnection))
		} else {
			p.Signer = &blobstore.UserDelegation{Service: blobs.ServiceClient()}
		}
		if err != nil {
			return nil, fmt.Errorf("SAS signer: %w", err)
		}
	}
	if cfg.EventGridTopic != "" {
		ecred := cred
		if ecred == nil {
			if ecred, err = credential(cfg); err != nil {
				return nil, err
			}
		}
		eg, err := azeventgrid.NewClient(cfg.EventGridTopic, ecred, nil)
		if err != nil {
			return nil, fmt.Errorf("event grid: %w", err)
		}
		p.Events.Client = eg
	}
	return p, nil
}

// agentPath is the agent binary to upload. Against the local simulator, which runs no Windows
// binary and only checks the hash the bootstrap is given, a missing windows build is replaced by
// the running executable, so that `handler local` needs no cross-compiled agent.
func agentPath(cfg config.Config) string {
	if !armclient.IsLoopbackEndpoint(cfg.ARMEndpoint) {
		return cfg.AgentBinary
	}
	path := cfg.AgentBinary
	if exe, err := os.Executable(); err == nil {
		if !filepath.IsAbs(path) {
			path = filepath.Join(filepath.Dir(exe), path)
		}
		if _, err := os.Stat(path); err != nil {
			return exe
		}
	}
	return path
}

// armConnection is the credential and client options for ARM: the public cloud (or another https
// endpoint) with the app's credential, or the local simulator on loopback with a static token.
func armConnection(cfg config.Config, cred azcore.TokenCredential) (azcore.TokenCredential, *arm.ClientOptions, error) {
	opts, err := armclient.Options(cfg.ARMEndpoint)
	if err != nil {
		return nil, nil, err
	}
	if armclient.IsLoopbackEndpoint(cfg.ARMEndpoint) {
		return armclient.LoopbackCredential(), opts, nil
	}
	if cred == nil {
		if cred, err = credential(cfg); err != nil {
			return nil, nil, err
		}
	}
	return cred, opts, nil
}

// azureClients makes, once per subscription, the clients the pipeline calls there.
type azureClients struct {
	cred       azcore.TokenCredential
	opts       *arm.ClientOptions
	classifier *support.Classifier

	mu    sync.Mutex
	bySub map[string]*pipeline.Azure
}

// For implements pipeline.Pipeline.Subscriptions.
func (a *azureClients) For(sub string) (*pipeline.Azure, error) {
	key := strings.ToLower(sub)
	a.mu.Lock()
	defer a.mu.Unlock()
	if az, ok := a.bySub[key]; ok {
		return az, nil
	}
	f, err := armcompute.NewClientFactory(sub, a.cred, a.opts)
	if err != nil {
		return nil, fmt.Errorf("compute clients: %w", err)
	}
	tickets, err := armsupport.NewTicketsClient(sub, a.cred, a.opts)
	if err != nil {
		return nil, fmt.Errorf("support tickets client: %w", err)
	}
	az := &pipeline.Azure{
		VMs: f.NewVirtualMachinesClient(), Disks: f.NewDisksClient(), Snapshots: f.NewSnapshotsClient(),
		RunCommands: f.NewVirtualMachineRunCommandsClient(), SKUs: skus.NewCatalog(f.NewResourceSKUsClient()),
		Tickets: tickets, Classifier: a.classifier,
	}
	a.bySub[key] = az
	return az, nil
}
