package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/blobstore"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/lock"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"github.com/vmrescue/vmrescue/internal/runcommand"
)

// agentUploadTimeout bounds the first upload of the agent binary to the tools container.
const agentUploadTimeout = 10 * time.Minute

// agentFile is the agent binary on local disk.
type agentFile struct {
	path   string
	sha256 string
	size   int64
}

// AgentBlobName is the name of the agent binary in the tools container: its SHA-256, so that a
// new build never overwrites a binary a running bootstrap may be downloading.
func AgentBlobName(sha256Hex string) string { return "handler-agent/" + sha256Hex + ".exe" }

// agentBinary hashes the agent binary once per process.
func (p *Pipeline) agentBinary() (agentFile, error) {
	p.agentOnce.Do(func() {
		path := p.AgentPath
		if !filepath.IsAbs(path) {
			if exe, err := os.Executable(); err == nil {
				if _, err := os.Stat(path); err != nil {
					path = filepath.Join(filepath.Dir(exe), path)
				}
			}
		}
		f, err := os.Open(path)
		if err != nil {
			p.agentErr = fault.Terminal(fmt.Errorf("agent binary: %w", err))
			return
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			p.agentErr = fmt.Errorf("agent binary: %w", err)
			return
		}
		p.agent = agentFile{path: path, sha256: hex.EncodeToString(h.Sum(nil)), size: n}
	})
	return p.agent, p.agentErr
}

// agentURL uploads the agent binary to the tools container under its SHA-256 the first time it is
// needed (ensureAgentBlob), and returns a short-lived read SAS URL for it and the hash the
// bootstrap checks.
func (p *Pipeline) agentURL(ctx context.Context) (string, string, error) {
	a, name, err := p.ensureAgentBlob(ctx)
	if err != nil {
		return "", "", err
	}
	u, err := p.Signer.BlobURL(ctx, p.Config.ToolsContainer, name, sas.BlobPermissions{Read: true}, agentSASLifetime)
	if err != nil {
		return "", "", err
	}
	return u, a.sha256, nil
}

// runLog is the blob of a Run Command's output, under the incident's prefix in the dumps
// container.
func runLog(incidentID, name, ext string) string { return incidentID + "/runs/" + name + ext }

