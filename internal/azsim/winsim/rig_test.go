package winsim_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azsim/winsim"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/incident"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

// testTimeout bounds each test's calls.
const testTimeout = 60 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// posted records the events the world delivers.
type posted struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (p *posted) post(_ context.Context, body []byte, _ int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bodies = append(p.bodies, bytes.Clone(body))
	return nil
}

func (p *posted) all() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.bodies...)
}

// rig is a simulated subscription with the Windows world, the real armcompute clients on the
// SDK pipeline, a tools container holding an "agent binary", and containers for Run Command
// output and dumps in Azurite.
type rig struct {
	t        *testing.T
	w        *winsim.World
	sim      *azsim.Sim
	vms      *armcompute.VirtualMachinesClient
	disks    *armcompute.DisksClient
	snaps    *armcompute.SnapshotsClient
	runs     *armcompute.VirtualMachineRunCommandsClient
	events   *posted
	agentURL string
	agentSum string
	runsCtr  string
	dumpsCtr string
}

func newRig(t *testing.T, fleet *azsim.Fleet, opts winsim.LocalOptions) *rig {
	t.Helper()
	r := &rig{t: t, events: &posted{}}
	if opts.World.PostEvent == nil && opts.World.EventURL == "" {
		opts.World.PostEvent = r.events.post
	}
	w, err := winsim.NewLocal(fleet, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	r.w, r.sim = w, w.Sim()
	cf, err := armcompute.NewClientFactory(r.sim.SubscriptionID(), azsim.Credential(), r.sim.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	r.vms, r.disks, r.snaps, r.runs = cf.NewVirtualMachinesClient(), cf.NewDisksClient(), cf.NewSnapshotsClient(), cf.NewVirtualMachineRunCommandsClient()

	ctx := ctxT(t)
	client := azuritetest.Client(t)
	tools := azuritetest.Container(t, "tools")
	r.runsCtr = azuritetest.Container(t, "runs")
	r.dumpsCtr = azuritetest.Container(t, "dumps")
	for _, c := range []string{tools, r.runsCtr, r.dumpsCtr} {
		if _, err := client.CreateContainer(ctx, c, nil); err != nil {
			t.Fatal(err)
		}
	}
	bin := []byte("MZ\x90\x00 vmrescue handler.exe, test build " + t.Name())
	sum := sha256.Sum256(bin)
	r.agentSum = hex.EncodeToString(sum[:])
	name := "handler-agent/" + r.agentSum + ".exe"
	if _, err := client.UploadBuffer(ctx, tools, name, bin, nil); err != nil {
		t.Fatal(err)
	}
	r.agentURL = r.blobSAS(tools, name, sas.BlobPermissions{Read: true})
	return r
}

// blobSAS is a service SAS URL for one blob.
func (r *rig) blobSAS(container, name string, perms sas.BlobPermissions) string {
	r.t.Helper()
	u, err := azuritetest.Client(r.t).ServiceClient().NewContainerClient(container).NewBlobClient(name).
		GetSASURL(perms, time.Now().Add(time.Hour), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return u
}

// prefixSAS is harvest's destination: the dumps container's <incidentId> prefix, write-only.
func (r *rig) prefixSAS(incidentID string) string {
	r.t.Helper()
	u, err := azuritetest.Client(r.t).ServiceClient().NewContainerClient(r.dumpsCtr).
		GetSASURL(sas.ContainerPermissions{Create: true, Write: true}, time.Now().Add(2*time.Hour), nil)
	if err != nil {
		r.t.Fatal(err)
	}
	parts, err := azblob.ParseURL(u)
	if err != nil {
		r.t.Fatal(err)
	}
	parts.BlobName = incidentID
	return parts.String()
}

func (r *rig) poll(err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) vm(name string) armcompute.VirtualMachine {
	r.t.Helper()
	fv := r.sim.Fleet().VMID(name)
	got, err := r.vms.Get(ctxT(r.t), resourceGroupOf(fv), name, &armcompute.VirtualMachinesClientGetOptions{
		Expand: to.Ptr(armcompute.InstanceViewTypesInstanceView)})
	if err != nil {
		r.t.Fatal(err)
	}
	return got.VirtualMachine
}

func resourceGroupOf(id string) string {
	parts := strings.Split(id, "/")
	for i := range parts {
		if strings.EqualFold(parts[i], "resourceGroups") && i+1 < len(parts) {
			return parts[i+1]
		}
	}
	return ""
}

func (r *rig) deallocate(rg, name string) {
	r.t.Helper()
	p, err := r.vms.BeginDeallocate(ctxT(r.t), rg, name, nil)
	r.poll(err)
	_, err = p.PollUntilDone(ctxT(r.t), nil)
	r.poll(err)
}

func (r *rig) start(rg, name string) {
	r.t.Helper()
	p, err := r.vms.BeginStart(ctxT(r.t), rg, name, nil)
	r.poll(err)
	_, err = p.PollUntilDone(ctxT(r.t), nil)
	r.poll(err)
}

// copyDisk snapshots a disk and makes a disk from the snapshot in zone, as Snapshot and
// RescueAttach do.
func (r *rig) copyDisk(rg, name, sourceID, zone string) string {
	r.t.Helper()
	ctx := ctxT(r.t)
	tags := map[string]*string{"vmrescue-incident": to.Ptr("inc-test")}
	sp, err := r.snaps.BeginCreateOrUpdate(ctx, rg, name+"-snap", armcompute.Snapshot{
		Location: to.Ptr(r.sim.Location()), Tags: tags,
		Properties: &armcompute.SnapshotProperties{Incremental: to.Ptr(true),
			CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionCopy), SourceResourceID: to.Ptr(sourceID)}},
	}, nil)
	r.poll(err)
	snap, err := sp.PollUntilDone(ctx, nil)
	r.poll(err)
	d := armcompute.Disk{Location: to.Ptr(r.sim.Location()), Tags: tags,
		SKU: &armcompute.DiskSKU{Name: to.Ptr(armcompute.DiskStorageAccountTypesPremiumLRS)},
		Properties: &armcompute.DiskProperties{
			CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionCopy), SourceResourceID: snap.ID}}}
	if zone != "" {
		d.Zones = []*string{to.Ptr(zone)}
	}
	dp, err := r.disks.BeginCreateOrUpdate(ctx, rg, name, d, nil)
	r.poll(err)
	disk, err := dp.PollUntilDone(ctx, nil)
	r.poll(err)
	return *disk.ID
}

