package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// auditCmd: handler audit verify <incidentId>. It reads storage settings from the same environment
// as the handler (VMRESCUE_STORAGE_CONNECTION_STRING or VMRESCUE_STORAGE_BLOB_URL).
func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	container := fs.String("container", "", "audit container (default: VMRESCUE_AUDIT_CONTAINER or audit)")
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: handler audit verify [--container NAME] <incidentId>")
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: handler audit verify [--container NAME] <incidentId>")
		return 2
	}
	id := fs.Arg(0)
	if !incident.ValidID(id) {
		fmt.Fprintf(stderr, "handler audit: %q is not an incident id (inc-YYYYMMDD-HHMMSS-xxxx)\n", id)
		return 2
	}
	cfg := config.Config{
		StorageConnection: os.Getenv(config.StorageConnection),
		StorageBlobURL:    os.Getenv(config.StorageBlobURL),
		ClientID:          os.Getenv(config.ClientID),
		AuditContainer:    firstNonEmpty(*container, os.Getenv(config.AuditContainer), "audit"),
	}
	if cfg.StorageConnection == "" && cfg.StorageBlobURL == "" {
		fmt.Fprintf(stderr, "handler audit: set %s or %s\n", config.StorageConnection, config.StorageBlobURL)
		return 2
	}
	var cred azcore.TokenCredential
	if cfg.StorageConnection == "" {
		c, err := credential(cfg)
		if err != nil {
			fmt.Fprintf(stderr, "handler audit: %v\n", err)
			return 1
		}
		cred = c
	}
	client, err := blobClient(cfg, cred)
	if err != nil {
		fmt.Fprintf(stderr, "handler audit: %v\n", err)
		return 1
	}
	n, err := audit.VerifyIncident(ctx, audit.New(client, cfg.AuditContainer), id)
	if err != nil {
		fmt.Fprintf(stderr, "handler audit: %s: chain broken after %d good records: %v\n", id, n, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %d records, chain verified\n", id, n)
	return 0
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
