package pipeline_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/blobstore"
	"github.com/vmrescue/vmrescue/internal/dumpfile"
	"github.com/vmrescue/vmrescue/internal/harvest"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/intake"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// Paths on the simulated Windows volume (azsim.Files).
const (
	memoryDump    = "Windows/MEMORY.DMP"
	minidumpDir   = "Windows/Minidump/"
	patchedMarker = "vmrescue/patched-by-agent"
)

// fakeAgent stands in for the rescue agent behind Run Command until the simulated Windows disk
// joins the simulator. It checks what the bootstrap would check (the script is the bootstrap,
// every value arrives as a protected parameter, the binary downloaded through the read SAS has
// the SHA-256 given), works on the azsim.Files content of the disk at the request's LUN, and
// answers with real agent.Result values through the real result line, so the pipeline's parse
// path is the real one. Harvest uploads through the real harvest package to Azurite with the
// pipeline's SAS.
type fakeAgent struct {
	env *env

	mu   sync.Mutex
	runs []agent.Request
	// fail, when set for a command, is answered instead of doing the work.
	fail map[agent.Command]agent.Result
}

func (f *fakeAgent) requests() []agent.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]agent.Request(nil), f.runs...)
}

func (f *fakeAgent) setFail(c agent.Command, res *agent.Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail == nil {
		f.fail = map[agent.Command]agent.Result{}
	}
	if res == nil {
		delete(f.fail, c)
		return
	}
	f.fail[c] = *res
}

// Run implements azsim.RunCommandExecutor.
func (f *fakeAgent) Run(ctx context.Context, req azsim.RunCommandRequest) azsim.RunCommandResult {
	res := f.run(ctx, req)
	full, _ := json.MarshalIndent(res, "", "  ")
	out := "vmrescue bootstrap: agent verified\n" + string(full) + "\n" + res.Line() + "\n"
	code := int32(agent.ExitOK)
	switch {
	case res.Refused:
		code = agent.ExitRefused
	case !res.OK:
		code = agent.ExitFailed
	}
	return azsim.RunCommandResult{ExitCode: code, Output: out, Duration: time.Second}
}