// runAgent runs the rescue agent on a rescue VM through a managed Run Command named after the
// incident and the step, and returns its parsed result. A Run Command of that name that already
// ran (an earlier attempt) is read instead of run again; one still running is waited for, and
// after agentBudget the stage runs again later. The Run Command is deleted once its result is
// read. Values go in as protected parameters, never as script text.
//
// A VM runs one Run Command at a time. A new run first takes the rescue VM's agent slot (slots.go),
// waiting in line for it (wake.go), and reads the VM's Run Commands to see that none is executing;
// when either is still taken the stage waits for it by a scheduled message, without sending ARM a
// write that would be refused. The slot is given back once the result is read.
func (p *Pipeline) runAgent(ctx context.Context, r *run, rescueVMID, step string, req agent.Request) (agent.Result, error) {
	rescue, err := resourceid.ParseVM(rescueVMID)
	if err != nil {
		return agent.Result{}, fault.Terminal(fmt.Errorf("rescue VM: %w", err))
	}
	name := incident.RunCommandName(r.msg.IncidentID, step)
	rcID := rescue.String() + "/runCommands/" + name
	outBlob := runLog(r.msg.IncidentID, name, ".log")

	if r.dry {
		_ = r.write(ctx, "VirtualMachineRunCommands.BeginCreateOrUpdate", rcID, nil)
		_ = r.write(ctx, "VirtualMachineRunCommands.BeginDelete", rcID, nil)
		return agent.Result{Version: agent.ResultVersion, Command: req.Command, OK: true, IncidentID: r.msg.IncidentID}, nil
	}

	ex, exists, err := p.getRun(ctx, rescue, name)
	if err != nil {
		return agent.Result{}, err
	}
	if exists && ex.Running() {
		if ex, err = p.awaitRun(ctx, rescue, name, agentBudget); err != nil {
			return agent.Result{}, err
		}
	}
	if exists && ex.Finished() {
		if res, err := p.readResult(ctx, r, outBlob, ex, nil); err == nil && res.Command == req.Command &&
			(res.IncidentID == "" || res.IncidentID == r.msg.IncidentID) {
			if err := r.found(ctx, "VirtualMachineRunCommands.BeginCreateOrUpdate", rcID); err != nil {
				return agent.Result{}, err
			}
			if err := p.releaseSlot(ctx, r, lock.SlotAgent, rescue.String()); err != nil {
				return agent.Result{}, err
			}
			return res, r.deleteRun(ctx, rescue, name, rcID)
		}
	}

	// A patch goes before a harvest (wake.go): the patched incident has the longer way to go.
	ok, holder, err := p.awaitSlot(ctx, r, lock.SlotAgent, rescue.String(), r.stage == incident.StageOfflinePatch, agentSlotHold, nil)
	if err != nil {
		return agent.Result{}, fmt.Errorf("agent slot of %s: %w", rescue.Name, err)
	}
	if !ok {
		return agent.Result{}, &waitError{reason: fmt.Sprintf("rescue VM %s is running another agent (incident %s holds its agent slot; %s waits)",
			rescue.Name, holder.IncidentID, step), delay: agentSlotWait, unbounded: true}
	}
	// The slot is the incident's from here until the result is read. It is given back at once
	// when the Run Command was refused or never sent; after a submission whose outcome is unknown
	// it is kept, and the retry finds the Run Command running or finished, or submits it again.
	keepSlot := false
	res, err := p.submitAgent(ctx, r, rescue, name, step, req, &keepSlot)
	if err != nil {
		if !keepSlot {
			if rerr := p.releaseSlot(ctx, r, lock.SlotAgent, rescue.String()); rerr != nil {
				r.log.Warn("agent slot not given back: it is taken over once stale", "rescueVm", rescue.Name, "err", rerr)
			}
		}
		return agent.Result{}, err
	}
	if err := p.releaseSlot(ctx, r, lock.SlotAgent, rescue.String()); err != nil {
		return agent.Result{}, err
	}
	return res, r.deleteRun(ctx, rescue, name, rcID)
}

