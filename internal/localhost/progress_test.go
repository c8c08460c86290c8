package localhost

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

func TestProgress(t *testing.T) {
	t.Parallel()
	app, err := LoadApp(appDir)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Options{App: app, Addr: "127.0.0.1:0", HandlerPath: "unused", Output: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Stop(t.Context()) })
	t0 := time.Date(2026, 11, 20, 3, 14, 0, 0, time.UTC)
	h.record(Invocation{Function: "HealthAlert", Start: t0.Add(time.Second), Duration: 40 * time.Millisecond, Status: 200,
		Outcome: OutcomeSucceeded, EventID: "ev-1"})
	h.record(Invocation{Function: "Snapshot", Start: t0.Add(2 * time.Second), Duration: 1500 * time.Millisecond, Status: 500,
		Outcome: OutcomeFailed, Error: "handler answered 500 Internal Server Error: throttled", Queue: "snapshot",
		IncidentID: "inc-a", DeliveryCount: 1})
	h.record(Invocation{Function: "Snapshot", Start: t0.Add(4 * time.Second), Duration: 2 * time.Second, Status: 200,
		Outcome: OutcomeSucceeded, Queue: "snapshot", IncidentID: "inc-a", DeliveryCount: 2})
	h.record(Invocation{Function: "Snapshot", Start: t0.Add(5 * time.Second), Duration: time.Second, Status: 200,
		Outcome: OutcomeSucceeded, Queue: "snapshot", IncidentID: "inc-other", DeliveryCount: 1})

	var plain bytes.Buffer
	p := &Progress{Host: h, Out: &plain, Incident: "inc-a", Start: t0}
	p.Update()
	p.Update() // nothing new: nothing written
	want := []string{
		"    1.00s  HealthAlert          event ev-1                                   succeeded (200)     0.04s",
		"    2.00s  Snapshot             inc-a delivery 1                             failed (500)        1.50s  handler answered 500 Internal Server Error: throttled",
		"    4.00s  Snapshot             inc-a delivery 2                             succeeded (200)     2.00s",
	}
	if got := strings.Split(strings.TrimSuffix(plain.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("plain progress:\n%s\nwant:\n%s", plain.String(), strings.Join(want, "\n"))
	}

	var live bytes.Buffer
	lp := &Progress{Host: h, Out: &live, Live: true, Start: t0}
	lp.Update()
	h.record(Invocation{Function: "RescueAttach", Start: t0.Add(7 * time.Second), Duration: time.Second, Status: 200,
		Outcome: OutcomeSucceeded, Queue: "rescue-attach", IncidentID: "inc-a", DeliveryCount: 1})
	lp.Update()
	out := live.String()
	if !strings.Contains(out, "\x1b[3A") || strings.Count(out, "\x1b[2K") != 3+4 {
		t.Fatalf("live view does not redraw in place: %q", out)
	}
	last := out[strings.LastIndex(out, "\x1b[3A"):]
	for _, w := range []string{"Snapshot                 2.00s          3     4.50s  succeeded (200)", "RescueAttach             7.00s          1"} {
		if !strings.Contains(last, w) {
			t.Errorf("live table lacks %q:\n%s", w, last)
		}
	}
	if IsTerminal(&live) {
		t.Error("a buffer is not a terminal")
	}
}