func (f *fakeAgent) run(ctx context.Context, req azsim.RunCommandRequest) agent.Result {
	res := agent.Result{Version: agent.ResultVersion, Command: agent.CommandInspect}
	refuse := func(format string, args ...any) agent.Result {
		res.Refused, res.Error = true, fmt.Sprintf(format, args...)
		return res
	}
	if req.RunCommand.Script != agent.BootstrapScript {
		return refuse("the script is not the bootstrap")
	}
	if len(req.RunCommand.Parameters) != 0 {
		return refuse("values arrived as plain parameters: %v", req.RunCommand.Parameters)
	}
	url, _ := req.Param(agent.ParamAgentURL)
	sum, _ := req.Param(agent.ParamAgentSHA256)
	raw, _ := req.Param(agent.ParamAgentRequest)
	if got, err := download(ctx, url); err != nil {
		return refuse("agent download: %v", err)
	} else if got != sum {
		return refuse("agent SHA-256 mismatch: got %s, want %s", got, sum)
	}
	areq, err := agent.DecodeRequest([]byte(raw))
	if err != nil {
		return refuse("%v", err)
	}
	res.Command, res.IncidentID = areq.Command, areq.IncidentID
	f.mu.Lock()
	f.runs = append(f.runs, areq)
	failed, fail := f.fail[areq.Command]
	f.mu.Unlock()
	if fail {
		failed.Version, failed.Command, failed.IncidentID = agent.ResultVersion, areq.Command, areq.IncidentID
		return failed
	}
	var files *azsim.Files
	for _, d := range req.DataDisks {
		if int(d.LUN) == areq.LUN {
			files, _ = d.Content.(*azsim.Files)
		}
	}
	if files == nil {
		return refuse("no disk at LUN %d", areq.LUN)
	}
	inspect := func() {
		res.Dumps = &agent.DumpsResult{}
		if data, ok := files.Read(memoryDump); ok {
			df := agent.DumpFile{Path: `F:\Windows\MEMORY.DMP`, Size: int64(len(data)), Modified: time.Now().UTC()}
			if h, err := dumpfile.ParseBytes(data); err == nil {
				bc := h.BugCheck()
				df.BugCheck = &bc
			}
			res.Dumps.MemoryDump = &df
		}
	}
	switch areq.Command {
	case agent.CommandInspect:
		inspect()
		res.OK = true
	case agent.CommandPatch:
		inspect() // patch reads what inspect reads first
		if areq.UnlessDump && res.HasMemoryDump() {
			res.OK = true
			break
		}
		files.Write(patchedMarker, []byte("CrashDumpEnabled=1\nbootems=yes\n"))
		res.Patch = &agent.PatchResult{DumpType: agent.DumpComplete, CrashDumpEnabled: 1, DumpFile: `%SystemRoot%\MEMORY.DMP`,
			DumpVolume: "os", Reason: "the OS volume has room for a complete dump", ControlSets: []string{"ControlSet001"},
			RegistryChanges: 3, BCDChanges: 5, Verified: true}
		res.OK = true
	case agent.CommandHarvest:
		var srcs []harvest.Source
		minis := 0
		for _, p := range files.Paths() {
			if p != memoryDump && !strings.HasPrefix(p, minidumpDir) {
				continue
			}
			data, _ := files.Read(p)
			name := harvest.MemoryDumpBlob
			if p != memoryDump {
				name = harvest.MinidumpBlob(minis)
				minis++
			}
			src := harvest.Source{Name: name, Original: p, Size: int64(len(data)), Modified: time.Now().UTC(),
				Open: func() (harvest.ReaderAtCloser, error) { return nopCloser{bytes.NewReader(data)}, nil }}
			if h, err := dumpfile.ParseBytes(data); err == nil {
				bc := h.BugCheck()
				src.BugCheck, src.DumpType = &bc, h.Kind()
			}
			srcs = append(srcs, src)
		}
		if err := checkDumpSAS(areq.BlobSAS); err != nil {
			return refuse("dump SAS: %v", err)
		}
		up, err := harvest.NewPerBlob(areq.SASURL, areq.BlobSAS, harvest.Options{})
		if err != nil {
			return refuse("harvest destination: %v", err)
		}
		rep, err := up.Harvest(ctx, areq.IncidentID, srcs, time.Now())
		h := &agent.HarvestResult{Prefix: rep.Prefix, Manifest: rep.Manifest, Complete: rep.Complete, Files: len(srcs)}
		for _, fr := range rep.Files {
			h.Bytes += fr.Size
			h.BytesSent += fr.BytesSent
			if fr.Committed {
				h.FilesDone++
			}
			h.Uploaded = append(h.Uploaded, agent.HarvestedFile{Blob: fr.Blob, Size: fr.Size, SHA256: fr.SHA256})
		}
		res.Harvest = h
		if err != nil {
			res.Error = err.Error()
			return res
		}
		res.OK = true
	default:
		return refuse("command %s is not simulated", areq.Command)
	}
	return res
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// download fetches the agent through its SAS URL, as the bootstrap does, and hashes it.
func download(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET answered %s", resp.Status)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// synthDump is a dump whose header carries the VM's stop code.
func synthDump(code uint32) []byte {
	return dumpfile.Synthesize(dumpfile.Spec{BugCheckCode: code, Parameters: [4]uint64{0xFFFFFFFFC0000005, 0xFFFFF8026A1B2C3D, 0, 0}})
}

// contentFor seeds each fleet VM's OS disk: the volume description, and MEMORY.DMP when the fleet
// says a dump is already there.
func contentFor(s azsim.VMSpec) azsim.Content {
	files := map[string][]byte{"azsim/volume.txt": []byte(fmt.Sprintf("name=%s\nbugCheck=0x%08X\n", s.Name, uint32(s.BugCheck)))}
	if s.DumpPresent {
		files[memoryDump] = synthDump(uint32(s.BugCheck))
	}
	return azsim.NewFiles(files)
}

// onVMStarted plays the guest after a start: a patched VM that crashes on boot writes MEMORY.DMP
// (crash dumps are on now) and Resource Health raises VirtualMachineCrashed, which reaches intake
// as a signal on the active incident.
func (e *env) onVMStarted(vmID string) {
	defer func() {
		select {
		case e.started <- vmID:
		default:
		}
	}()
	vm, ok := e.sim.State().VM(vmID)
	if !ok || vm.Rescue {
		return
	}
	c, ok := e.sim.State().DiskContent(vm.OSDiskID)
	files, _ := c.(*azsim.Files)
	if !ok || files == nil {
		return
	}
	if _, patched := files.Read(patchedMarker); !patched {
		return
	}
	switch vm.Spec.Behaviour {
	case azsim.BehaviourHealthyAfterPatch:
		return
	case azsim.BehaviourCrashWithoutDump:
	default:
		files.Write(memoryDump, synthDump(uint32(vm.Spec.BugCheck)))
	}
	id, err := resourceid.ParseVM(vmID)
	if err != nil {
		e.t.Errorf("crash of %s: %v", vmID, err)
		return
	}
	evID := "crash-" + vm.Name + "-" + time.Now().Format(time.RFC3339Nano)
	if _, err := e.intake.Open(context.Background(), intake.Request{
		VM: id, Signal: true, IncidentID: intake.AlertIncidentID(evID, time.Now()),
		Trigger: incident.Trigger{Kind: incident.TriggerAlert, EventID: evID, Annotation: intake.AnnotationCrashed},
	}); err != nil {
		e.t.Errorf("crash alert for %s: %v", vm.Name, err)
	}
}

// checkDumpSAS holds the pipeline to the dump SAS it must hand out: one per blob a harvest may
// write, each scoped to that blob, create and write only, living at most two hours.
func checkDumpSAS(blobSAS map[string]string) error {
	names := harvest.BlobNames()
	if len(blobSAS) != len(names) {
		return fmt.Errorf("%d blob SAS, want %d", len(blobSAS), len(names))
	}
	for _, name := range names {
		q, err := url.ParseQuery(blobSAS[name])
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		se, err := time.Parse(time.RFC3339, q.Get("se"))
		switch {
		case err != nil:
			return fmt.Errorf("%s: expiry %q: %v", name, q.Get("se"), err)
		case q.Get("sr") != "b" || q.Get("sp") != "cw":
			return fmt.Errorf("%s: resource %q permissions %q, want b and cw", name, q.Get("sr"), q.Get("sp"))
		case time.Until(se) > blobstore.MaxDumpSASLifetime:
			return fmt.Errorf("%s: valid until %s, beyond two hours", name, se)
		}
	}
	return nil
}
