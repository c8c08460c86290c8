// Package handlertest builds the handler binary once for a test binary whose tests run it as a
// child process (the handler's own commands, the local host, the demo, the benchmarks), runs the
// tests against Azurite, and removes the binary afterwards.
package handlertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
)

// buildTimeout bounds the one build of the handler.
const buildTimeout = 5 * time.Minute

// Package is the handler's import path.
const Package = "github.com/vmrescue/vmrescue/handler"

// Main builds the handler into a temporary directory, sets *binary to its path, runs the tests
// with Azurite (azuritetest.Run), removes the directory and exits with the tests' code. Call it
// from TestMain.
func Main(m *testing.M, binary *string) {
	os.Exit(run(m, binary))
}

func run(m *testing.M, binary *string) int {
	dir, err := os.MkdirTemp("", "vmrescue-handler-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "handlertest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	path, err := Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "handlertest:", err)
		return 1
	}
	*binary = path
	return azuritetest.Run(m)
}

// Build builds the handler for this machine into dir and returns its path.
func Build(dir string) (string, error) {
	name := "handler"
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	path := filepath.Join(dir, name)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", path, Package).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build handler: %w\n%s", err, out)
	}
	return path, nil
}
