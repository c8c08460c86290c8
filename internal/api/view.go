package api

import (
	"encoding/json"
	"time"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// View is an incident's state as the status API shows it, derived from its audit records.
type View struct {
	IncidentID    string             `json:"incidentId"`
	VMResourceID  string             `json:"vmResourceId"`
	State         string             `json:"state"`
	Stage         string             `json:"stage"`
	LastEvent     string             `json:"lastEvent"`
	Outcome       string             `json:"outcome,omitempty"`
	DryRun        bool               `json:"dryRun"`
	Trigger       *incident.Trigger  `json:"trigger,omitempty"`
	OpenedAt      time.Time          `json:"openedAt"`
	UpdatedAt     time.Time          `json:"updatedAt"`
	Artifacts     incident.Artifacts `json:"artifacts"`
	ChainVerified bool               `json:"chainVerified"`
	ChainError    string             `json:"chainError,omitempty"`
	Records       []audit.Record     `json:"records,omitempty"`
}

// detail is the part of a record's detail the view reads. Stages put what they made under
// "artifacts", and the closing record its "outcome".
type detail struct {
	Artifacts *incident.Artifacts `json:"artifacts"`
	Outcome   string              `json:"outcome"`
	Trigger   *incident.Trigger   `json:"trigger"`
	DryRun    *bool               `json:"dryRun"`
}

// Summarize derives the view of an incident from its records and its state tag.
func Summarize(id, state string, recs []audit.Record) View {
	v := View{IncidentID: id, State: state, Artifacts: incident.Artifacts{}}
	if err := audit.Verify(recs); err != nil {
		v.ChainError = err.Error()
	} else {
		v.ChainVerified = true
	}
	for i, r := range recs {
		if i == 0 {
			v.OpenedAt, v.VMResourceID = r.Time, r.VMResourceID
		}
		v.UpdatedAt, v.LastEvent = r.Time, r.Event
		if r.Stage != "" && r.Event != incident.EventSignal {
			v.Stage = r.Stage
		}
		var d detail
		if len(r.Detail) > 0 && json.Unmarshal(r.Detail, &d) == nil {
			if d.Artifacts != nil {
				mergeArtifacts(&v.Artifacts, *d.Artifacts)
			}
			if d.Outcome != "" {
				v.Outcome = d.Outcome
			}
			if d.Trigger != nil && v.Trigger == nil {
				v.Trigger = d.Trigger
			}
			if d.DryRun != nil && r.Event == incident.EventOpened {
				v.DryRun = *d.DryRun
			}
		}
	}
	return v
}

// mergeArtifacts copies every field set in src over dst: later stages add to what earlier made.
func mergeArtifacts(dst *incident.Artifacts, src incident.Artifacts) {
	var a, b map[string]any
	da, _ := json.Marshal(dst)
	sb, _ := json.Marshal(src)
	_ = json.Unmarshal(da, &a)
	_ = json.Unmarshal(sb, &b)
	for k, val := range b {
		a[k] = val
	}
	merged, _ := json.Marshal(a)
	var out incident.Artifacts
	if json.Unmarshal(merged, &out) == nil {
		*dst = out
	}
}
