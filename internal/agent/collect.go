package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/harvest"
)

// progressEvery spaces harvest's progress lines.
const progressEvery = 10 * time.Second

// harvest uploads MEMORY.DMP, the minidumps and a manifest to the request's SAS prefix.
func (a *Agent) harvest(ctx context.Context, s *session, req Request, res *Result) error {
	v, err := a.readHive(ctx, s, res)
	if err != nil {
		// The dumps are what matters now; look for them where Windows puts them by default.
		res.warn("could not read CrashControl (%v); looking for dumps at the default places", err)
		v = hiveView{cc: map[string]CrashControl{}}
	} else {
		res.CrashControl = crashControlResult(v)
	}
	dumps, found := a.findDumps(s, v, res)
	res.Dumps = dumps
	if len(found) == 0 {
		res.warn("no dump on the disk; uploading a manifest that says so")
	}
	found = uploadSlots(found, res)

	opts := a.Upload
	var mu sync.Mutex
	var last time.Time
	log := a.log()
	opts.Progress = func(p harvest.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if now := a.now(); now.Sub(last) >= progressEvery || p.BytesRead == p.Size {
			last = now
			log.Info("harvest progress", "file", p.File, "read", p.BytesRead, "sent", p.BytesSent,
				"size", p.Size, "blocksSent", p.BlocksSent, "blocksSkipped", p.BlocksSkipped)
		}
	}
	if req.Concurrency > 0 {
		opts.Concurrency = req.Concurrency
	}
	if req.BlockSizeMiB > 0 {
		opts.BlockSize = int64(req.BlockSizeMiB) << 20
	}
	var up *harvest.Uploader
	if len(req.BlobSAS) > 0 {
		up, err = harvest.NewPerBlob(req.SASURL, req.BlobSAS, opts)
	} else {
		up, err = harvest.New(req.SASURL, opts)
	}
	if err != nil {
		return &RefusedError{Reason: "harvest destination: " + err.Error()}
	}
	h := &HarvestResult{Prefix: up.PrefixURL(), Manifest: up.BlobName(harvest.ManifestName), Files: len(found)}
	res.Harvest = h
	srcs := make([]harvest.Source, len(found))
	for i, d := range found {
		path := d.path
		srcs[i] = harvest.Source{
			Name: d.name, Original: d.original, Size: d.file.Size, Modified: d.file.Modified,
			Open:     func() (harvest.ReaderAtCloser, error) { return a.Win.Open(path) },
			BugCheck: d.file.BugCheck, DumpType: d.file.DumpType,
		}
		h.Bytes += d.file.Size
	}
	rep, err := up.Harvest(ctx, req.IncidentID, srcs, a.now())
	for _, f := range rep.Files {
		h.BytesSent += f.BytesSent
		h.BlocksSent += f.BlocksSent
		h.BlocksSkipped += f.BlocksSkipped
		if f.Committed {
			h.FilesDone++
		}
		h.Uploaded = append(h.Uploaded, HarvestedFile{Blob: f.Blob, Size: f.Size, SHA256: f.SHA256,
			BlocksSent: f.BlocksSent, BlocksSkipped: f.BlocksSkipped})
	}
	h.Complete = rep.Complete
	if rep.ResumeUnavailable {
		res.warn("the SAS cannot list blocks (no read permission): an interrupted upload starts over")
	}
	if err != nil {
		return fmt.Errorf("harvest: %w", err)
	}
	return nil
}

// uploadSlots names the dumps' blobs: MEMORY.DMP, then the minidumps (newest first, as found)
// in the fixed slots harvest.MinidumpBlob, up to harvest.MaxMinidumps. Each keeps its name on
// the disk for the manifest.
func uploadSlots(found []dumpSource, res *Result) []dumpSource {
	out := make([]dumpSource, 0, len(found))
	minis := 0
	for _, d := range found {
		d.original = d.path
		if len(d.original) >= 2 && d.original[1] == ':' {
			d.original = d.original[2:] // the rescue VM's letter for the disk says nothing on the VM
		}
		if d.name != harvest.MemoryDumpBlob {
			if minis == harvest.MaxMinidumps {
				res.warn("%d minidumps on the disk: the newest %d are uploaded", countMinidumps(found), harvest.MaxMinidumps)
				break
			}
			d.name = harvest.MinidumpBlob(minis)
			minis++
		}
		out = append(out, d)
	}
	return out
}

func countMinidumps(found []dumpSource) int {
	n := 0
	for _, d := range found {
		if d.name != harvest.MemoryDumpBlob {
			n++
		}
	}
	return n
}
