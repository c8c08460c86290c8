package azsim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/appendblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// RunCommandParam is a named Run Command parameter.
type RunCommandParam struct {
	Name  string
	Value string
}

// RunCommand is a managed Run Command on a VM and the state of its last execution.
type RunCommand struct {
	ID                  string
	Name                string
	VMID                string
	Location            string
	Script              string
	ScriptURI           string
	CommandID           string
	Parameters          []RunCommandParam
	ProtectedParameters []RunCommandParam
	OutputBlobURI       string
	ErrorBlobURI        string
	TimeoutInSeconds    int32
	AsyncExecution      bool
	Tags                map[string]string
	ProvisioningState   string
	ExecutionState      string // Pending, Running, Succeeded, Failed, TimedOut
	ExecutionMessage    string
	ExitCode            int32
	Output              string // the full output; the instance view shows its last 4 KB
	Error               string
	StartTime           time.Time
	EndTime             time.Time
	Runs                int // executions so far
}

// AttachedDisk is a data disk of the VM a Run Command runs on, with its live content.
type AttachedDisk struct {
	LUN     int32
	DiskID  string
	Content Content
}

// RunCommandRequest is one execution of a managed Run Command.
type RunCommandRequest struct {
	VM         VM
	RunCommand RunCommand // as requested: source, parameters, protected parameters, blob URIs
	DataDisks  []AttachedDisk
}

// Param returns the value of a parameter (protected parameters included) by name.
func (r RunCommandRequest) Param(name string) (string, bool) {
	for _, p := range slices.Concat(r.RunCommand.Parameters, r.RunCommand.ProtectedParameters) {
		if strings.EqualFold(p.Name, name) {
			return p.Value, true
		}
	}
	return "", false
}

// RunCommandResult is what the script did.
type RunCommandResult struct {
	ExitCode int32
	Output   string
	Error    string
	// Duration is the script's run time at time scale 1, added to the Run Command overhead.
	Duration time.Duration
}

// RunCommandExecutor runs what a managed Run Command asks for. vmrescue's integration supplies one
// that runs the rescue agent against the simulated Windows disks; the default records.
type RunCommandExecutor interface {
	Run(ctx context.Context, req RunCommandRequest) RunCommandResult
}

// RunCommandFunc adapts a function to RunCommandExecutor.
type RunCommandFunc func(ctx context.Context, req RunCommandRequest) RunCommandResult

// Run implements RunCommandExecutor.
func (f RunCommandFunc) Run(ctx context.Context, req RunCommandRequest) RunCommandResult {
	return f(ctx, req)
}

// RecordingExecutor records each request and answers with Result.
type RecordingExecutor struct {
	mu       sync.Mutex
	Result   RunCommandResult
	requests []RunCommandRequest
}

var _ RunCommandExecutor = (*RecordingExecutor)(nil)

// Run implements RunCommandExecutor.
func (e *RecordingExecutor) Run(_ context.Context, req RunCommandRequest) RunCommandResult {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.requests = append(e.requests, req)
	return e.Result
}

// SetResult changes the answer for later requests.
func (e *RecordingExecutor) SetResult(r RunCommandResult) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.Result = r
}

// Requests lists the requests so far.
func (e *RecordingExecutor) Requests() []RunCommandRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.requests)
}

// Run Command limits.
const (
	// instanceViewTail is how much output the instance view keeps: Azure documents that the
	// instance view returns only the last 4 KB of output and error.
	instanceViewTail = 4096
	// maxRunCommandTimeout is Azure's limit on a managed Run Command's run time (90 minutes).
	maxRunCommandTimeout = 90 * time.Minute
	// blobWriteTimeout bounds the upload of a Run Command's output to its blob.
	blobWriteTimeout = 30 * time.Second
	// maxAppendBlock is the largest block Append Blob accepts.
	maxAppendBlock = 4 << 20
)

// blobAppender writes Run Command output to the blob named by outputBlobUri/errorBlobUri.
type blobAppender interface {
	Append(ctx context.Context, uri string, data []byte) error
}

// sasAppender writes through azblob with the URI's own SAS, as the Run Command agent does.
type sasAppender struct{}

