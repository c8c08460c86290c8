package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/blobstore"
	"github.com/vmrescue/vmrescue/internal/bugcheck"
	"github.com/vmrescue/vmrescue/internal/harvest"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// bootDiagTimeout bounds the download of one boot diagnostics file.
const bootDiagTimeout = 2 * time.Minute

// harvestFrom has the agent upload the dumps on the disk at lun of a rescue VM to
// dumps/<incidentId>/, then reads the manifest the agent wrote last. The agent gets one SAS per
// blob it may write (harvest.BlobNames), each create and write only and valid at most
// blobstore.MaxDumpSASLifetime, so the rescue VM can write nothing outside the incident's prefix.
func (p *Pipeline) harvestFrom(ctx context.Context, r *run, rescueVMID string, lun int) error {
	if !r.dry {
		if err := p.ensureContainers(ctx); err != nil {
			return err
		}
	}
	var prefixURL string
	var blobSAS map[string]string
	if !r.dry {
		var err error
		prefixURL, blobSAS, err = p.dumpSAS(ctx, r.msg.IncidentID)
		if err != nil {
			return err
		}
		if err := r.note(ctx, fmt.Sprintf("dump SAS: create and write only, one per blob for %d blobs under %s/%s/, valid %s",
			len(blobSAS), p.Config.DumpsContainer, r.msg.IncidentID, blobstore.MaxDumpSASLifetime)); err != nil {
			return err
		}
	}
	res, err := p.runAgent(ctx, r, rescueVMID, "harvest", agent.Request{
		Command: agent.CommandHarvest, IncidentID: r.msg.IncidentID, LUN: lun, SASURL: prefixURL, BlobSAS: blobSAS,
	})
	if err != nil {
		return err
	}
	if err := verdict(res); err != nil {
		return err
	}
	if r.dry {
		return nil
	}
	if res.Harvest == nil || !res.Harvest.Complete {
		return wait(agentWait, "the dump upload is incomplete: it resumes on the next run")
	}
	return p.readManifest(ctx, r)
}

// dumpSAS signs a blob SAS for each name in harvest.BlobNames under the incident's prefix. It
// returns the prefix URL (no SAS) and each blob's SAS query string.
func (p *Pipeline) dumpSAS(ctx context.Context, incidentID string) (string, map[string]string, error) {
	perms := sas.BlobPermissions{Create: true, Write: true}
	blobSAS := map[string]string{}
	var prefixURL string
	for _, name := range harvest.BlobNames() {
		raw, err := p.Signer.BlobURL(ctx, p.Config.DumpsContainer, incidentID+"/"+name, perms, blobstore.MaxDumpSASLifetime)
		if err != nil {
			return "", nil, err
		}
		u, err := url.Parse(raw)
		if err != nil {
			return "", nil, fmt.Errorf("dump SAS for %s: %w", name, err)
		}
		blobSAS[name] = u.RawQuery
		if prefixURL == "" {
			u.RawQuery = ""
			prefixURL = strings.TrimSuffix(u.String(), "/"+name) // the signer's endpoint, as the agent will reach it
		}
	}
	return prefixURL, blobSAS, nil
}

// readManifest reads dumps/<incidentId>/manifest.json and records the main dump: MEMORY.DMP, or
// else the newest minidump.
func (p *Pipeline) readManifest(ctx context.Context, r *run) error {
	data, err := p.Blobs.Get(ctx, p.Config.DumpsContainer, r.msg.IncidentID+"/"+harvest.ManifestName, maxManifest)
	if err != nil {
		return fmt.Errorf("dump manifest: %w", err)
	}
	var m harvest.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("dump manifest: %w", err)
	}
	if m.IncidentID != "" && m.IncidentID != r.msg.IncidentID {
		return fmt.Errorf("dump manifest names incident %s", m.IncidentID)
	}
	var main *harvest.ManifestFile
	for i := range m.Files {
		f := &m.Files[i]
		if !strings.HasPrefix(f.Blob, r.msg.IncidentID+"/") {
			continue
		}
		if strings.EqualFold(f.Name, "MEMORY.DMP") {
			main = f
			break
		}
		if main == nil || f.Modified.After(main.Modified) {
			main = f
		}
	}
	if main == nil {
		return r.note(ctx, "the harvest found no dump on the disk")
	}
	r.made.DumpLocation = p.Config.DumpsContainer + "/" + main.Blob
	r.made.DumpSize, r.made.DumpSHA256 = main.Size, main.SHA256
	bc := main.BugCheck
	if bc == nil {
		bc = m.BugCheck
	}
	if bc != nil {
		c := *bc
		if c.Name == "" {
			c.Name = bugcheck.Name(c.Code)
		}
		r.made.BugCheck = &c
	}
	return nil
}

