package pipeline

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/blobstore"
	"github.com/vmrescue/vmrescue/internal/config"
)

// countUploads counts the "agent binary uploaded" records.
type countUploads struct {
	slog.Handler
	n *atomic.Int32
}

func (c countUploads) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "agent binary uploaded" {
		c.n.Add(1)
	}
	return nil
}

func (c countUploads) Enabled(context.Context, slog.Level) bool { return true }

// TestAgentUploadedOnce: the deliveries a fresh instance runs at once (up to maxConcurrentCalls
// per queue) all need the agent binary; one uploads it and the others wait for it, instead of
// each sending the whole binary (in chaos, a handler killed again and again never finished any of
// eight concurrent uploads, and every OfflinePatch was dead-lettered).
func TestAgentUploadedOnce(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "handler-agent.exe")
	body := make([]byte, 4<<20)
	if _, err := rand.Read(body); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, body, 0o644); err != nil {
		t.Fatal(err)
	}
	signer, err := blobstore.SharedKeyFromConnectionString(azuritetest.ConnectionString(t))
	if err != nil {
		t.Fatal(err)
	}
	var uploads atomic.Int32
	p := &Pipeline{
		Config:    config.Config{ToolsContainer: azuritetest.Container(t, "tools"), DumpsContainer: azuritetest.Container(t, "dumps")},
		Blobs:     &blobstore.Store{Client: azuritetest.Client(t)},
		Signer:    signer,
		AgentPath: bin,
		Log:       slog.New(countUploads{n: &uploads}),
	}
	const deliveries = 8
	var wg sync.WaitGroup
	errs := make([]error, deliveries)
	for i := range deliveries {
		wg.Go(func() { _, _, errs[i] = p.agentURL(context.Background()) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := uploads.Load(); n != 1 {
		t.Errorf("the agent binary was uploaded %d times, want once", n)
	}
}
