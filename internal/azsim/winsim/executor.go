package winsim

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/agent/wintest"
	"github.com/vmrescue/vmrescue/internal/azsim"
)

var _ azsim.RunCommandExecutor = (*World)(nil)

// rescueMachine is the simulated Windows of one rescue VM.
type rescueMachine struct {
	id       string
	win      *wintest.Machine
	attached map[int]*Disk // by LUN; changed under World.attachMu

	mu     sync.Mutex
	agents map[string]bool // SHA-256 of the agent binaries the bootstrap has cached
}

// machine returns the rescue VM's simulated Windows, making it on first use.
func (w *World) machine(vmID string) *rescueMachine {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := strings.ToLower(vmID)
	m, ok := w.machines[k]
	if !ok {
		m = &rescueMachine{id: vmID, win: wintest.NewMachine(), attached: map[int]*Disk{}, agents: map[string]bool{}}
		w.machines[k] = m
	}
	return m
}

// Exit code of a script that throws (powershell -File with $ErrorActionPreference = 'Stop').
const exitThrown = 1

var sha256Hex = regexp.MustCompile(`^[0-9A-Fa-f]{64}$`)

// Run implements azsim.RunCommandExecutor: it plays the rescue VM running vmrescue's bootstrap
// (agent.BootstrapScript). It refuses any other script, checks the parameters as the bootstrap
// does (AgentSha256 64 hex digits, AgentUrl https), downloads the agent from AgentUrl and checks
// its SHA-256 (once per rescue VM and hash, as the bootstrap caches it; see AgentCheck), makes
// the rescue VM's simulated Windows see exactly the data disks ARM has attached, at their LUNs,
// and runs the real agent as `handler agent --request-env` with AgentRequest in its environment.
// The output is the agent's stdout (the indented result, then the result line), the error its
// log; the exit code is the agent's. The one deviation from the bootstrap: AgentUrl may be
// plain http on a loopback host, where local runs keep Azurite.
func (w *World) Run(ctx context.Context, req azsim.RunCommandRequest) azsim.RunCommandResult {
	if !req.VM.Rescue {
		return failed(fmt.Sprintf("azsim: VM %s is not a rescue VM; the simulator runs vmrescue's bootstrap only on the rescue pool", req.VM.Name))
	}
	if normalizeScript(req.RunCommand.Script) != normalizeScript(agent.BootstrapScript) {
		return failed("azsim: the simulated rescue VM runs vmrescue's bootstrap script only (source.script differs from agent.BootstrapScript)")
	}
	m := w.machine(req.VM.ID)
	agentURL, _ := req.Param(agent.ParamAgentURL)
	sum, _ := req.Param(agent.ParamAgentSHA256)
	request, _ := req.Param(agent.ParamAgentRequest)

	var d time.Duration
	if !sha256Hex.MatchString(sum) {
		return thrown("AgentSha256 must be 64 hex digits", d)
	}
	if !allowedAgentURL(agentURL) {
		return thrown("AgentUrl must be an https URL", d)
	}
	if w.opts.AgentCheck == AgentDownload {
		fetched, err := w.fetchAgent(ctx, m, agentURL, sum)
		if fetched {
			d += w.timing.base(LatencyAgentDownload)
		}
		if err != nil {
			return thrown(err.Error(), d)
		}
	}

	disks := w.sync(m, req.DataDisks)
	var stdout, stderr bytes.Buffer
	a := &agent.Agent{Win: &guardedWindows{m: m.win, disks: disks}, Log: slog.New(slog.NewTextHandler(&stderr, nil))}
	getenv := func(k string) string {
		if k == agent.RequestEnv {
			return request
		}
		return ""
	}
	code := a.CLI(ctx, []string{"--request-env"}, getenv, &stdout, &stderr)
	d += w.agentDuration(request, stdout.String())
	return azsim.RunCommandResult{ExitCode: int32(code), Output: stdout.String(), Error: stderr.String(), Duration: d}
}