func (sasAppender) Append(ctx context.Context, uri string, data []byte) error {
	c, err := appendblob.NewClientWithNoCredential(uri, nil)
	if err != nil {
		return fmt.Errorf("append blob client: %w", err)
	}
	if _, err := c.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists) {
		return fmt.Errorf("create append blob: %w", err)
	}
	for len(data) > 0 {
		n := min(len(data), maxAppendBlock)
		if _, err := c.AppendBlock(ctx, readSeekNopCloser(data[:n]), nil); err != nil {
			return fmt.Errorf("append block: %w", err)
		}
		data = data[n:]
	}
	return nil
}

func tail(s string) string {
	if len(s) <= instanceViewTail {
		return s
	}
	return s[len(s)-instanceViewTail:]
}

func params(in []*armcompute.RunCommandInputParameter) []RunCommandParam {
	var out []RunCommandParam
	for _, p := range in {
		if p != nil {
			out = append(out, RunCommandParam{Name: ptrVal(p.Name), Value: ptrVal(p.Value)})
		}
	}
	return out
}

func runCommandID(vmID, name string) string { return vmID + "/runCommands/" + name }

// execKey is the slot that allows one executing Run Command per VM.
func execKey(vmID string) string { return key(vmID) + "#runcommand" }

func (st *State) runCommandARMLocked(rc *RunCommand, expand bool) armcompute.VirtualMachineRunCommand {
	props := &armcompute.VirtualMachineRunCommandProperties{
		Source: &armcompute.VirtualMachineRunCommandScriptSource{},
		// Azure never returns protected parameters.
		AsyncExecution:    to.Ptr(rc.AsyncExecution),
		ProvisioningState: to.Ptr(rc.ProvisioningState),
	}
	if rc.Script != "" {
		props.Source.Script = to.Ptr(rc.Script)
	}
	if rc.ScriptURI != "" {
		props.Source.ScriptURI = to.Ptr(rc.ScriptURI)
	}
	if rc.CommandID != "" {
		props.Source.CommandID = to.Ptr(rc.CommandID)
	}
	for _, p := range rc.Parameters {
		props.Parameters = append(props.Parameters, &armcompute.RunCommandInputParameter{Name: to.Ptr(p.Name), Value: to.Ptr(p.Value)})
	}
	if rc.OutputBlobURI != "" {
		props.OutputBlobURI = to.Ptr(rc.OutputBlobURI)
	}
	if rc.ErrorBlobURI != "" {
		props.ErrorBlobURI = to.Ptr(rc.ErrorBlobURI)
	}
	if rc.TimeoutInSeconds != 0 {
		props.TimeoutInSeconds = to.Ptr(rc.TimeoutInSeconds)
	}
	if expand {
		iv := &armcompute.VirtualMachineRunCommandInstanceView{
			ExecutionState:   to.Ptr(armcompute.ExecutionState(rc.ExecutionState)),
			ExecutionMessage: to.Ptr(rc.ExecutionMessage),
			ExitCode:         to.Ptr(rc.ExitCode),
			Output:           to.Ptr(tail(rc.Output)),
			Error:            to.Ptr(tail(rc.Error)),
		}
		if !rc.StartTime.IsZero() {
			iv.StartTime = to.Ptr(rc.StartTime)
		}
		if !rc.EndTime.IsZero() {
			iv.EndTime = to.Ptr(rc.EndTime)
		}
		props.InstanceView = iv
	}
	return armcompute.VirtualMachineRunCommand{
		ID: to.Ptr(rc.ID), Name: to.Ptr(rc.Name), Type: to.Ptr("Microsoft.Compute/virtualMachines/runCommands"),
		Location: to.Ptr(rc.Location), Tags: strTags(rc.Tags), Properties: props,
	}
}

