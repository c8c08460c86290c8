// Package bench proves vmrescue under load on the local stack (Azurite, the Azure simulator and
// the local Functions host with the real handler as its child): an alert storm, chaos (ARM faults,
// killed handlers, duplicated messages), rescue capacity under ARM's write budget, the critical
// path of one incident, and the handler's own overhead. Each scenario returns a Result with its
// figures, their targets and the invariants it checked; WriteReport renders them as
// docs/benchmarks.md and docs/benchmarks.json. `handler bench` runs them.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/demo"
	"github.com/vmrescue/vmrescue/internal/functions"
	"github.com/vmrescue/vmrescue/internal/localhost"
)

// DefaultTimeScale keeps the scenarios short: simulated Azure runs a thousand times faster.
const DefaultTimeScale = 0.001

// Bounds of the scenarios' own waiting.
const (
	pollEvery       = 200 * time.Millisecond
	idleSettle      = time.Second // the host must stay idle this long to count as done
	postTimeout     = 30 * time.Second
	maxPostAttempts = 30 // Event Grid's own retry limit
)

// Options are common to every scenario.
type Options struct {
	TimeScale  float64   // simulated latencies and scheduled waits; 0 is DefaultTimeScale
	Seed       int64     // seeds the event order, faults and kills
	Output     io.Writer // the host's and the handler's logs; nil discards them
	Progress   io.Writer // one line per step of the scenario; nil discards
	Handler    string    // handler executable; empty is this executable
	AppDir     string    // host.json and functions/; empty is found from the working directory
	AzuriteURL string    // reuse a running Azurite
	Timeout    time.Duration
}

func (o Options) scale() float64 {
	if o.TimeScale <= 0 {
		return DefaultTimeScale
	}
	return o.TimeScale
}

func (o Options) progressf(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// Figure is one measured value, with its target when it has one.
type Figure struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit,omitempty"`
	Target string  `json:"target,omitempty"` // e.g. "<= 1.15"
	Pass   *bool   `json:"pass,omitempty"`   // nil: no target
	Note   string  `json:"note,omitempty"`
}

// Result is what one scenario measured and checked.
type Result struct {
	Scenario string         `json:"scenario"`
	Params   map[string]any `json:"params"`
	Figures  []Figure       `json:"figures"`
	// Checks are the invariants, each "name: ok" or "name: FAILED ...".
	Checks   []Check  `json:"checks"`
	Notes    []string `json:"notes,omitempty"`
	Seconds  float64  `json:"seconds"`
	Pass     bool     `json:"pass"`
	Failures []string `json:"failures,omitempty"`
}

// Check is one invariant.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

func (r *Result) figure(name string, v float64, unit string) {
	r.Figures = append(r.Figures, Figure{Name: name, Value: round(v), Unit: unit})
}

// target adds a figure with a target: at most (le) or at least (!le) limit.
func (r *Result) target(name string, v float64, unit string, le bool, limit float64, note string) {
	pass := v <= limit
	op := "<="
	if !le {
		pass, op = v >= limit, ">="
	}
	r.Figures = append(r.Figures, Figure{Name: name, Value: round(v), Unit: unit, Target: fmt.Sprintf("%s %g", op, limit), Pass: &pass, Note: note})
	if !pass {
		r.Failures = append(r.Failures, fmt.Sprintf("%s = %.4g %s, target %s %g", name, v, unit, op, limit))
	}
}

func (r *Result) check(name string, ok bool, detail string) {
	r.Checks = append(r.Checks, Check{Name: name, OK: ok, Detail: detail})
	if !ok {
		r.Failures = append(r.Failures, name+": "+detail)
	}
}

func (r *Result) finish(start time.Time) {
	r.Seconds = round(time.Since(start).Seconds())
	r.Pass = len(r.Failures) == 0
}

func round(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return math.Round(v*1e4) / 1e4
}