// storeBootDiagnostics copies the VM's boot screenshot and serial log to
// dumps/<incidentId>/bootdiag/. They help support but are not essential: a failure is recorded
// and the stage goes on. A stage that already retrieved them (an earlier attempt, before it waited
// for rescue capacity) does not again: the retrieval is a POST, a write from the budget.
func (p *Pipeline) storeBootDiagnostics(ctx context.Context, r *run) {
	op, id := "VirtualMachines.RetrieveBootDiagnosticsData", r.vm.String()
	if r.dry {
		_ = r.write(ctx, op, id, nil)
		return
	}
	if r.wrote(op) {
		return
	}
	var res armcompute.RetrieveBootDiagnosticsDataResult
	err := r.write(ctx, op, id, func(ctx context.Context) error {
		az, err := p.in(r.vm.SubscriptionID)
		if err != nil {
			return err
		}
		resp, err := armclient.Call(ctx, callTimeout, func(ctx context.Context) (armcompute.VirtualMachinesClientRetrieveBootDiagnosticsDataResponse, error) {
			return az.VMs.RetrieveBootDiagnosticsData(ctx, r.vm.ResourceGroup, r.vm.Name,
				&armcompute.VirtualMachinesClientRetrieveBootDiagnosticsDataOptions{SasURIExpirationTimeInMinutes: ptr(int32(bootDiagSASMinutes))})
		})
		res = resp.RetrieveBootDiagnosticsDataResult
		return err
	})
	if err == nil {
		err = p.ensureContainers(ctx)
	}
	prefix := r.msg.IncidentID + "/bootdiag/"
	for _, f := range []struct {
		uri  *string
		name string
		ct   string
	}{{res.ConsoleScreenshotBlobURI, "screenshot.bmp", "image/bmp"}, {res.SerialConsoleLogBlobURI, "serial.log", "text/plain"}} {
		if err != nil || f.uri == nil || *f.uri == "" {
			continue
		}
		var data []byte
		data, err = p.fetch(ctx, *f.uri)
		if err == nil {
			err = p.Blobs.Put(ctx, p.Config.DumpsContainer, prefix+f.name, bytes.NewReader(data), f.ct, false)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			_ = r.note(ctx, "boot diagnostics not stored: "+clip(err.Error(), 300))
		}
		return
	}
	r.made.BootDiagnostics = p.Config.DumpsContainer + "/" + prefix
}

// wrote reports a write of op that this stage made in an earlier delivery or attempt.
func (r *run) wrote(op string) bool {
	for _, rec := range r.recs {
		if rec.Stage == string(r.stage) && rec.Event == incident.EventSucceeded && detailOf(rec).Operation == op {
			return true
		}
	}
	return false
}

// fetch downloads one boot diagnostics file from the SAS URI ARM handed out.
func (p *Pipeline) fetch(ctx context.Context, uri string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, bootDiagTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	c := p.HTTP
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("boot diagnostics: %w", errors.New(strings.ReplaceAll(err.Error(), uri, redact(uri))))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("boot diagnostics: %s answered %s", redact(uri), resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBootDiag+1))
	if err != nil {
		return nil, fmt.Errorf("boot diagnostics: %w", err)
	}
	if len(data) > maxBootDiag {
		return nil, fmt.Errorf("boot diagnostics: file larger than %d bytes", maxBootDiag)
	}
	return data, nil
}

// redact drops a URL's query (its SAS).
func redact(u string) string { return agent.RedactSAS(u) }
