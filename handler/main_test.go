package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/dumpfile"
	"github.com/vmrescue/vmrescue/internal/handlertest"
	"github.com/vmrescue/vmrescue/internal/incident"
)

var binary string

func TestMain(m *testing.M) { handlertest.Main(m, &binary) }

const sub = "11111111-2222-3333-4444-555555555555"

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// handlerEnv is a complete local configuration: Azurite storage and a loopback bus.
func handlerEnv(t testing.TB, port int, busURL string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		config.Port + "=" + strconv.Itoa(port),
		config.StorageConnection + "=" + azuritetest.ConnectionString(t),
		config.LocalBusURL + "=" + busURL,
		config.AllowedSubscriptions + "=" + sub,
		config.RescueVMs + "=/subscriptions/" + sub + "/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/rescue-1",
		config.SupportEnabled + "=false",
		config.ShutdownTimeout + "=10s",
	}
}

func waitReady(port int, deadline time.Duration) error {
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
	start := time.Now()
	for time.Since(start) < deadline {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("not ready within %s", deadline)
}

func TestRefusesToStartNamingEverySetting(t *testing.T) {
	cmd := exec.Command(binary, "serve")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), config.ReproWait + "=forever"}
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("exit = %v, want 1\n%s", err, out)
	}
	for _, name := range []string{config.Port, config.ServiceBusNamespace, config.StorageBlobURL,
		config.AllowedSubscriptions, config.RescueVMs, config.ContactEmail, config.ReproWait} {
		if !bytes.Contains(out, []byte(name)) {
			t.Errorf("message does not name %s:\n%s", name, out)
		}
	}
}

func TestUsage(t *testing.T) {
	out, err := exec.Command(binary, "frobnicate").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !bytes.Contains(out, []byte("unknown command")) {
		t.Fatalf("unknown command: %v\n%s", err, out)
	}
}

// TestGracefulShutdown starts the handler, begins an invocation, sends SIGTERM while it is in
// flight, and checks that the invocation still completes and the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	busSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer busSrv.Close()
	port := freePort(t)
	cmd := exec.Command(binary)
	cmd.Env = handlerEnv(t, port, busSrv.URL)
	// Containers of this test's own, made before the handler starts: it creates missing ones in the
	// background, and an invocation that races that is retried by the host, not by this test.
	client := azuritetest.Client(t)
	for _, kv := range [][2]string{{config.AuditContainer, "audit"}, {config.LocksContainer, "locks"}} {
		name := azuritetest.Container(t, kv[1])
		if _, err := client.CreateContainer(context.Background(), name, nil); err != nil {
			t.Fatal(err)
		}
		cmd.Env = append(cmd.Env, kv[0]+"="+name)
	}
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	if err := waitReady(port, 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}

	body := `{"Data":{"event":{"id":"e-graceful","eventType":"Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated",` +
		`"subject":"x","eventTime":"2026-11-20T03:14:07Z","dataVersion":"1","data":{"resourceInfo":{"properties":{` +
		`"targetResourceId":"/subscriptions/` + sub + `/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-graceful",` +
		`"targetResourceType":"Microsoft.Compute/virtualMachines","annotationName":"VirtualMachineCrashed"}}}}},"Metadata":{}}`
	conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Send the headers and half the body, then SIGTERM, then the rest.
	fmt.Fprintf(conn, "POST /HealthAlert HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	io.WriteString(conn, body[:len(body)/2])
	time.Sleep(100 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	// New work is refused while the in-flight invocation finishes.
	if resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/"); err == nil {
		resp.Body.Close()
		t.Error("handler still accepted a new connection after SIGTERM")
	}
	io.WriteString(conn, body[len(body)/2:])
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight invocation lost: %v\n%s", err, logs.String())
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("in-flight invocation = %d", resp.StatusCode)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "shutting down") {
		t.Errorf("no shutdown log:\n%s", logs.String())
	}
}

// BenchmarkStartup measures exec to the first answered readiness probe, and reports the median of
// the runs and the idle RSS: go test -run '^$' -bench Startup -benchtime 20x ./handler
func BenchmarkStartup(b *testing.B) {
	var samples []time.Duration
	var rss int64
	for b.Loop() {
		port := freePort(b)
		cmd := exec.Command(binary)
		cmd.Env = handlerEnv(b, port, "http://127.0.0.1:1")
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if err := waitReady(port, 10*time.Second); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
		time.Sleep(300 * time.Millisecond) // idle
		if kb := vmRSSKiB(cmd.Process.Pid); kb > rss {
			rss = kb
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "ms-median-ready")
	b.ReportMetric(float64(rss)/1024, "MiB-idle-rss")
}

func vmRSSKiB(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func TestAuditVerifyCommand(t *testing.T) {
	ctx := context.Background()
	client := azuritetest.Client(t)
	container := azuritetest.Container(t, "audit")
	trail := audit.New(client, container)
	if err := trail.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	const id = "inc-20261120-031407-abc123"
	vm := "/subscriptions/" + sub + "/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
	for _, ev := range []string{incident.EventOpened, incident.EventStarted, incident.EventSucceeded} {
		if _, err := trail.Append(ctx, id, audit.Entry{VMResourceID: vm, Stage: "snapshot", Event: ev}); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) (int, string) {
		cmd := exec.Command(binary, append([]string{"audit", "verify", "--container", container}, args...)...)
		cmd.Env = []string{config.StorageConnection + "=" + azuritetest.ConnectionString(t)}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		return 0, string(out)
	}
	if code, out := run(id); code != 0 || !strings.Contains(out, "3 records, chain verified") {
		t.Fatalf("verify = %d %s", code, out)
	}
	// Rewrite the blob with one field changed: the command must fail and say where.
	raw, err := trail.ReadRaw(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(raw, []byte(`"event":"started"`), []byte(`"event":"skipped"`), 1)
	ab := client.ServiceClient().NewContainerClient(container).NewAppendBlobClient(audit.BlobName(id))
	if _, err := ab.Delete(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ab.Create(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ab.AppendBlock(ctx, nopSeeker{bytes.NewReader(tampered)}, nil); err != nil {
		t.Fatal(err)
	}
	if code, out := run(id); code != 1 || !strings.Contains(out, "chain broken") {
		t.Fatalf("tampered verify = %d %s", code, out)
	}
	if code, out := run("not-an-id"); code != 2 || !strings.Contains(out, "not an incident id") {
		t.Fatalf("bad id = %d %s", code, out)
	}
}

type nopSeeker struct{ *bytes.Reader }

func (nopSeeker) Close() error { return nil }

// TestDumpInfoCommand runs `handler dump info` on a synthetic dump and on a foreign file.
func TestDumpInfoCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "MEMORY.DMP")
	if err := dumpfile.WriteFile(good, dumpfile.Spec{BugCheckCode: 0x7B, Parameters: [4]uint64{1, 2, 3, 4}}, 1<<20); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "notes.txt")
	os.WriteFile(foreign, []byte("not a dump, just text that is long enough to look like something"), 0o644)
	out, err := exec.Command(binary, "dump", "info", good).Output()
	if err != nil || !bytes.Contains(out, []byte("INACCESSIBLE_BOOT_DEVICE")) || !bytes.Contains(out, []byte("0x0000007B")) && !bytes.Contains(out, []byte("0x7B")) && !bytes.Contains(out, []byte("0x7b")) {
		t.Fatalf("dump info = %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "dump", "info", foreign).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || len(out) == 0 {
		t.Fatalf("foreign file accepted: %v\n%s", err, out)
	}
}