// start brings up the local stack for a scenario.
func start(ctx context.Context, o Options, fleet *azsim.Fleet, faults azsim.FaultConfig, configure func(*azsim.Options, *localhost.Stack), env ...string) (*demo.Env, error) {
	o.progressf("starting Azurite, the simulator and the host (%d VMs, %d rescue VMs, time scale %g)", len(fleet.VMs), len(fleet.RescueVMs), o.scale())
	return demo.Start(ctx, demo.Options{
		Fleet: fleet, TimeScale: o.scale(), Faults: faults, AppDir: o.AppDir, Handler: o.Handler,
		Output: o.Output, AzuriteURL: o.AzuriteURL, ConfigureSim: configure, Env: env,
	})
}

// percentile returns the p-th percentile (0..100) of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// collector keeps every finished invocation of the host: the host keeps only its last few
// thousand, so it polls them as they finish.
type collector struct {
	host *localhost.Host
	mu   sync.Mutex
	last int64
	seen map[int64]bool
	invs []localhost.Invocation
	stop chan struct{}
	done chan struct{}
}

func collect(h *localhost.Host) *collector {
	c := &collector{host: h, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			c.poll()
			select {
			case <-c.stop:
				c.poll()
				return
			case <-t.C:
			}
		}
	}()
	return c
}

// poll reads the invocations that finished since the last poll. Sequence numbers are given at
// the start, and invocations finish out of order, so it reads from below the oldest one running.
func (c *collector) poll() {
	floor := int64(math.MaxInt64)
	for _, r := range c.host.Status().Running {
		floor = min(floor, r.Seq-1)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = map[int64]bool{}
	}
	for _, inv := range c.host.Invocations(min(c.last, floor)) {
		if !c.seen[inv.Seq] {
			c.seen[inv.Seq] = true
			c.invs = append(c.invs, inv)
		}
		c.last = max(c.last, inv.Seq)
	}
}

// Stop stops polling and returns every invocation seen.
func (c *collector) Stop() []localhost.Invocation {
	close(c.stop)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.invs)
}