// agentDuration is the agent's run time at time scale 1: the command's figure, and for harvest
// the upload of the real dump sizes.
func (w *World) agentDuration(request, output string) time.Duration {
	var r struct {
		Command string `json:"command"`
	}
	_ = json.Unmarshal([]byte(request), &r)
	d := w.timing.base(LatencyAgentPrefix + r.Command)
	if agent.Command(r.Command) != agent.CommandHarvest {
		return d
	}
	res, err := agent.ParseResult(output)
	if err != nil || res.Harvest == nil {
		return d
	}
	var real int64
	for _, f := range res.Harvest.Uploaded {
		n := f.Size
		if strings.EqualFold(agent.BaseName(strings.ReplaceAll(f.Blob, "/", `\`)), "MEMORY.DMP") {
			n = int64(float64(n) / w.opts.DumpScale)
		}
		real += n
	}
	return d + w.timing.perGiB(LatencyHarvestPerGiB, real)
}

func failed(msg string) azsim.RunCommandResult {
	return azsim.RunCommandResult{ExitCode: exitThrown, Error: msg + "\r\n"}
}

// thrown is the bootstrap stopping at a throw: PowerShell's error record on stderr, exit 1.
func thrown(msg string, d time.Duration) azsim.RunCommandResult {
	return azsim.RunCommandResult{ExitCode: exitThrown, Duration: d, Error: fmt.Sprintf(
		"%s\r\nAt C:\\Packages\\Plugins\\Microsoft.CPlat.Core.RunCommandHandlerWindows\\script.ps1\r\n"+
			"    + CategoryInfo          : OperationStopped: (%s:String) [], RuntimeException\r\n"+
			"    + FullyQualifiedErrorId : %s\r\n", msg, msg, msg)}
}

func normalizeScript(s string) string {
	return strings.TrimSpace(strings.ReplaceAll(s, "\r\n", "\n"))
}

// allowedAgentURL is the bootstrap's check (https), widened to plain http on loopback.
func allowedAgentURL(raw string) bool {
	if strings.HasPrefix(raw, "https://") {
		_, err := url.Parse(raw)
		return err == nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" {
		return false
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// fetchAgent is the bootstrap's download: unless the binary with this hash is cached on the
// rescue VM, GET the URL and compare its SHA-256 (PowerShell's -ne ignores case). fetched says
// whether a download happened.
func (w *World) fetchAgent(ctx context.Context, m *rescueMachine, rawURL, sum string) (fetched bool, err error) {
	key := strings.ToLower(sum)
	m.mu.Lock()
	cached := m.agents[key]
	m.mu.Unlock()
	if cached {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, agentDownloadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return false, fmt.Errorf("Invoke-WebRequest : %v", err)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("Invoke-WebRequest : Unable to connect to the remote server (%v)", redactErr(err, rawURL))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return true, fmt.Errorf("Invoke-WebRequest : The remote server returned an error: (%d) %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return true, fmt.Errorf("Invoke-WebRequest : %v", redactErr(err, rawURL))
	}
	got := strings.ToUpper(hex.EncodeToString(h.Sum(nil)))
	if !strings.EqualFold(got, sum) {
		return true, fmt.Errorf("agent SHA-256 mismatch: got %s", got)
	}
	m.mu.Lock()
	m.agents[key] = true
	m.mu.Unlock()
	return true, nil
}

// redactErr keeps a SAS out of an error message.
func redactErr(err error, rawURL string) string {
	return strings.ReplaceAll(err.Error(), rawURL, agent.RedactSAS(rawURL))
}

// sync makes the machine see the disks ARM has attached to the rescue VM, at their LUNs: a disk
// detached in ARM is detached, a new one attached (it comes up offline, as under Azure's SAN
// policy), one still attached keeps its state. A disk still attached to another rescue VM's
// machine (detached there in ARM since) is moved. Content that is not a simulated Windows disk is
// not seen. It returns the attached disks in lock order.
func (w *World) sync(m *rescueMachine, want []azsim.AttachedDisk) []*Disk {
	w.attachMu.Lock()
	defer w.attachMu.Unlock()
	desired := map[int]*Disk{}
	for _, a := range want {
		if d, ok := a.Content.(*Disk); ok {
			desired[int(a.LUN)] = d
		}
	}
	for lun, d := range m.attached {
		if desired[lun] != d {
			w.detachLocked(m, lun, d)
		}
	}
	for lun, d := range desired {
		if m.attached[lun] == d {
			continue
		}
		w.mu.Lock()
		at, elsewhere := w.where[d]
		w.mu.Unlock()
		if elsewhere {
			w.detachLocked(at.m, at.lun, d)
		}
		var err error
		d.View(func(wd *wintest.Disk) { _, err = m.win.Attach(wd, lun) })
		if err != nil {
			w.log.Error("winsim: attach to the rescue VM's Windows", "vm", m.id, "lun", lun, "err", err)
			continue
		}
		m.attached[lun] = d
		w.mu.Lock()
		w.where[d] = attachment{m: m, lun: lun}
		w.mu.Unlock()
	}
	out := make([]*Disk, 0, len(m.attached))
	for _, d := range m.attached {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *Disk) int { return cmp.Compare(a.id, b.id) })
	return out
}

func (w *World) detachLocked(m *rescueMachine, lun int, d *Disk) {
	d.View(func(*wintest.Disk) { m.win.Detach(lun) })
	delete(m.attached, lun)
	w.mu.Lock()
	delete(w.where, d)
	w.mu.Unlock()
}

// guardedWindows is the machine as the agent sees it, each call made with the attached disks
// locked, so that the simulator may hash or clone a disk while the agent works on it.
type guardedWindows struct {
	m     *wintest.Machine
	disks []*Disk // in id order
}

var _ agent.Windows = (*guardedWindows)(nil)

func (g *guardedWindows) lock() func() {
	for _, d := range g.disks {
		d.mu.Lock()
	}
	return func() {
		for i := len(g.disks) - 1; i >= 0; i-- {
			g.disks[i].mu.Unlock()
		}
	}
}

func (g *guardedWindows) Reg(ctx context.Context, args ...string) (string, error) {
	defer g.lock()()
	return g.m.Reg(ctx, args...)
}

func (g *guardedWindows) Bcdedit(ctx context.Context, args ...string) (string, error) {
	defer g.lock()()
	return g.m.Bcdedit(ctx, args...)
}

func (g *guardedWindows) ListDisks(ctx context.Context) ([]byte, error) {
	defer g.lock()()
	return g.m.ListDisks(ctx)
}

func (g *guardedWindows) SetDiskOffline(ctx context.Context, disk int, offline bool) error {
	defer g.lock()()
	return g.m.SetDiskOffline(ctx, disk, offline)
}

func (g *guardedWindows) SetDiskReadOnly(ctx context.Context, disk int, readOnly bool) error {
	defer g.lock()()
	return g.m.SetDiskReadOnly(ctx, disk, readOnly)
}

func (g *guardedWindows) SetDiskSignature(ctx context.Context, disk int, signature uint32) error {
	defer g.lock()()
	return g.m.SetDiskSignature(ctx, disk, signature)
}

func (g *guardedWindows) SetDiskGUID(ctx context.Context, disk int, guid string) error {
	defer g.lock()()
	return g.m.SetDiskGUID(ctx, disk, guid)
}

func (g *guardedWindows) AddAccessPath(ctx context.Context, disk, partition int, letter string) error {
	defer g.lock()()
	return g.m.AddAccessPath(ctx, disk, partition, letter)
}

func (g *guardedWindows) RemoveAccessPath(ctx context.Context, disk, partition int, letter string) error {
	defer g.lock()()
	return g.m.RemoveAccessPath(ctx, disk, partition, letter)
}

func (g *guardedWindows) UsedLetters(ctx context.Context) ([]string, error) {
	defer g.lock()()
	return g.m.UsedLetters(ctx)
}

func (g *guardedWindows) FreeSpace(ctx context.Context, letter string) (int64, int64, error) {
	defer g.lock()()
	return g.m.FreeSpace(ctx, letter)
}

func (g *guardedWindows) Stat(path string) (agent.FileInfo, error) {
	defer g.lock()()
	return g.m.Stat(path)
}

func (g *guardedWindows) ReadDir(path string) ([]agent.FileInfo, error) {
	defer g.lock()()
	return g.m.ReadDir(path)
}

func (g *guardedWindows) Open(path string) (agent.File, error) {
	defer g.lock()()
	return g.m.Open(path)
}

func (g *guardedWindows) ReadFile(path string) ([]byte, error) {
	defer g.lock()()
	return g.m.ReadFile(path)
}

func (g *guardedWindows) WriteFile(path string, data []byte) error {
	defer g.lock()()
	return g.m.WriteFile(path, data)
}

func (g *guardedWindows) CopyFile(ctx context.Context, src, dst string) error {
	defer g.lock()()
	return g.m.CopyFile(ctx, src, dst)
}

func (g *guardedWindows) MkdirAll(path string) error {
	defer g.lock()()
	return g.m.MkdirAll(path)
}

func (g *guardedWindows) Remove(path string) error {
	defer g.lock()()
	return g.m.Remove(path)
}
