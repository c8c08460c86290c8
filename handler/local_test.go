//go:build unix

package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestLocalStartsAndStopsEverything runs `handler local` as a user would: it prints where
// everything listens, answers the Event Grid handshake, and on SIGINT stops the handler child,
// the simulator and Azurite, and exits 0.
func TestLocalStartsAndStopsEverything(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Azurite")
	}
	handlerPort := freePort(t)
	cmd := exec.Command(binary, "local", "--port", "0", "--handler-port", strconv.Itoa(handlerPort), "--time-scale", "0.01", "--no-timers")
	cmd.Env = append(cmd.Environ(), "VMRESCUE_SUPPORT_TICKETS=false")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var printed []string
	deadline := time.After(90 * time.Second)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("handler local exited early:\n%s\n%s", strings.Join(printed, "\n"), logs.String())
			}
			printed = append(printed, l)
			if strings.HasPrefix(l, "ready") {
				break wait
			}
		case <-deadline:
			t.Fatalf("not ready:\n%s\n%s", strings.Join(printed, "\n"), logs.String())
		}
	}
	out := strings.Join(printed, "\n")
	addr := func(label string) string {
		m := regexp.MustCompile(label + `\s+http://(127\.0\.0\.1:\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no %s address in:\n%s", label, out)
		}
		return m[1]
	}
	host, sim, azurite, handler := addr("Functions host"), addr("Azure simulator"), addr(`Azurite \(blob\)`), addr("handler")
	if handler != "127.0.0.1:"+strconv.Itoa(handlerPort) {
		t.Fatalf("handler at %s, want port %d", handler, handlerPort)
	}
	pid, _ := strconv.Atoi(regexp.MustCompile(`\(pid (\d+)\)`).FindStringSubmatch(out)[1])

	resp, err := http.Post("http://"+host+"/runtime/webhooks/eventgrid?functionName=HealthAlert", "application/json",
		strings.NewReader(`[{"id":"v","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","subject":"","eventTime":"2026-11-20T03:14:07Z","dataVersion":"1","data":{"validationCode":"code-1"}}]`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"validationResponse": "code-1"`) {
		t.Fatalf("handshake: %s %s", resp.Status, body)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("did not stop:\n%s", logs.String())
	}
	for name, a := range map[string]string{"host": host, "simulator": sim, "azurite": azurite, "handler": handler} {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still listens on %s", name, a)
		}
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("handler child %d still runs", pid)
	}
}

// lockedBuffer is a buffer that the process's stderr copier and the test read safely.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