// waitIdle waits until the host has nothing queued or running for idleSettle. The Janitor's
// timer runs do not count: at a high time scale they come faster than idleSettle.
func waitIdle(ctx context.Context, h *localhost.Host) error {
	var since time.Time
	for {
		if pipelineIdle(h) {
			if since.IsZero() {
				since = time.Now()
			} else if time.Since(since) >= idleSettle {
				return nil
			}
		} else {
			since = time.Time{}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the pipeline to finish: %w", ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// pipelineIdle reports that no queue holds a message and only timer invocations run.
func pipelineIdle(h *localhost.Host) bool {
	if !h.Broker().Idle() {
		return false
	}
	for _, r := range h.Status().Running {
		if r.Trigger != functions.Timer {
			return false
		}
	}
	return true
}

// Machine describes where a run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpuModel"`
	MemoryGiB string `json:"memory"`
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
}

// ThisMachine reads nproc, memory and the CPU model (Linux), and the Go version.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for l := range strings.Lines(string(b)) {
			var kb int64
			if _, err := fmt.Sscanf(l, "MemTotal: %d kB", &kb); err == nil {
				m.MemoryGiB = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	return m
}

// Report is a whole run: docs/benchmarks.json.
type Report struct {
	Command string    `json:"command"`
	Machine Machine   `json:"machine"`
	Date    time.Time `json:"date"`
	Results []Result  `json:"results"`
	Notes   []string  `json:"notes,omitempty"`
}

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteMarkdown writes the report for people.
func (r Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# vmrescue benchmarks\n\n")
	b.WriteString("Generated by `handler bench`; do not edit by hand. Reproduce with:\n\n")
	fmt.Fprintf(&b, "```\n%s\n```\n\n", r.Command)
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s memory, %s, %s. Run on %s.\n\n", r.Machine.CPUs, orDash(r.Machine.CPUModel),
		orDash(r.Machine.MemoryGiB), r.Machine.OS, r.Machine.GoVersion, r.Date.UTC().Format(time.RFC3339))
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "%s\n\n", n)
	}
	b.WriteString("| scenario | result | seconds |\n|---|---|---|\n")
	for _, res := range r.Results {
		fmt.Fprintf(&b, "| %s | %s | %.1f |\n", res.Scenario, passWord(res.Pass), res.Seconds)
	}
	for _, res := range r.Results {
		fmt.Fprintf(&b, "\n## %s: %s\n\n", res.Scenario, passWord(res.Pass))
		keys := make([]string, 0, len(res.Params))
		for k := range res.Params {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		var ps []string
		for _, k := range keys {
			ps = append(ps, fmt.Sprintf("%s=%v", k, res.Params[k]))
		}
		fmt.Fprintf(&b, "Parameters: %s\n\n", strings.Join(ps, ", "))
		b.WriteString("| figure | value | target | pass | note |\n|---|---|---|---|---|\n")
		for _, f := range res.Figures {
			pass := "-"
			if f.Pass != nil {
				pass = passWord(*f.Pass)
			}
			fmt.Fprintf(&b, "| %s | %s %s | %s | %s | %s |\n", f.Name, formatValue(f.Value), f.Unit, orDash(f.Target), pass, f.Note)
		}
		if len(res.Checks) > 0 {
			b.WriteString("\n| invariant | holds | detail |\n|---|---|---|\n")
			for _, c := range res.Checks {
				fmt.Fprintf(&b, "| %s | %s | %s |\n", c.Name, yesNo(c.OK), strings.ReplaceAll(c.Detail, "|", "\\|"))
			}
		}
		for _, n := range res.Notes {
			fmt.Fprintf(&b, "\n%s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e12 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.4g", v)
}

func passWord(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var noFaults azsim.FaultConfig

// Scenarios lists the scenario names in the order `handler bench all` runs them.
var Scenarios = []string{"storm", "chaos", "capacity", "critical-path", "overhead"}

// Sizes hold every scenario's own options.
type Sizes struct {
	Storm    StormOptions
	Chaos    ChaosOptions
	Capacity CapacityOptions
	Critical CriticalOptions
	Overhead OverheadOptions
}

// Run runs the named scenarios one after another. A scenario that cannot run (its stack does not
// start, or it times out) is recorded as failed and the next one still runs.
func Run(ctx context.Context, names []string, o Options, s Sizes) []Result {
	var out []Result
	for _, name := range names {
		sctx, cancel := ctx, context.CancelFunc(func() {})
		if o.Timeout > 0 {
			sctx, cancel = context.WithTimeout(ctx, o.Timeout)
		}
		t := time.Now()
		var (
			r   Result
			err error
		)
		o.progressf("== %s", name)
		switch name {
		case "storm":
			r, err = Storm(sctx, o, s.Storm)
		case "chaos":
			r, err = Chaos(sctx, o, s.Chaos)
		case "capacity":
			r, err = Capacity(sctx, o, s.Capacity)
		case "critical-path":
			r, err = CriticalPath(sctx, o, s.Critical)
		case "overhead":
			r, err = Overhead(sctx, o, s.Overhead)
		default:
			err = fmt.Errorf("unknown scenario %q (have %s)", name, strings.Join(Scenarios, ", "))
		}
		cancel()
		if r.Scenario == "" {
			r.Scenario = name
		}
		if err != nil {
			r.Failures = append(r.Failures, "did not complete: "+err.Error())
			r.Checks = append(r.Checks, Check{Name: "scenario completed", OK: false, Detail: err.Error()})
			r.finish(t)
		}
		o.progressf("== %s: %s in %.1fs %v", name, passWord(r.Pass), r.Seconds, r.Failures)
		out = append(out, r)
	}
	return out
}
