// Package demo runs vmrescue end to end on one machine: Azurite, the Azure simulator and the
// local Functions host with the real handler as its child. It posts Resource Health alerts the way
// Event Grid does, follows the incident, and reports what came out: outcome, bug check, dump,
// ticket, the audit chain, and any resource left behind. `make demo` and the end-to-end tests use
// it.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/vmrescue/vmrescue/internal/api"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azsim/winsim"
	"github.com/vmrescue/vmrescue/internal/bugcheck"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/intake"
	"github.com/vmrescue/vmrescue/internal/localhost"
)

// DefaultTimeScale runs the simulated Azure fast enough for a demo of about a minute.
const DefaultTimeScale = 0.01

// Timeouts.
const (
	stopTimeout = 45 * time.Second
	pollEvery   = 100 * time.Millisecond
	postTimeout = 30 * time.Second
	postRetry   = 100 * time.Millisecond // first pause before posting an event again
)

// Options configure an Env.
type Options struct {
	Fleet     *azsim.Fleet // nil: the default fleet
	TimeScale float64      // simulated Azure latencies and scheduled waits; see handler local
	Faults    azsim.FaultConfig
	AppDir    string    // host.json and functions/; empty: found from the working directory
	Handler   string    // handler executable; empty: this executable
	Output    io.Writer // the host's and the handler's logs; nil discards them
	// Env adds settings for the handler child (for example VMRESCUE_REPRO_WAIT).
	Env []string
	// ConfigureSim adjusts the simulator before it starts (the Windows disks, the crash loop).
	ConfigureSim func(*azsim.Options, *localhost.Stack)
	// AzuriteURL reuses a running Azurite instead of starting one.
	AzuriteURL string
}

// Env is a running local stack.
type Env struct {
	Stack *localhost.Stack
	Fleet *azsim.Fleet
	blobs *azblob.Client
	trail *audit.Store
	// reproWait is the handler's wait for the reproduced crash, at the host's time scale.
	reproWait time.Duration
}

// Start brings the stack up and waits until the handler is ready.
func Start(ctx context.Context, opts Options) (*Env, error) {
	fleet := opts.Fleet
	if fleet == nil {
		fleet = azsim.DefaultFleet()
	}
	dir := opts.AppDir
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		if dir, err = localhost.FindAppDir(wd); err != nil {
			return nil, err
		}
	}
	out := opts.Output
	if out == nil {
		out = io.Discard
	}
	st, err := localhost.StartStack(ctx, localhost.StackOptions{
		Host: localhost.Options{
			AppDir: dir, Addr: "127.0.0.1:0", HandlerPath: opts.Handler, TimeScale: opts.TimeScale,
			Output: out, Env: opts.Env,
		},
		Fleet:           fleet,
		Sim:             azsim.Options{TimeScale: opts.TimeScale, Faults: opts.Faults},
		ConfigureSim:    opts.ConfigureSim,
		AzuriteURL:      opts.AzuriteURL,
		InstallAzurite:  true,
		SimulateWindows: true,
	})
	if err != nil {
		return nil, err
	}
	blobs, err := azblob.NewClientFromConnectionString(st.StorageConnectionString, nil)
	if err != nil {
		_ = st.Stop(context.Background())
		return nil, err
	}
	return &Env{Stack: st, Fleet: fleet, blobs: blobs, trail: audit.New(blobs, audit.DefaultContainer),
		reproWait: reproWait(opts.Env, opts.TimeScale)}, nil
}

// Stop stops everything Start started.
func (e *Env) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	return e.Stack.Stop(ctx)
}

// PostCrash posts a VirtualMachineCrashed Resource Health event for a fleet VM to the host's Event
// Grid webhook, as Event Grid does, and returns the incident id the alert maps to. Like Event
// Grid it retries an answer other than 2xx, 400, 401, 403 or 413 (the handler answers 5xx to a
// transient failure, such as storage not ready yet), here after a short pause, within postTimeout.
func (e *Env) PostCrash(ctx context.Context, vmID, eventID string, at time.Time, schema string) (string, error) {
	body, err := winsim.CrashEvent(vmID, eventID, at, schema)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, postTimeout)
	defer cancel()
	post := winsim.PostTo(e.Stack.Host.URL()+"/runtime/webhooks/eventgrid?functionName=HealthAlert", nil, schema)
	for attempt := 1; ; attempt++ {
		err = post(ctx, body, attempt)
		var perm *winsim.PermanentError
		if err == nil || errors.As(err, &perm) {
			break
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("post event %s: %w (%w)", eventID, err, ctx.Err())
		case <-time.After(postRetry << min(attempt-1, 4)):
		}
	}
	if err != nil {
		return "", fmt.Errorf("post event %s: %w", eventID, err)
	}
	return intake.AlertIncidentID(eventID, at), nil
}

