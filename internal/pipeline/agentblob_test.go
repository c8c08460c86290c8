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

// uploadCounter counts the "agent binary uploaded" records of a logger.
type uploadCounter struct{ n atomic.Int64 }

func (c *uploadCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *uploadCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "agent binary uploaded" {
		c.n.Add(1)
	}
	return nil
}
func (c *uploadCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *uploadCounter) WithGroup(string) slog.Handler      { return c }

// TestAgentUploadedOnce: the agent binary goes to the tools container once, however many callers
// need it at the same moment (the start-up preparation and the OfflinePatch stages of concurrent
// incidents), and not at all when it is there.
func TestAgentUploadedOnce(t *testing.T) {
	t.Parallel()
	// Large enough that concurrent uploads would overlap.
	bin := make([]byte, 4<<20)
	if _, err := rand.Read(bin); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "handler-agent.exe")
	if err := os.WriteFile(path, bin, 0o644); err != nil {
		t.Fatal(err)
	}
	signer, err := blobstore.SharedKeyFromConnectionString(azuritetest.ConnectionString(t))
	if err != nil {
		t.Fatal(err)
	}
	blobs := &blobstore.Store{Client: azuritetest.Client(t)}
	newPipeline := func(tools string, c *uploadCounter) *Pipeline {
		return &Pipeline{
			Config: config.Config{ToolsContainer: tools, DumpsContainer: azuritetest.Container(t, "dumps")},
			Blobs:  blobs, Signer: signer, AgentPath: path, Log: slog.New(c),
		}
	}
	cases := []struct {
		name    string
		prepare bool // the start-up preparation runs with the stages
		stages  int  // agent runs that need the binary at once
		present bool // the binary is in the container already
		want    int64
	}{
		{name: "stages at once", stages: 8, want: 1},
		{name: "start-up preparation with stages", prepare: true, stages: 7, want: 1},
		{name: "start-up preparation alone", prepare: true, want: 1},
		{name: "already there", prepare: true, stages: 3, present: true, want: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tools := azuritetest.Container(t, "tools")
			if tc.present {
				if err := newPipeline(tools, &uploadCounter{}).PrepareAgent(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			var c uploadCounter
			p := newPipeline(tools, &c)
			var wg sync.WaitGroup
			errs := make(chan error, tc.stages+1)
			if tc.prepare {
				wg.Go(func() { errs <- p.PrepareAgent(context.Background()) })
			}
			for range tc.stages {
				wg.Go(func() {
					u, sum, err := p.agentURL(context.Background())
					if err == nil && (u == "" || len(sum) != 64) {
						t.Errorf("agentURL = %q, %q", u, sum)
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if got := c.n.Load(); got != tc.want {
				t.Errorf("%d uploads, want %d", got, tc.want)
			}
			a, err := p.agentBinary()
			if err != nil {
				t.Fatal(err)
			}
			ok, size, err := blobs.Exists(context.Background(), tools, AgentBlobName(a.sha256))
			if err != nil || !ok || size != int64(len(bin)) {
				t.Errorf("agent blob: there %v, %d bytes, %v; want %d bytes", ok, size, err, len(bin))
			}
		})
	}
}