// submitAgent submits the agent's Run Command on a rescue VM whose agent slot the incident holds,
// waits for it and reads its result. When it fails, *keepSlot tells whether the incident keeps
// the slot: its Run Command may have started (the PUT was sent and not refused), or it is next and
// waits for the VM.
func (p *Pipeline) submitAgent(ctx context.Context, r *run, rescue resourceid.ID, name, step string, req agent.Request, keepSlot *bool) (agent.Result, error) {
	rcID := rescue.String() + "/runCommands/" + name
	outBlob, errBlob := runLog(r.msg.IncidentID, name, ".log"), runLog(r.msg.IncidentID, name, ".err")
	// Read before the write: a Run Command of anyone else still executing would have the PUT
	// refused (a write spent); the slot has it wait instead.
	if other, err := p.runningOn(ctx, rescue, name); err != nil {
		return agent.Result{}, err
	} else if other != "" {
		*keepSlot = true // this incident runs next
		return agent.Result{}, &waitError{reason: fmt.Sprintf("rescue VM %s is running another agent (Run Command %s; %s waits)", rescue.Name, other, step),
			delay: agentSlotWait, unbounded: true}
	}
	agentURL, sum, err := p.agentURL(ctx)
	if err != nil {
		return agent.Result{}, err
	}
	params, err := agent.BootstrapParameters(agentURL, sum, req)
	if err != nil {
		return agent.Result{}, fault.Terminal(fmt.Errorf("agent request: %w", err))
	}
	for _, b := range []string{outBlob, errBlob} {
		if err := p.Blobs.ResetAppendBlob(ctx, p.Config.DumpsContainer, b); err != nil {
			return agent.Result{}, err
		}
	}
	logPerms := sas.BlobPermissions{Read: true, Add: true, Create: true, Write: true}
	outURL, err := p.Signer.BlobURL(ctx, p.Config.DumpsContainer, outBlob, logPerms, runLogSASLifetime)
	if err != nil {
		return agent.Result{}, err
	}
	errURL, err := p.Signer.BlobURL(ctx, p.Config.DumpsContainer, errBlob, logPerms, runLogSASLifetime)
	if err != nil {
		return agent.Result{}, err
	}
	var protected []*armcompute.RunCommandInputParameter
	for _, prm := range params {
		protected = append(protected, &armcompute.RunCommandInputParameter{Name: ptr(prm.Name), Value: ptr(prm.Value)})
	}
	body := armcompute.VirtualMachineRunCommand{
		Location: ptr(r.art().Location),
		Tags:     tagsOf(r.msg.IncidentID, incident.RoleAgentRun, rescue.String()),
		Properties: &armcompute.VirtualMachineRunCommandProperties{
			Source:              &armcompute.VirtualMachineRunCommandScriptSource{Script: ptr(agent.BootstrapScript)},
			ProtectedParameters: protected,
			OutputBlobURI:       &outURL,
			ErrorBlobURI:        &errURL,
			TimeoutInSeconds:    ptr(int32(runTimeout / time.Second)),
			AsyncExecution:      ptr(false),
		},
	}
	if body.Location == nil || *body.Location == "" {
		vm, err := p.getVM(ctx, rescue, false)
		if err != nil {
			return agent.Result{}, fmt.Errorf("read rescue VM: %w", err)
		}
		body.Location = &vm.Location
	}
	az, err := p.in(rescue.SubscriptionID)
	if err != nil {
		return agent.Result{}, err
	}
	// The submission is a VM-level operation: it goes in the rescue VM's update slot, so that it
	// meets no attach or detach in progress there. The run itself is not: the update slot is
	// given back once ARM accepted the PUT.
	*keepSlot = true
	release, err := r.updateSlot(ctx, rescue, step, true)
	if err != nil {
		return agent.Result{}, err
	}
	defer release()
	err = r.write(ctx, "VirtualMachineRunCommands.BeginCreateOrUpdate", rcID, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, agentBudget)
		defer cancel()
		poller, err := az.RunCommands.BeginCreateOrUpdate(ctx, rescue.ResourceGroup, rescue.Name, name, body, nil)
		release()
		if err != nil {
			return err
		}
		_, err = poller.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: armclient.PollFrequency})
		return err
	})
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return agent.Result{}, wait(agentWait, "agent %s on %s is still running", step, rescue.Name)
	}
	if err != nil && armerr.ClassOf(err) == armerr.Terminal {
		*keepSlot = false // refused: nothing runs
	}
	if armerr.IsConflict(err) {
		// A VM runs one Run Command at a time: one the read above could not see (started since,
		// or by someone outside vmrescue) holds the rescue VM. That is rescue capacity, waited
		// for without bound as a free LUN is, keeping the agent slot: this incident runs next.
		delay := armerr.ConflictDelay
		if d, ok := armerr.RetryAfter(err); ok {
			delay = p.clockWait(d) // ARM's Retry-After
		}
		return agent.Result{}, &waitError{reason: fmt.Sprintf("rescue VM %s is running another agent (%s waits)", rescue.Name, step),
			delay: delay, unbounded: true}
	}
	if err != nil {
		return agent.Result{}, fmt.Errorf("run agent %s on %s: %w", step, rescue.Name, err)
	}
	return p.readResult(ctx, r, outBlob, runcommand.Execution{Name: name}, func() (runcommand.Execution, error) {
		ex, _, err := p.getRun(ctx, rescue, name)
		return ex, err
	})
}