// Wait polls the incident's state until it is no longer active, or ctx ends.
func (e *Env) Wait(ctx context.Context, incidentID string) (string, error) {
	for {
		state, err := e.trail.State(ctx, incidentID)
		if err == nil && state != incident.StateActive {
			return state, nil
		}
		if err != nil && !errors.Is(err, audit.ErrNotFound) {
			return "", err
		}
		select {
		case <-ctx.Done():
			return state, fmt.Errorf("incident %s still %q: %w", incidentID, state, ctx.Err())
		case <-time.After(pollEvery):
		}
	}
}

// Records returns the incident's audit records; audit.ErrNotFound when it has none.
func (e *Env) Records(ctx context.Context, incidentID string) ([]audit.Record, error) {
	return e.trail.Read(ctx, incidentID)
}

// Report is what an incident left behind.
type Report struct {
	IncidentID    string             `json:"incidentId"`
	VM            string             `json:"vm"`
	State         string             `json:"state"`
	Outcome       string             `json:"outcome"`
	BugCheck      *incident.BugCheck `json:"bugCheck,omitempty"`
	DumpBlob      string             `json:"dumpBlob,omitempty"`
	DumpSize      int64              `json:"dumpSize,omitempty"`
	Manifest      bool               `json:"manifest"`
	TicketID      string             `json:"ticketId,omitempty"`
	ChainVerified bool               `json:"chainVerified"`
	ChainError    string             `json:"chainError,omitempty"`
	Records       int                `json:"records"`
	Stages        []Stage            `json:"stages"`
	// LeftBehind lists resources tagged with the incident that should be gone; Retained lists the
	// backup snapshot, which stays until its retention ends.
	LeftBehind []string `json:"leftBehind"`
	Retained   []string `json:"retained"`
	// InUse lists tagged disks that a VM uses: the patched disk the VM now boots from.
	InUse []string `json:"inUse"`
	// OriginalsChanged lists original OS disks whose content changed: always a bug.
	OriginalsChanged []string `json:"originalsChanged"`
	Violations       []string `json:"violations"`
	// Elapsed is the end-to-end time: from the alert's delivery to the end of the invocation
	// that ended the incident (its last one while the incident was still active). A message
	// delivered after that, such as the scheduled harvest that a crash alert brought forward,
	// is absorbed without work and nothing waits on it: it does not count.
	Elapsed float64 `json:"elapsedSeconds"`
	// CriticalPath is the scaled sum of the simulated Azure operations on the incident's critical
	// path in that time (see criticalPath); CriticalPathRatio is Elapsed over it.
	CriticalPath      float64 `json:"criticalPathSeconds"`
	CriticalPathRatio float64 `json:"criticalPathRatio"`
	// Overhead splits Elapsed minus CriticalPath.
	Overhead Overhead `json:"overhead"`
}

// Stage is one stage's timing in the report.
type Stage struct {
	Function   string  `json:"function"`
	Deliveries int     `json:"deliveries"`
	Seconds    float64 `json:"seconds"` // from the first delivery's start to the last one's end
}

// OK reports whether the incident ended as a remediation should: closed, chain verified, nothing
// left behind, no original disk touched.
func (r Report) OK() bool {
	return r.State == incident.StateClosed && r.ChainVerified && len(r.LeftBehind) == 0 &&
		len(r.OriginalsChanged) == 0 && len(r.Violations) == 0
}

// Report gathers the incident's outcome from the audit trail, Azurite and the simulator.
func (e *Env) Report(ctx context.Context, incidentID string) (Report, error) {
	r := Report{IncidentID: incidentID, LeftBehind: []string{}, Retained: []string{}, InUse: []string{},
		OriginalsChanged: []string{}, Violations: []string{}}
	recs, err := e.trail.Read(ctx, incidentID)
	if err != nil {
		return r, err
	}
	state, err := e.trail.State(ctx, incidentID)
	if err != nil {
		return r, err
	}
	v := api.Summarize(incidentID, state, recs)
	r.VM, r.State, r.Outcome, r.Records = v.VMResourceID, v.State, v.Outcome, len(recs)
	r.ChainVerified, r.ChainError = v.ChainVerified, v.ChainError
	r.BugCheck, r.TicketID = v.Artifacts.BugCheck, v.Artifacts.TicketID
	if r.BugCheck != nil && r.BugCheck.Name == "" {
		r.BugCheck.Name = bugcheck.Name(r.BugCheck.Code)
	}

	// The dump as stored in Azurite, whatever the artifacts say.
	pager := e.blobs.NewListBlobsFlatPager("dumps", &azblob.ListBlobsFlatOptions{Prefix: ptr(incidentID + "/")})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			break // no dumps container: nothing harvested
		}
		for _, b := range page.Segment.BlobItems {
			switch {
			case strings.HasSuffix(*b.Name, "/MEMORY.DMP"):
				r.DumpBlob, r.DumpSize = "dumps/"+*b.Name, *b.Properties.ContentLength
			case strings.HasSuffix(*b.Name, "/manifest.json"):
				r.Manifest = true
			}
		}
	}

	st := e.Stack.Sim.State()
	for _, id := range st.Tagged(incident.TagIncident) {
		role, owner, usedBy := e.tags(id)
		switch {
		case owner != incidentID:
		case role == incident.RoleBackupSnapshot:
			r.Retained = append(r.Retained, id)
		case usedBy != "" && role == incident.RoleRescueDisk && isOSDiskOf(st, usedBy, id):
			r.InUse = append(r.InUse, id)
		default:
			r.LeftBehind = append(r.LeftBehind, id)
		}
	}
	r.OriginalsChanged = append(r.OriginalsChanged, st.ChangedOriginalDisks()...)
	for _, viol := range st.Violations() {
		r.Violations = append(r.Violations, fmt.Sprint(viol))
	}

	invs := e.Stack.Host.Invocations(0)
	byFn := map[string]*Stage{}
	for _, inv := range invs {
		if inv.IncidentID != incidentID {
			continue
		}
		s := byFn[inv.Function]
		if s == nil {
			s = &Stage{Function: inv.Function}
			byFn[inv.Function] = s
		}
		s.Deliveries++
		s.Seconds += inv.Duration.Seconds()
	}
	for _, fn := range []string{"Snapshot", "RescueAttach", "OfflinePatch", "ReattachReboot", "HarvestDump", "SupportTicket", "Failed"} {
		if s := byFn[fn]; s != nil {
			r.Stages = append(r.Stages, *s)
		}
	}
	if w := windowOf(invs, recs, incidentID, r.VM); len(w.timed) > 0 {
		r.Elapsed = w.last.Sub(w.first).Seconds()
		calls, ops := e.Stack.Sim.CallLog(), st.Operations()
		path := pathSpans(calls, ops, w.alerts, incidentID, r.VM, e.reproWait, w.first, w.last)
		r.CriticalPath = total(path).Seconds()
		if r.CriticalPath > 0 {
			r.CriticalPathRatio = r.Elapsed / r.CriticalPath
		}
		r.Overhead = overhead(path, w.timed, ops, calls, incidentID, w.first, w.last)
	}
	return r, nil
}