func (r *rig) attachDetach(rescue, diskID string, lun int32, attach bool) {
	r.t.Helper()
	req := armcompute.AttachDetachDataDisksRequest{}
	if attach {
		req.DataDisksToAttach = []*armcompute.DataDisksToAttach{{DiskID: to.Ptr(diskID), Lun: to.Ptr(lun)}}
	} else {
		req.DataDisksToDetach = []*armcompute.DataDisksToDetach{{DiskID: to.Ptr(diskID)}}
	}
	p, err := r.vms.BeginAttachDetachDataDisks(ctxT(r.t), resourceGroupOf(r.sim.Fleet().VMID(rescue)), rescue, req, nil)
	r.poll(err)
	_, err = p.PollUntilDone(ctxT(r.t), nil)
	r.poll(err)
}

// swapOSDisk points a deallocated VM at another OS disk with a PATCH (VirtualMachines.BeginUpdate).
func (r *rig) swapOSDisk(rg, name, diskID string) {
	r.t.Helper()
	p, err := r.vms.BeginUpdate(ctxT(r.t), rg, name, armcompute.VirtualMachineUpdate{
		Properties: &armcompute.VirtualMachineProperties{StorageProfile: &armcompute.StorageProfile{
			OSDisk: &armcompute.OSDisk{Name: to.Ptr(diskID[strings.LastIndex(diskID, "/")+1:]),
				ManagedDisk: &armcompute.ManagedDiskParameters{ID: to.Ptr(diskID)}}}},
	}, nil)
	r.poll(err)
	_, err = p.PollUntilDone(ctxT(r.t), nil)
	r.poll(err)
}

// runOut is one Run Command execution as the pipeline sees it.
type runOut struct {
	state    armcompute.ExecutionState
	exitCode int32
	tail     string // the instance view's output (its last 4 KB)
	errTail  string
	blob     string // the output blob
}

