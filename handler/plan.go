package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/lock"
)

// planTimeout bounds a whole preflight.
const planTimeout = 5 * time.Minute

func init() {
	extraCommands["plan"] = func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		return planMain(ctx, args, os.Getenv, stdout, stderr)
	}
}

const planUsage = `usage: handler plan --vm <resourceId> [--json]

Read-only preflight of a remediation against Azure, with the app's configuration and credentials
(AZURE_CLIENT_ID, or the developer's). It runs every check Snapshot and RescueAttach make (OS, disk
type, encryption, opt-out tag, scope, rescue capacity in the region and zone), checks that the
identity can read each resource kind involved, and prints the ARM writes the pipeline would make,
or each reason it would refuse. It writes nothing. Exit 0 ready, 1 refused or a check failed, 2 usage.
`

// planMain is `handler plan`. Settings the preflight does not use (the port, the bus, storage)
// need not be set; without storage, LUN reservations are not read.
func planMain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, planUsage) }
	vm := fs.String("vm", "", "resource id of the VM")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *vm == "" {
		if err == nil {
			fs.Usage()
		}
		return 2
	}
	storage := getenv(config.StorageBlobURL) != "" || getenv(config.StorageConnection) != ""
	cfg, err := config.Load(func(name string) string {
		if v := getenv(name); v != "" {
			return v
		}
		switch name { // not used by the preflight
		case config.Port:
			return "1"
		case config.LocalBusURL:
			if getenv(config.ServiceBusNamespace) == "" {
				return "http://127.0.0.1:1"
			}
		case config.StorageBlobURL:
			if !storage {
				return "https://storage.invalid"
			}
		}
		return ""
	})
	if err != nil {
		fmt.Fprintf(stderr, "handler plan: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var cred azcore.TokenCredential
	if !armclient.IsLoopbackEndpoint(cfg.ARMEndpoint) || (storage && cfg.StorageConnection == "") {
		if cred, err = credential(cfg); err != nil {
			fmt.Fprintf(stderr, "handler plan: %v\n", err)
			return 2
		}
	}
	var blobs *azblob.Client
	if storage {
		if blobs, err = blobClient(cfg, cred); err != nil {
			fmt.Fprintf(stderr, "handler plan: %v\n", err)
			return 2
		}
	}
	p, err := newPipeline(cfg, cred, blobs, log)
	if err != nil {
		fmt.Fprintf(stderr, "handler plan: %v\n", err)
		return 2
	}
	if blobs != nil {
		p.Locks = lock.New(blobs, cfg.LocksContainer)
	}
	ctx, cancel := context.WithTimeout(ctx, planTimeout)
	defer cancel()
	plan, err := p.Preflight(ctx, *vm)
	if err != nil {
		fmt.Fprintf(stderr, "handler plan: %v\n", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(plan)
	} else {
		err = plan.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "handler plan: %v\n", err)
		return 2
	}
	if !plan.Ready() {
		return 1
	}
	return 0
}
