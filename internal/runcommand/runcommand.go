// Package runcommand is vmrescue's view of managed Run Commands on the rescue VMs: the narrow
// client interface of the calls the pipeline makes and the state of one execution.
package runcommand

import (
	"context"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
)

// API is the part of *armcompute.VirtualMachineRunCommandsClient vmrescue calls.
type API interface {
	BeginCreateOrUpdate(ctx context.Context, resourceGroupName string, vmName string, runCommandName string, runCommand armcompute.VirtualMachineRunCommand, options *armcompute.VirtualMachineRunCommandsClientBeginCreateOrUpdateOptions) (*runtime.Poller[armcompute.VirtualMachineRunCommandsClientCreateOrUpdateResponse], error)
	GetByVirtualMachine(ctx context.Context, resourceGroupName string, vmName string, runCommandName string, options *armcompute.VirtualMachineRunCommandsClientGetByVirtualMachineOptions) (armcompute.VirtualMachineRunCommandsClientGetByVirtualMachineResponse, error)
	BeginDelete(ctx context.Context, resourceGroupName string, vmName string, runCommandName string, options *armcompute.VirtualMachineRunCommandsClientBeginDeleteOptions) (*runtime.Poller[armcompute.VirtualMachineRunCommandsClientDeleteResponse], error)
	NewListByVirtualMachinePager(resourceGroupName string, vmName string, options *armcompute.VirtualMachineRunCommandsClientListByVirtualMachineOptions) *runtime.Pager[armcompute.VirtualMachineRunCommandsClientListByVirtualMachineResponse]
}

var _ API = (*armcompute.VirtualMachineRunCommandsClient)(nil)

// WithInstanceView asks GetByVirtualMachine for the execution state and output tail.
var WithInstanceView = &armcompute.VirtualMachineRunCommandsClientGetByVirtualMachineOptions{Expand: ptr("instanceView")}

// Execution is the state of a Run Command's last execution.
type Execution struct {
	Name           string
	State          armcompute.ExecutionState // Pending, Running, Succeeded, Failed, TimedOut, Canceled, Unknown
	ExitCode       int32
	Output         string // the last 4 KB only
	Error          string
	OutputBlobURI  string
	ProvisionState string
}

// ExecutionOf reads a Run Command as ARM returned it (with its instance view).
func ExecutionOf(rc armcompute.VirtualMachineRunCommand) Execution {
	e := Execution{Name: val(rc.Name)}
	if p := rc.Properties; p != nil {
		e.OutputBlobURI = val(p.OutputBlobURI)
		e.ProvisionState = val(p.ProvisioningState)
		if iv := p.InstanceView; iv != nil {
			e.State = val(iv.ExecutionState)
			e.ExitCode = val(iv.ExitCode)
			e.Output = val(iv.Output)
			e.Error = val(iv.Error)
		}
	}
	return e
}

// Running reports an execution that has not finished.
func (e Execution) Running() bool {
	return e.State == armcompute.ExecutionStatePending || e.State == armcompute.ExecutionStateRunning
}

// Finished reports an execution that ended (well or not).
func (e Execution) Finished() bool {
	switch e.State {
	case armcompute.ExecutionStateSucceeded, armcompute.ExecutionStateFailed, armcompute.ExecutionStateTimedOut, armcompute.ExecutionStateCanceled:
		return true
	}
	return false
}

func val[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func ptr[T any](v T) *T { return &v }
