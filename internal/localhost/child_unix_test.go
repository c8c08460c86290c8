//go:build unix

package localhost

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// processAlive reports whether a process with this pid exists.
func processAlive(pid int) bool {
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestKilledHandlerIsRestartedAndMessageRedelivered(t *testing.T) {
	t.Parallel()
	ts := startStack(t, nil)
	child := ts.Host.Child()
	pid := child.PID()

	// Freeze the handler so that the next delivery stays in flight, then kill it mid-invocation.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	msg := incident.Message{Version: 1, IncidentID: "inc-20261120-031407-7f3c", VMResourceID: "/subscriptions/" +
		ts.Sim.SubscriptionID() + "/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/app-web-01",
		Stage: incident.StageSnapshot, Trigger: incident.Trigger{Kind: incident.TriggerAlert}}
	env, err := bus.NewEnvelope(msg, bus.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Host.Send(env); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := ts.Host.Status()
		if len(st.Running) == 1 && st.Running[0].Function == "Snapshot" {
			break // waiting on the frozen handler
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery not in flight: %+v", st.Running)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the request is written to the frozen handler's socket
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	first := ts.waitInvocation(t, 10*time.Second, func(i Invocation) bool { return i.Function == "Snapshot" && i.DeliveryCount == 1 })
	if first.Outcome != OutcomeFailed || first.Status != 0 || first.HandlerPID != pid {
		t.Fatalf("in-flight delivery %+v", first)
	}
	second := ts.waitInvocation(t, 15*time.Second, func(i Invocation) bool { return i.Function == "Snapshot" && i.DeliveryCount == 2 })
	if second.HandlerPID == pid || second.HandlerPID == 0 || second.Status == 0 || second.MessageID != env.MessageID {
		t.Fatalf("redelivery %+v", second)
	}
	ts.pids = append(ts.pids, second.HandlerPID)
	if child.Restarts() != 1 || processAlive(pid) {
		t.Fatalf("restarts %d, old handler alive %v", child.Restarts(), processAlive(pid))
	}
	st := ts.Host.Status()
	if !st.Handler.Ready || st.Handler.PID != second.HandlerPID || len(st.Handler.Exits) != 1 || !strings.Contains(st.Handler.Exits[0], "killed") {
		t.Fatalf("handler status %+v", st.Handler)
	}
}

// handlerEnv is a complete configuration for a handler child outside a stack.
func handlerEnv(t *testing.T) []string {
	t.Helper()
	noEnv := func(string) (string, bool) { return "", false }
	return append(FleetSettings(azsim.DefaultFleet(), noEnv),
		config.StorageConnection+"="+azuritetest.ConnectionString(t),
		config.LocalBusURL+"=http://127.0.0.1:1/runtime/bus",
		config.SupportEnabled+"=false",
	)
}

func TestChildStopKillsAfterBound(t *testing.T) {
	t.Parallel()
	out := &syncBuffer{}
	c, err := StartChild(t.Context(), ChildOptions{Path: handlerBinary, Args: []string{"serve"}, Env: handlerEnv(t),
		Output: out, Prefix: "[h] ", StopTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pid := c.PID()
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGCONT)
		c.Stop() // no-op when the test got there
	})
	if !c.Ready() || pid == 0 {
		t.Fatalf("ready %v pid %d", c.Ready(), pid)
	}
	// The handler's log comes through, prefixed (it may trail the readiness answer a little).
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), `[h] {"time"`); {
		if time.Now().After(deadline) {
			t.Fatalf("handler log not passed through: %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A frozen handler cannot act on SIGTERM: Stop kills it once the bound has passed.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Stop()
	took := time.Since(start)
	if took < 300*time.Millisecond || took > 5*time.Second {
		t.Fatalf("Stop took %s with a 300ms bound", took)
	}
	if processAlive(pid) || c.PID() != 0 || c.Ready() || c.Restarts() != 0 {
		t.Fatalf("after Stop: alive %v pid %d ready %v restarts %d", processAlive(pid), c.PID(), c.Ready(), c.Restarts())
	}
	if ex := c.Exits(); len(ex) != 1 || !strings.Contains(ex[0], "killed") {
		t.Fatalf("exits %v", ex)
	}
	if err := c.WaitReady(t.Context()); !errors.Is(err, ErrChildStopped) {
		t.Fatalf("WaitReady after Stop: %v", err)
	}
}

func TestChildThatCannotStart(t *testing.T) {
	t.Parallel()
	// Without its settings the handler exits at once, naming them: the first start fails.
	out := &syncBuffer{}
	_, err := StartChild(t.Context(), ChildOptions{Path: handlerBinary, Args: []string{"serve"},
		Env: []string{config.AllowedSubscriptions + "=not-a-subscription"}, Output: out, Prefix: "[h] "})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("start: %v", err)
	}
	if !strings.Contains(out.String(), "[h] handler: invalid configuration") {
		t.Fatalf("child output not passed through: %q", out.String())
	}
	if _, err := StartChild(t.Context(), ChildOptions{Path: "/nonexistent/handler"}); err == nil {
		t.Fatal("started a missing executable")
	}
}