// RunCommands lists the run commands of a VM, sorted by name.
func (st *State) RunCommands(vmID string) []RunCommand {
	st.lock()
	defer st.unlock()
	var out []RunCommand
	for _, rc := range st.runCmds {
		if strings.EqualFold(rc.VMID, vmID) {
			c := *rc
			c.Parameters = slices.Clone(rc.Parameters)
			c.ProtectedParameters = slices.Clone(rc.ProtectedParameters)
			c.Tags = maps.Clone(rc.Tags)
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b RunCommand) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func (st *State) getRunCommand(rg, vm, name string, expand bool) (armcompute.VirtualMachineRunCommand, *armError) {
	st.lock()
	defer st.unlock()
	v, err := st.vmLocked(rg, vm)
	if err != nil {
		return armcompute.VirtualMachineRunCommand{}, err
	}
	rc, ok := st.runCmds[key(runCommandID(v.ID, name))]
	if !ok {
		return armcompute.VirtualMachineRunCommand{}, notFound("Microsoft.Compute/virtualMachines/"+v.Name+"/runCommands", runCommandID(v.ID, name))
	}
	return st.runCommandARMLocked(rc, expand), nil
}

func (st *State) listRunCommands(rg, vm string, expand bool) ([]*armcompute.VirtualMachineRunCommand, *armError) {
	st.lock()
	defer st.unlock()
	v, err := st.vmLocked(rg, vm)
	if err != nil {
		return nil, err
	}
	var out []*armcompute.VirtualMachineRunCommand
	for _, rc := range st.runCmds {
		if strings.EqualFold(rc.VMID, v.ID) {
			a := st.runCommandARMLocked(rc, expand)
			out = append(out, &a)
		}
	}
	slices.SortFunc(out, func(a, b *armcompute.VirtualMachineRunCommand) int { return cmp.Compare(*a.Name, *b.Name) })
	return out, nil
}

// putRunCommand creates or replaces a managed Run Command and executes it. Every PUT executes the
// script again.
func (st *State) putRunCommand(op, rg, vm, name string, body armcompute.VirtualMachineRunCommand) (armcompute.VirtualMachineRunCommand, *operation, *armError) {
	st.lock()
	defer st.unlock()
	v, err := st.vmLocked(rg, vm)
	if err != nil {
		return armcompute.VirtualMachineRunCommand{}, nil, err
	}
	if err := st.busyLocked(v.ID); err != nil {
		return armcompute.VirtualMachineRunCommand{}, nil, err
	}
	if _, running := st.ops[execKey(v.ID)]; running {
		return armcompute.VirtualMachineRunCommand{}, nil, newARMError(http.StatusConflict, CodeConflict,
			"Run command extension execution is in progress on VM '%s'. Please wait for completion before invoking a run command.", v.Name)
	}
	if v.Power != PowerRunning {
		return armcompute.VirtualMachineRunCommand{}, nil, newARMError(http.StatusConflict, CodeOperationNotAllowed,
			"Cannot modify extensions in the VM when the VM is not running.")
	}
	if body.Location == nil || *body.Location == "" {
		return armcompute.VirtualMachineRunCommand{}, nil, newARMError(http.StatusBadRequest, CodeLocationRequired,
			"The location property is required for this definition.")
	}
	p := body.Properties
	if p == nil || p.Source == nil || (ptrVal(p.Source.Script) == "" && ptrVal(p.Source.ScriptURI) == "" && ptrVal(p.Source.CommandID) == "") {
		return armcompute.VirtualMachineRunCommand{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter,
			"The run command source must have one of script, scriptUri or commandId.").withTarget("properties.source")
	}
	id := runCommandID(v.ID, name)
	rc := &RunCommand{
		ID: id, Name: name, VMID: v.ID, Location: *body.Location,
		Script: ptrVal(p.Source.Script), ScriptURI: ptrVal(p.Source.ScriptURI), CommandID: ptrVal(p.Source.CommandID),
		Parameters: params(p.Parameters), ProtectedParameters: params(p.ProtectedParameters),
		OutputBlobURI: ptrVal(p.OutputBlobURI), ErrorBlobURI: ptrVal(p.ErrorBlobURI),
		TimeoutInSeconds: ptrVal(p.TimeoutInSeconds), AsyncExecution: ptrVal(p.AsyncExecution),
		Tags: plainTags(body.Tags), ProvisioningState: ProvisioningCreating,
		ExecutionState: string(armcompute.ExecutionStateRunning), StartTime: st.now(),
	}
	if old, ok := st.runCmds[key(id)]; ok {
		rc.Runs = old.Runs
		rc.ProvisioningState = ProvisioningUpdating
	}
	rc.Runs++
	st.runCmds[key(id)] = rc

	req := RunCommandRequest{VM: cloneVM(v), RunCommand: *rc}
	req.RunCommand.Parameters = slices.Clone(rc.Parameters)
	req.RunCommand.ProtectedParameters = slices.Clone(rc.ProtectedParameters)
	for _, dd := range v.DataDisks {
		req.DataDisks = append(req.DataDisks, AttachedDisk{LUN: dd.LUN, DiskID: dd.DiskID, Content: st.content[key(dd.DiskID)]})
	}
	overhead := st.timing.of(LatencyRunCommandOverhead, LatencyRunCommandOverhead)
	var result RunCommandResult
	var timedOut bool
	exec := &operation{name: op, key: execKey(v.ID), started: st.now(), waiting: true}
	exec.finish = func() {
		rc.ExitCode, rc.Output, rc.Error, rc.EndTime = result.ExitCode, result.Output, result.Error, st.now()
		switch {
		case timedOut:
			rc.ExecutionState, rc.ExecutionMessage = string(armcompute.ExecutionStateTimedOut), "Execution timed out."
		case result.ExitCode != 0:
			rc.ExecutionState, rc.ExecutionMessage = string(armcompute.ExecutionStateFailed), fmt.Sprintf("Execution completed with exit code %d.", result.ExitCode)
		default:
			rc.ExecutionState, rc.ExecutionMessage = string(armcompute.ExecutionStateSucceeded), "Execution completed"
		}
		if !rc.AsyncExecution {
			rc.ProvisioningState = ProvisioningSucceeded
		}
	}
	st.ops[exec.key] = exec
	lroOp := exec
	if rc.AsyncExecution {
		lroOp = st.beginLocked(op, id, overhead, func() { rc.ProvisioningState = ProvisioningSucceeded })
	}
	go st.execute(exec, req, overhead, &result, &timedOut)

	final := st.runCommandARMLocked(rc, false)
	final.Properties.ProvisioningState = to.Ptr(ProvisioningSucceeded)
	return final, lroOp, nil
}

// execute runs the executor outside the lock, writes the output blobs, then makes the execution
// due at start + overhead + the script's simulated duration.
func (st *State) execute(exec *operation, req RunCommandRequest, overhead time.Duration, result *RunCommandResult, timedOut *bool) {
	timeout := maxRunCommandTimeout
	if t := req.RunCommand.TimeoutInSeconds; t > 0 {
		timeout = time.Duration(t) * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	res := st.executor.Run(ctx, req)
	expired := errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	var blobErrs []string
	write := func(uri, data string) {
		if uri == "" || data == "" || st.blobs == nil {
			return
		}
		bctx, bcancel := context.WithTimeout(context.Background(), blobWriteTimeout)
		defer bcancel()
		if err := st.blobs.Append(bctx, uri, []byte(data)); err != nil {
			blobErrs = append(blobErrs, err.Error())
			st.log.Warn("azsim: run command output blob", "runCommand", req.RunCommand.ID, "err", err)
		}
	}
	write(req.RunCommand.OutputBlobURI, res.Output)
	write(req.RunCommand.ErrorBlobURI, res.Error)
	if len(blobErrs) > 0 {
		res.Error += "\nazsim: writing output blobs: " + strings.Join(blobErrs, "; ")
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	*result, *timedOut = res, expired
	exec.waiting = false
	exec.due = exec.started.Add(overhead + st.timing.scaled(res.Duration))
	if now := st.now(); exec.due.Before(now) {
		exec.due = now
	}
	st.logOpLocked(exec.name, key(req.VM.ID), exec.started, exec.due)
	st.settleLocked()
	if !exec.done {
		st.wakeAt(exec.due)
	}
}

func (st *State) deleteRunCommand(op, rg, vm, name string) (*operation, *armError) {
	st.lock()
	defer st.unlock()
	v, err := st.vmLocked(rg, vm)
	if err != nil {
		return nil, err
	}
	id := runCommandID(v.ID, name)
	rc, ok := st.runCmds[key(id)]
	if !ok {
		return nil, nil
	}
	if err := st.busyLocked(id); err != nil {
		return nil, err
	}
	if _, running := st.ops[execKey(v.ID)]; running && rc.ExecutionState == string(armcompute.ExecutionStateRunning) {
		return nil, conflictInProgress()
	}
	rc.ProvisioningState = ProvisioningDeleting
	return st.beginLocked(op, id, st.timing.of(op, LatencyWrite), func() { delete(st.runCmds, key(id)) }), nil
}
