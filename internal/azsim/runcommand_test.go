package azsim_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azurite"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
)

func runCommandBody(sim *azsim.Sim, outputURI string) armcompute.VirtualMachineRunCommand {
	rc := armcompute.VirtualMachineRunCommand{
		Location: to.Ptr(sim.Location()),
		Properties: &armcompute.VirtualMachineRunCommandProperties{
			Source: &armcompute.VirtualMachineRunCommandScriptSource{Script: to.Ptr("& $env:AGENT inspect --lun $Lun")},
			Parameters: []*armcompute.RunCommandInputParameter{
				{Name: to.Ptr("Lun"), Value: to.Ptr("0")},
				{Name: to.Ptr("VmName"), Value: to.Ptr("app-web-01; rm -rf /")},
			},
			ProtectedParameters: []*armcompute.RunCommandInputParameter{{Name: to.Ptr("Sas"), Value: to.Ptr("sv=secret")}},
			TimeoutInSeconds:    to.Ptr[int32](3600),
		},
	}
	if outputURI != "" {
		rc.Properties.OutputBlobURI = to.Ptr(outputURI)
	}
	return rc
}

func TestRunCommand(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var seen sync.Map
	exec := azsim.RunCommandFunc(func(ctx context.Context, req azsim.RunCommandRequest) azsim.RunCommandResult {
		<-release
		lun, _ := req.Param("Lun")
		for _, d := range req.DataDisks {
			if f, ok := d.Content.(*azsim.Files); ok && lun == "0" && d.LUN == 0 {
				f.Write("Windows/System32/config/SYSTEM.patched", []byte("yes"))
			}
		}
		sas, _ := req.Param("Sas")
		seen.Store("sas", sas)
		seen.Store("script", req.RunCommand.Script)
		return azsim.RunCommandResult{ExitCode: 3, Output: strings.Repeat("x", 5000) + "END", Error: "boom", Duration: time.Minute}
	})
	sim, c := newSim(t, azsim.Options{Executor: exec})
	ctx := ctxT(t)
	snap := snapshotOf(t, sim, c, appRG, webVM, "snap")
	disk, err := diskFrom(t, sim, c, appRG, "rescue-copy", snap, "1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := attach(t, c, rescueRG, rescue1, disk, to.Ptr[int32](0)); err != nil {
		t.Fatal(err)
	}
	p, err := c.runs.BeginCreateOrUpdate(ctx, rescueRG, rescue1, "vmrescue-inc-1-patch", runCommandBody(sim, ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	// One Run Command at a time per VM.
	_, err = c.runs.BeginCreateOrUpdate(ctx, rescueRG, rescue1, "other", runCommandBody(sim, ""), nil)
	wantCode(t, err, azsim.CodeConflict, http.StatusConflict)
	during, err := c.runs.GetByVirtualMachine(ctx, rescueRG, rescue1, "vmrescue-inc-1-patch", &armcompute.VirtualMachineRunCommandsClientGetByVirtualMachineOptions{Expand: to.Ptr("instanceView")})
	if err != nil {
		t.Fatal(err)
	}
	if got := *during.Properties.InstanceView.ExecutionState; got != armcompute.ExecutionStateRunning {
		t.Errorf("execution state while running = %s", got)
	}
	close(release)
	if _, err := p.PollUntilDone(ctx, nil); err != nil {
		t.Fatal(err)
	}
	got, err := c.runs.GetByVirtualMachine(ctx, rescueRG, rescue1, "vmrescue-inc-1-patch", &armcompute.VirtualMachineRunCommandsClientGetByVirtualMachineOptions{Expand: to.Ptr("instanceView")})
	if err != nil {
		t.Fatal(err)
	}
	iv := got.Properties.InstanceView
	if *iv.ExecutionState != armcompute.ExecutionStateFailed || *iv.ExitCode != 3 || *iv.Error != "boom" {
		t.Errorf("instance view: state %s exit %d error %q", *iv.ExecutionState, *iv.ExitCode, *iv.Error)
	}
	if len(*iv.Output) != 4096 || !strings.HasSuffix(*iv.Output, "END") {
		t.Errorf("instance view output has %d bytes; want the last 4096", len(*iv.Output))
	}
	if got.Properties.ProtectedParameters != nil {
		t.Error("protected parameters returned by GET")
	}
	if v, _ := seen.Load("sas"); v != "sv=secret" {
		t.Errorf("executor saw protected parameter %v", v)
	}
	// The rescue disk changed; the snapshot and the original did not (copy on create).
	dc, _ := sim.State().DiskContent(disk)
	if _, ok := dc.(*azsim.Files).Read("Windows/System32/config/SYSTEM.patched"); !ok {
		t.Error("executor's write to the attached disk is not on the disk")
	}
	sc, _ := sim.State().DiskContent(snap)
	if _, ok := sc.(*azsim.Files).Read("Windows/System32/config/SYSTEM.patched"); ok {
		t.Error("the snapshot changed with the disk made from it")
	}
	if ch := sim.State().ChangedOriginalDisks(); len(ch) != 0 {
		t.Errorf("original disks changed: %v", ch)
	}
	rcs := sim.State().RunCommands(sim.Fleet().VMID(rescue1))
	if len(rcs) != 1 || rcs[0].Runs != 1 || len(rcs[0].Output) != 5003 {
		t.Errorf("recorded run commands: %+v", rcs)
	}
}

func TestRunCommandOnStoppedVM(t *testing.T) {
	t.Parallel()
	sim, c := newSim(t, azsim.Options{})
	deallocate(t, c, rescueRG, rescue1)
	_, err := c.runs.BeginCreateOrUpdate(ctxT(t), rescueRG, rescue1, "x", runCommandBody(sim, ""), nil)
	wantCode(t, err, azsim.CodeOperationNotAllowed, http.StatusConflict)
}

func TestRunCommandWritesOutputBlob(t *testing.T) {
	t.Parallel()
	output := strings.Repeat("line of agent output\n", 400) + `{"result":"ok"}`
	sim, c := newSim(t, azsim.Options{Executor: &azsim.RecordingExecutor{Result: azsim.RunCommandResult{Output: output}}})
	ctx := ctxT(t)
	container := azuritetest.Container(t, "rcout")
	if _, err := azuritetest.Client(t).CreateContainer(ctx, container, nil); err != nil {
		t.Fatal(err)
	}
	cred, err := azblob.NewSharedKeyCredential(azurite.AccountName, azurite.AccountKey)
	if err != nil {
		t.Fatal(err)
	}
	blobURL := azuritetest.URL(t) + "/" + container + "/vmrescue-inc-1-patch.out"
	perms := sas.BlobPermissions{Read: true, Add: true, Create: true, Write: true}
	q, err := sas.BlobSignatureValues{Protocol: sas.ProtocolHTTPSandHTTP, ExpiryTime: time.Now().Add(time.Hour),
		ContainerName: container, BlobName: "vmrescue-inc-1-patch.out", Permissions: perms.String()}.SignWithSharedKey(cred)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.runs.BeginCreateOrUpdate(ctx, rescueRG, rescue1, "vmrescue-inc-1-patch", runCommandBody(sim, blobURL+"?"+q.Encode()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PollUntilDone(ctx, nil); err != nil {
		t.Fatal(err)
	}
	svc, err := service.NewClientFromConnectionString(azuritetest.ConnectionString(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	dl, err := svc.NewContainerClient(container).NewBlobClient("vmrescue-inc-1-patch.out").DownloadStream(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Body.Close()
	b, _ := io.ReadAll(dl.Body)
	if string(b) != output {
		t.Errorf("output blob has %d bytes, want the full %d", len(b), len(output))
	}
	if *dl.BlobType != "AppendBlob" {
		t.Errorf("output blob type %s, want AppendBlob", *dl.BlobType)
	}
}
