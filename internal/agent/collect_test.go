package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/agent/wintest"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/dumpfile"
	"github.com/vmrescue/vmrescue/internal/harvest"
)

// writeDump puts a synthetic dump with a valid header on a partition.
func writeDump(t *testing.T, p *wintest.Partition, path string, code uint32, size int64, mod time.Time) {
	t.Helper()
	spec := dumpfile.Spec{BugCheckCode: code, Parameters: [4]uint64{0xFFFF9A0C12345080, 2, 0, 0xFFFFF80312345678}, SystemTime: mod}
	if strings.Contains(path, "Minidump") {
		spec.DumpType = dumpfile.TypeTriage
	}
	if err := p.WriteFile(path, dumpfile.Synthesize(spec), size, mod); err != nil {
		t.Fatal(err)
	}
}

// createContainer creates the dumps container in Azurite.
func createContainer(t *testing.T, name string) *container.Client {
	t.Helper()
	client := azuritetest.Client(t)
	if _, err := client.CreateContainer(context.Background(), name, nil); err != nil {
		t.Fatal(err)
	}
	return client.ServiceClient().NewContainerClient(name)
}

// prefixSAS makes a service SAS for the dumps container (create, write, read) and returns the
// incident prefix URL with it.
func prefixSAS(t *testing.T, container string, perms sas.ContainerPermissions) string {
	t.Helper()
	cc := createContainer(t, container)
	u, err := cc.GetSASURL(perms, time.Now().Add(2*time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := azblob.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	parts.BlobName = incidentID
	return parts.String()
}

// blobSAS signs a service SAS for each blob a harvest may write under the incident's prefix and
// returns the prefix URL (no SAS) with them, as the pipeline hands them to the agent.
func blobSAS(t *testing.T, container string, perms sas.BlobPermissions) (string, map[string]string) {
	t.Helper()
	cc := createContainer(t, container)
	out := map[string]string{}
	for _, name := range harvest.BlobNames() {
		u, err := cc.NewBlobClient(incidentID+"/"+name).GetSASURL(perms, time.Now().Add(2*time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		parts, err := azblob.ParseURL(u)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = parts.SAS.Encode()
	}
	return cc.URL() + "/" + incidentID, out
}

func download(t *testing.T, container, name string) []byte {
	t.Helper()
	resp, err := azuritetest.Client(t).DownloadStream(context.Background(), container, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHarvest(t *testing.T) {
	t.Parallel()
	r, d := gen1Rig(t, wintest.WindowsDiskSpec{})
	win := d.WindowsPartition()
	writeDump(t, win, `Windows\MEMORY.DMP`, 0x7B, 20<<20+123, clock.Add(-time.Hour))
	writeDump(t, win, `Windows\Minidump\112026-10000-01.dmp`, 0x7B, 300<<10, clock.Add(-time.Hour))
	writeDump(t, win, `Windows\Minidump\111926-9000-01.dmp`, 0xD1, 280<<10, clock.Add(-48*time.Hour))
	container := azuritetest.Container(t, "dumps")
	q := req(agent.CommandHarvest)
	q.SASURL, q.BlobSAS = blobSAS(t, container, sas.BlobPermissions{Read: true, Create: true, Write: true})
	q.BlockSizeMiB = 4
	r.a.Upload = harvest.Options{}

	res := r.run(t, q)
	if !res.OK {
		t.Fatal(res.Error)
	}
	h := res.Harvest
	if !h.Complete || h.Files != 3 || h.FilesDone != 3 || h.BlocksSent != 6+1+1 || h.BlocksSkipped != 0 ||
		h.Manifest != incidentID+"/manifest.json" || h.Bytes != 20<<20+123+300<<10+280<<10 {
		t.Errorf("harvest = %+v", h)
	}
	var m harvest.Manifest
	if err := json.Unmarshal(download(t, container, incidentID+"/manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	if m.IncidentID != incidentID || len(m.Files) != 3 || m.BugCheck == nil || m.BugCheck.Code != 0x7B || m.BugCheck.Name != "INACCESSIBLE_BOOT_DEVICE" {
		t.Errorf("manifest = %+v", m)
	}
	for i, want := range []struct{ name, original string }{
		{"MEMORY.DMP", `\Windows\MEMORY.DMP`},
		{"Minidump/01.dmp", `\Windows\Minidump\112026-10000-01.dmp`},
		{"Minidump/02.dmp", `\Windows\Minidump\111926-9000-01.dmp`},
	} {
		f := m.Files[i]
		if f.Name != want.name || f.Blob != incidentID+"/"+want.name || f.Original != want.original {
			t.Errorf("file %d = %+v", i, f)
			continue
		}
		sum := sha256.Sum256(download(t, container, f.Blob))
		if got := hex.EncodeToString(sum[:]); got != f.SHA256 || got != h.Uploaded[i].SHA256 {
			t.Errorf("%s: blob SHA-256 %s, manifest %s", want.name, got, f.SHA256)
		}
	}
	if m.Files[2].BugCheck.Code != 0xD1 || m.Files[2].DumpType != "triage" {
		t.Errorf("minidump entry = %+v", m.Files[2])
	}
	assertClosed(t, d, d.Identity(), res)

	// The golden result, with the Azurite address made stable.
	norm := res
	hh := *res.Harvest
	hh.Prefix = "http://127.0.0.1:PORT/devstoreaccount1/CONTAINER/" + incidentID
	norm.Harvest = &hh
	checkResultGolden(t, "harvest", norm)

	// A rerun finds everything staged and committed, and sends nothing.
	again := r.run(t, q)
	if !again.OK || again.Harvest.BlocksSent != 0 || again.Harvest.BlocksSkipped != 8 || !again.Harvest.Complete {
		t.Errorf("rerun = %+v", again.Harvest)
	}
}

// TestHarvestNewestMinidumps: a disk with more minidumps than the destination has slots for
// uploads the newest, says so, and writes nothing the per-blob SAS does not cover.
func TestHarvestNewestMinidumps(t *testing.T) {
	t.Parallel()
	r, d := gen1Rig(t, wintest.WindowsDiskSpec{})
	win := d.WindowsPartition()
	n := harvest.MaxMinidumps + 2
	for i := range n {
		writeDump(t, win, fmt.Sprintf(`Windows\Minidump\1120%02d-100-01.dmp`, i), 0xD1, 64<<10, clock.Add(-time.Duration(n-i)*time.Hour))
	}
	container := azuritetest.Container(t, "dumps")
	q := req(agent.CommandHarvest)
	q.SASURL, q.BlobSAS = blobSAS(t, container, sas.BlobPermissions{Create: true, Write: true})
	res := r.run(t, q)
	if !res.OK || !res.Harvest.Complete || res.Harvest.Files != harvest.MaxMinidumps {
		t.Fatalf("result %s %+v", res.Error, res.Harvest)
	}
	if !strings.Contains(strings.Join(res.Warnings, ";"), fmt.Sprintf("%d minidumps on the disk", n)) {
		t.Errorf("warnings %v", res.Warnings)
	}
	var m harvest.Manifest
	if err := json.Unmarshal(download(t, container, incidentID+"/manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Files) != harvest.MaxMinidumps {
		t.Fatalf("manifest lists %d files", len(m.Files))
	}
	for i, f := range m.Files { // newest first: the last written
		want := fmt.Sprintf(`\Windows\Minidump\1120%02d-100-01.dmp`, n-1-i)
		if f.Name != harvest.MinidumpBlob(i) || f.Original != want {
			t.Errorf("file %d = %s from %s, want %s from %s", i, f.Name, f.Original, harvest.MinidumpBlob(i), want)
		}
	}
	if b, _ := json.Marshal(res); strings.Contains(string(b), "sig=") {
		t.Error("the result carries a SAS")
	}
	if s := q.String(); strings.Contains(s, "sig=") || !strings.Contains(s, "REDACTED") {
		t.Errorf("the request as logged: %s", s)
	}
}

func TestHarvestNothingToHarvest(t *testing.T) {
	t.Parallel()
	r, _ := gen1Rig(t, wintest.WindowsDiskSpec{})
	container := azuritetest.Container(t, "dumps")
	q := req(agent.CommandHarvest)
	q.SASURL = prefixSAS(t, container, sas.ContainerPermissions{Create: true, Write: true})
	res := r.run(t, q)
	if !res.OK || res.Harvest.Files != 0 || !res.Harvest.Complete || !strings.Contains(strings.Join(res.Warnings, ";"), "no dump") {
		t.Fatalf("result %s %+v %v", res.Error, res.Harvest, res.Warnings)
	}
	var m harvest.Manifest
	if err := json.Unmarshal(download(t, container, incidentID+"/manifest.json"), &m); err != nil || len(m.Files) != 0 {
		t.Errorf("manifest %+v, %v", m, err)
	}
}

func TestHarvestBadDestination(t *testing.T) {
	t.Parallel()
	r, _ := gen1Rig(t, wintest.WindowsDiskSpec{})
	q := req(agent.CommandHarvest)
	q.SASURL = "https://acct.blob.core.windows.net/dumps/" + incidentID // no SAS
	res := r.run(t, q)
	if res.OK || !res.Refused || !strings.Contains(res.Error, "SAS") {
		t.Fatalf("result %+v", res)
	}
}
