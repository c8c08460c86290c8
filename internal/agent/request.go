package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/vmrescue/vmrescue/internal/incident"
)

// Request is everything one agent run is told. The pipeline marshals it to JSON and passes it as
// the bootstrap's AgentArgs parameter (a protected parameter: it may hold a SAS URL); the
// bootstrap hands it to the agent in the environment variable RequestEnv, so no value ever
// reaches script text or a command line. `handler agent <command> --flags` builds the same
// Request from flags for a person at a console.
type Request struct {
	Command    Command `json:"command"`
	IncidentID string  `json:"incidentId,omitempty"`
	// LUN is the SCSI LUN at which the copy of the OS disk is attached to the rescue VM.
	LUN int `json:"lun"`
	// DiskSizeGB, when set, must equal the size of the disk found at LUN (a second check that
	// the agent works on the disk the pipeline attached).
	DiskSizeGB int `json:"diskSizeGB,omitempty"`
	// MemoryGB is the VM's memory size (Resource SKUs' MemoryGB); inspect and patch need it.
	MemoryGB float64 `json:"memoryGB,omitempty"`
	// MarginGB is the free space kept beyond the memory size; DefaultMarginGB when zero.
	MarginGB float64 `json:"marginGB,omitempty"`
	// DumpType overrides patch's choice: auto (default), complete or kernel.
	DumpType string `json:"dumpType,omitempty"`
	// UnlessDump makes patch look first, as inspect does, and change nothing when the disk
	// already holds a memory dump (the result reports it in Dumps, with no Patch): one run does
	// what inspect then patch would, so a rescue VM, which runs one Run Command at a time, serves
	// more incidents.
	UnlessDump bool `json:"unlessDump,omitempty"`
	// DataVolumes are the VM's own data volumes (its letters) with their free space, as far as
	// the caller knows it; patch may point DumpFile at one when the OS volume is too small.
	DataVolumes []DataVolume `json:"dataVolumes,omitempty"`
	// SASURL is harvest's destination: <container URL>/<incidentId>, with a SAS for the whole
	// prefix when BlobSAS is empty. Blobs are written under that prefix. A SAS needs create and
	// write; with read as well, an interrupted upload resumes (Get Block List needs read).
	SASURL string `json:"sasUrl,omitempty"`
	// BlobSAS, when set, holds one SAS (query string) per blob name under the prefix, each
	// scoped to that blob alone: the pipeline signs one for each of harvest.BlobNames.
	BlobSAS map[string]string `json:"blobSas,omitempty"`
	// Concurrency and BlockSizeMiB tune harvest; zero means the defaults.
	Concurrency  int `json:"concurrency,omitempty"`
	BlockSizeMiB int `json:"blockSizeMiB,omitempty"`
}

// DataVolume is a data volume of the VM as the VM mounts it.
type DataVolume struct {
	Volume    string `json:"volume"` // its drive letter on the VM, e.g. "E:"
	FreeBytes int64  `json:"freeBytes"`
}

// RequestEnv is the environment variable through which the bootstrap passes the Request JSON.
const RequestEnv = "VMRESCUE_AGENT_REQUEST"

// Dump type overrides.
const (
	DumpTypeAuto = "auto"
)

// DefaultMarginGB is the free space patch keeps beyond the memory size for a complete dump.
const DefaultMarginGB = 1.0

// maxMemoryGB bounds MemoryGB: the largest Azure VM sizes have about 12 TiB.
const maxMemoryGB = 32 * 1024

var letterPattern = regexp.MustCompile(`^[A-Za-z]:$`)

// Validate checks the request as a whole and reports every problem at once.
func (r Request) Validate() error {
	var errs []error
	if !r.Command.Valid() {
		errs = append(errs, fmt.Errorf("command %q: want inspect, patch, harvest or restore", r.Command))
	}
	if r.IncidentID != "" && !incident.ValidID(r.IncidentID) {
		errs = append(errs, fmt.Errorf("incident id %q is malformed", r.IncidentID))
	}
	if r.LUN < 0 || r.LUN > 63 {
		errs = append(errs, fmt.Errorf("lun %d: want 0..63", r.LUN))
	}
	if r.DiskSizeGB < 0 {
		errs = append(errs, fmt.Errorf("disk size %d GB is negative", r.DiskSizeGB))
	}
	if r.MemoryGB < 0 || r.MemoryGB > maxMemoryGB {
		errs = append(errs, fmt.Errorf("memory %g GB: want 0..%d", r.MemoryGB, maxMemoryGB))
	}
	if (r.Command == CommandInspect || r.Command == CommandPatch) && r.MemoryGB == 0 {
		errs = append(errs, errors.New("memory size (GB) is required for inspect and patch"))
	}
	if r.MarginGB < 0 || r.MarginGB > maxMemoryGB {
		errs = append(errs, fmt.Errorf("margin %g GB is out of range", r.MarginGB))
	}
	if r.UnlessDump && r.Command != CommandPatch {
		errs = append(errs, fmt.Errorf("unlessDump is a patch option, not %s's", r.Command))
	}
	switch r.DumpType {
	case "", DumpTypeAuto, DumpComplete, DumpKernel:
	default:
		errs = append(errs, fmt.Errorf("dump type %q: want auto, complete or kernel", r.DumpType))
	}
	seen := map[string]bool{}
	for _, v := range r.DataVolumes {
		l := strings.ToUpper(v.Volume)
		switch {
		case !letterPattern.MatchString(v.Volume):
			errs = append(errs, fmt.Errorf("data volume %q: want a drive letter such as E:", v.Volume))
		case v.FreeBytes < 0:
			errs = append(errs, fmt.Errorf("data volume %s: negative free space", v.Volume))
		case seen[l]:
			errs = append(errs, fmt.Errorf("data volume %s given twice", v.Volume))
		}
		seen[l] = true
	}
	if r.Command == CommandHarvest {
		if r.IncidentID == "" {
			errs = append(errs, errors.New("harvest needs the incident id"))
		}
		if _, err := url.Parse(r.SASURL); err != nil || r.SASURL == "" {
			errs = append(errs, errors.New("harvest needs a blob SAS URL"))
		}
		for name, q := range r.BlobSAS {
			if name == "" || q == "" {
				errs = append(errs, fmt.Errorf("blob SAS %q: empty name or SAS", name))
			}
		}
	}
	if r.Concurrency < 0 || r.Concurrency > 64 {
		errs = append(errs, fmt.Errorf("concurrency %d: want 0..64", r.Concurrency))
	}
	if r.BlockSizeMiB < 0 || r.BlockSizeMiB > 100 {
		errs = append(errs, fmt.Errorf("block size %d MiB: want 0..100", r.BlockSizeMiB))
	}
	return errors.Join(errs...)
}

// DecodeRequest reads a Request from its JSON form, refusing unknown fields.
func DecodeRequest(data []byte) (Request, error) {
	var r Request
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("decode agent request: %w", err)
	}
	if err := r.Validate(); err != nil {
		return Request{}, fmt.Errorf("agent request: %w", err)
	}
	return r, nil
}

// String prints the request with the SAS redacted, for logs.
func (r Request) String() string {
	c := r
	c.SASURL = RedactSAS(r.SASURL)
	if r.BlobSAS != nil {
		c.BlobSAS = make(map[string]string, len(r.BlobSAS))
		for name := range r.BlobSAS {
			c.BlobSAS[name] = "REDACTED"
		}
	}
	b, _ := json.Marshal(c)
	return string(b)
}

// RedactSAS drops the query (the SAS token) of a URL.
func RedactSAS(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	return u.String()
}