// runCommand runs a managed Run Command with the bootstrap and the agent request as protected
// parameters, output to a blob, and reads it back.
func (r *rig) runCommand(rescue, name string, params []agent.ScriptParameter, script string) runOut {
	r.t.Helper()
	ctx := ctxT(r.t)
	rg := resourceGroupOf(r.sim.Fleet().VMID(rescue))
	var protected []*armcompute.RunCommandInputParameter
	for _, p := range params {
		protected = append(protected, &armcompute.RunCommandInputParameter{Name: to.Ptr(p.Name), Value: to.Ptr(p.Value)})
	}
	outName := name + ".log"
	body := armcompute.VirtualMachineRunCommand{
		Location: to.Ptr(r.sim.Location()),
		Properties: &armcompute.VirtualMachineRunCommandProperties{
			Source:              &armcompute.VirtualMachineRunCommandScriptSource{Script: to.Ptr(script)},
			ProtectedParameters: protected,
			OutputBlobURI:       to.Ptr(r.blobSAS(r.runsCtr, outName, sas.BlobPermissions{Read: true, Add: true, Create: true, Write: true})),
			TimeoutInSeconds:    to.Ptr[int32](3600),
			AsyncExecution:      to.Ptr(false),
		},
	}
	p, err := r.runs.BeginCreateOrUpdate(ctx, rg, rescue, name, body, nil)
	r.poll(err)
	_, err = p.PollUntilDone(ctx, nil)
	r.poll(err)
	got, err := r.runs.GetByVirtualMachine(ctx, rg, rescue, name, &armcompute.VirtualMachineRunCommandsClientGetByVirtualMachineOptions{Expand: to.Ptr("instanceView")})
	r.poll(err)
	iv := got.Properties.InstanceView
	out := runOut{state: *iv.ExecutionState, exitCode: *iv.ExitCode, tail: *iv.Output, errTail: *iv.Error}
	dl, err := azuritetest.Client(r.t).DownloadStream(ctx, r.runsCtr, outName, nil)
	if err == nil {
		b, _ := io.ReadAll(dl.Body)
		dl.Body.Close()
		out.blob = string(b)
	}
	return out
}

// runAgent runs the agent through the bootstrap and parses its result from the instance view's
// tail, checking that the output blob holds the whole output and the same result.
func (r *rig) runAgent(rescue, name string, req agent.Request) agent.Result {
	r.t.Helper()
	params, err := agent.BootstrapParameters(r.agentURL, r.agentSum, req)
	if err != nil {
		r.t.Fatal(err)
	}
	out := r.runCommand(rescue, name, params, agent.BootstrapScript)
	if len(out.tail) > 4096 {
		r.t.Errorf("instance view output is %d bytes; Azure keeps the last 4096", len(out.tail))
	}
	res, err := agent.ParseResult(out.tail)
	if err != nil {
		r.t.Fatalf("%s: parse the instance view's output: %v\nerror stream: %s", name, err, out.errTail)
	}
	full, err := agent.ParseResult(out.blob)
	if err != nil {
		r.t.Fatalf("%s: parse the output blob: %v", name, err)
	}
	if !strings.HasSuffix(out.blob, out.tail) || !strings.HasPrefix(out.blob, "{") {
		r.t.Errorf("%s: the output blob is not the whole output (indented result, then the result line)", name)
	}
	if full.OK != res.OK || full.Command != res.Command {
		r.t.Errorf("%s: blob and tail disagree: %+v vs %+v", name, full, res)
	}
	wantState := armcompute.ExecutionStateSucceeded
	if !res.OK {
		wantState = armcompute.ExecutionStateFailed
	}
	if out.state != wantState {
		r.t.Errorf("%s: execution state %s (exit %d), want %s", name, out.state, out.exitCode, wantState)
	}
	return res
}

// diskView runs fn on the simulated Windows disk of a managed disk.
func (r *rig) diskView(diskID string, fn func(d *winsim.Disk)) {
	r.t.Helper()
	c, ok := r.sim.State().DiskContent(diskID)
	if !ok {
		r.t.Fatalf("no disk %s", diskID)
	}
	d, ok := c.(*winsim.Disk)
	if !ok {
		r.t.Fatalf("disk %s holds %T, not a simulated Windows disk", diskID, c)
	}
	fn(d)
}

func newIncident() string { return incident.NewID(time.Now()) }
