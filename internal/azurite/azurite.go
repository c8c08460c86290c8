// Package azurite starts and stops a real Azurite blob service for tests and for the local host.
//
// Azurite is installed from npm at a pinned version into the project-local folder .tools/azurite
// (make tools, or .ci/run). VMRESCUE_AZURITE names another azurite-blob executable.
package azurite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
)

// Version is the npm version of Azurite that vmrescue is tested with.
const Version = "3.37.0"

// The well-known development account that Azurite serves.
const (
	AccountName = "devstoreaccount1"
	AccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// startTimeout bounds how long Azurite may take to listen.
const startTimeout = 60 * time.Second

// Server is a running Azurite blob service.
type Server struct {
	// BlobURL is the service URL, http://127.0.0.1:PORT/devstoreaccount1.
	BlobURL string
	cmd     *exec.Cmd
	done    chan struct{}
	logs    *tailBuffer
	dir     string // Azurite's working directory (its blob files, on disk), removed when it exits
}

// ConnectionString is the connection string for the development account on this server.
func (s *Server) ConnectionString() string { return ConnectionString(s.BlobURL) }

// ConnectionString builds a connection string for the development account at blobURL.
func ConnectionString(blobURL string) string {
	return "DefaultEndpointsProtocol=http;AccountName=" + AccountName + ";AccountKey=" + AccountKey +
		";BlobEndpoint=" + blobURL + ";"
}

// Client returns a blob service client with the development account's shared key.
func (s *Server) Client() (*azblob.Client, error) {
	return azblob.NewClientFromConnectionString(s.ConnectionString(), nil)
}

// Executable finds azurite-blob: $VMRESCUE_AZURITE, then .tools/azurite in this module's root or an
// ancestor of the working directory, then $PATH.
func Executable() (string, error) {
	if p := os.Getenv("VMRESCUE_AZURITE"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err == nil {
		for {
			p := filepath.Join(dir, ".tools", "azurite", "node_modules", ".bin", "azurite-blob")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	if p, err := exec.LookPath("azurite-blob"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("azurite-blob not found: run `make tools` (npm install azurite@%s into .tools/azurite) or set VMRESCUE_AZURITE", Version)
}

// Start launches azurite-blob in memory on 127.0.0.1 at a free port and waits until it answers.
func Start(ctx context.Context) (*Server, error) { return startAny(ctx, false) }

// StartOnDisk is Start with the blobs kept in files under a temporary directory, removed when
// Azurite stops. For long runs that store gigabytes (the local stack, the benchmarks: 200
// incidents each upload a simulated memory dump): in memory, Azurite's single Node process
// slows to a halt near its heap limit and stops answering.
func StartOnDisk(ctx context.Context) (*Server, error) { return startAny(ctx, true) }

func startAny(ctx context.Context, onDisk bool) (*Server, error) {
	exe, err := Executable()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // a free port can be taken between the probe and Azurite's bind
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s, err := start(ctx, exe, port, onDisk)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func start(ctx context.Context, exe string, port int, onDisk bool) (*Server, error) {
	dir, err := os.MkdirTemp("", "vmrescue-azurite-")
	if err != nil {
		return nil, err
	}
	args := []string{"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"}
	if onDisk {
		args = append(args, "--location", dir)
	} else {
		args = append(args, "--inMemoryPersistence")
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir = dir // keeps any stray file out of the tree; removed when Azurite exits
	setProcessGroup(cmd)
	logs := &tailBuffer{max: 8 << 10}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start azurite: %w", err)
	}
	s := &Server{
		BlobURL: fmt.Sprintf("http://127.0.0.1:%d/%s", port, AccountName),
		cmd:     cmd,
		done:    make(chan struct{}),
		logs:    logs,
		dir:     dir,
	}
	go func() {
		_ = cmd.Wait()
		os.RemoveAll(dir)
		close(s.done)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	u := strings.TrimSuffix(s.BlobURL, "/"+AccountName) + "/" + AccountName + "?comp=list"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil // any HTTP answer means it listens
		}
		select {
		case <-s.done:
			return fmt.Errorf("azurite exited before listening: %s", s.logs.String())
		case <-ctx.Done():
			return fmt.Errorf("azurite did not listen within %s: %s", startTimeout, s.logs.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop ends Azurite and its children and waits for them.
func (s *Server) Stop() {
	if s == nil || s.cmd.Process == nil {
		return
	}
	terminateGroup(s.cmd.Process, false)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		terminateGroup(s.cmd.Process, true)
		<-s.done
	}
}

// Logs returns the tail of what Azurite printed.
func (s *Server) Logs() string { return s.logs.String() }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = b.buf[len(b.buf)-b.max:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(b.buf)))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines, "\n")
}

// DevelopmentStorage is the shorthand connection string of local.settings.json files.
const DevelopmentStorage = "UseDevelopmentStorage=true"

// ExpandConnectionString turns the UseDevelopmentStorage=true shorthand, which azblob does not
// understand, into the full connection string of Azurite's default endpoint; other strings pass
// through unchanged.
func ExpandConnectionString(cs string) string {
	if strings.EqualFold(strings.TrimSuffix(strings.TrimSpace(cs), ";"), DevelopmentStorage) {
		return ConnectionString("http://127.0.0.1:10000/" + AccountName)
	}
	return cs
}