// runningOn returns the name of a Run Command other than own that is executing on a rescue VM,
// from one read of the VM's Run Commands with their instance views; "" when none is.
func (p *Pipeline) runningOn(ctx context.Context, rescue resourceid.ID, own string) (string, error) {
	az, err := p.in(rescue.SubscriptionID)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	pager := az.RunCommands.NewListByVirtualMachinePager(rescue.ResourceGroup, rescue.Name,
		&armcompute.VirtualMachineRunCommandsClientListByVirtualMachineOptions{Expand: ptr("instanceView")})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return "", fmt.Errorf("list run commands of %s: %w", rescue.Name, err)
		}
		for _, rc := range page.Value {
			if rc == nil {
				continue
			}
			if ex := runcommand.ExecutionOf(*rc); ex.Running() && !strings.EqualFold(ex.Name, own) {
				return ex.Name, nil
			}
		}
	}
	return "", nil
}

// getRun reads a Run Command with its instance view; exists=false when there is none.
func (p *Pipeline) getRun(ctx context.Context, rescue resourceid.ID, name string) (runcommand.Execution, bool, error) {
	az, err := p.in(rescue.SubscriptionID)
	if err != nil {
		return runcommand.Execution{}, false, err
	}
	resp, err := armclient.Call(ctx, callTimeout, func(ctx context.Context) (armcompute.VirtualMachineRunCommandsClientGetByVirtualMachineResponse, error) {
		return az.RunCommands.GetByVirtualMachine(ctx, rescue.ResourceGroup, rescue.Name, name, runcommand.WithInstanceView)
	})
	if armerr.IsNotFound(err) {
		return runcommand.Execution{}, false, nil
	}
	if err != nil {
		return runcommand.Execution{}, false, fmt.Errorf("read run command %s: %w", name, err)
	}
	return runcommand.ExecutionOf(resp.VirtualMachineRunCommand), true, nil
}

// awaitRun waits, within budget, for an executing Run Command; after that the stage runs again
// later.
func (p *Pipeline) awaitRun(ctx context.Context, rescue resourceid.ID, name string, budget time.Duration) (runcommand.Execution, error) {
	deadline := time.Now().Add(budget)
	for {
		if err := sleep(ctx, p.poll()); err != nil {
			return runcommand.Execution{}, err
		}
		ex, ok, err := p.getRun(ctx, rescue, name)
		if err != nil {
			return runcommand.Execution{}, err
		}
		if !ok || !ex.Running() {
			return ex, nil
		}
		if time.Now().After(deadline) {
			return runcommand.Execution{}, wait(agentWait, "run command %s on %s is still running", name, rescue.Name)
		}
	}
}

func (r *run) deleteRun(ctx context.Context, rescue resourceid.ID, name, rcID string) error {
	az, err := r.p.in(rescue.SubscriptionID)
	if err != nil {
		return err
	}
	return r.write(ctx, "VirtualMachineRunCommands.BeginDelete", rcID, func(ctx context.Context) error {
		return lro(ctx, func(ctx context.Context) (*runtime.Poller[armcompute.VirtualMachineRunCommandsClientDeleteResponse], error) {
			return az.RunCommands.BeginDelete(ctx, rescue.ResourceGroup, rescue.Name, name, nil)
		})
	})
}

// readResult parses the agent's result from the Run Command's output blob, or from the instance
// view's output tail when the blob holds none (the result line fits in the tail); reread, when
// set, reads the instance view for that.
func (p *Pipeline) readResult(ctx context.Context, _ *run, outBlob string, ex runcommand.Execution, reread func() (runcommand.Execution, error)) (agent.Result, error) {
	data, err := p.Blobs.Get(ctx, p.Config.DumpsContainer, outBlob, maxRunLog)
	if err != nil && !errors.Is(err, blobstore.ErrNotFound) {
		return agent.Result{}, err
	}
	res, perr := agent.ParseResult(string(data))
	if perr != nil && reread != nil {
		if again, err := reread(); err == nil {
			ex = again
		}
	}
	if perr != nil && ex.Output != "" {
		res, perr = agent.ParseResult(ex.Output)
	}
	if perr != nil {
		return agent.Result{}, fmt.Errorf("agent %s: exit code %d, state %s: %w (stderr: %s)", ex.Name, ex.ExitCode, ex.State, perr, clip(ex.Error, 300))
	}
	return res, nil
}