// tags returns the vmrescue role and incident tags of a simulated resource, and for a disk the
// VM it is attached to.
func (e *Env) tags(id string) (role, owner, usedBy string) {
	st := e.Stack.Sim.State()
	var tags map[string]string
	if d, ok := st.Disk(id); ok {
		tags, usedBy = d.Tags, d.ManagedBy
	} else if s, ok := st.Snapshot(id); ok {
		tags = s.Tags
	} else if vm, ok := st.VM(id); ok {
		tags = vm.Tags
	}
	return tags[incident.TagRole], tags[incident.TagIncident], usedBy
}

// isOSDiskOf reports whether diskID is the OS disk of vmID.
func isOSDiskOf(st *azsim.State, vmID, diskID string) bool {
	vm, ok := st.VM(vmID)
	return ok && strings.EqualFold(vm.OSDiskID, diskID)
}

// Print writes the report for a person.
func (r Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\nincident      %s\n", r.IncidentID)
	fmt.Fprintf(w, "vm            %s\n", r.VM)
	fmt.Fprintf(w, "outcome       %s (%s)\n", orDash(r.Outcome), r.State)
	if r.BugCheck != nil {
		fmt.Fprintf(w, "bug check     0x%08X %s\n", r.BugCheck.Code, r.BugCheck.Name)
	} else {
		fmt.Fprintln(w, "bug check     -")
	}
	if r.DumpBlob != "" {
		fmt.Fprintf(w, "dump          %s (%s, manifest %v)\n", r.DumpBlob, bytesString(r.DumpSize), r.Manifest)
	} else {
		fmt.Fprintln(w, "dump          -")
	}
	fmt.Fprintf(w, "ticket        %s\n", orDash(r.TicketID))
	chain := "verified"
	if !r.ChainVerified {
		chain = "BROKEN: " + r.ChainError
	}
	fmt.Fprintf(w, "audit chain   %d records, %s\n", r.Records, chain)
	fmt.Fprintf(w, "left behind   %s\n", listOrNone(r.LeftBehind))
	fmt.Fprintf(w, "retained      %s\n", listOrNone(r.Retained))
	fmt.Fprintf(w, "in use        %s\n", listOrNone(r.InUse))
	if len(r.OriginalsChanged)+len(r.Violations) > 0 {
		fmt.Fprintf(w, "SAFETY        original disks changed: %v; violations: %v\n", r.OriginalsChanged, r.Violations)
	}
	for _, s := range r.Stages {
		fmt.Fprintf(w, "  %-16s %2d deliveries  %7.2fs\n", s.Function, s.Deliveries, s.Seconds)
	}
	fmt.Fprintf(w, "end to end    %.2fs\n", r.Elapsed)
	fmt.Fprintf(w, "critical path %.2fs of simulated Azure time (end to end is %.2f×)\n", r.CriticalPath, r.CriticalPathRatio)
	o := r.Overhead
	fmt.Fprintf(w, "the rest      %.2fs between invocations, %.2fs noticing finished operations, %.2fs in invocations\n",
		o.HandOffSeconds, o.NoticeSeconds, o.InStageSeconds)
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return strings.Join(s, ", ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d bytes", n)
}

func ptr[T any](v T) *T { return &v }
