// Package api serves the HTTP API of the contract: open a remediation, read its state, list
// remediations for a VM, and request a rollback. The Functions host forwards the original request
// (enableForwardingHttpRequest), so handlers see /api/... paths.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/bus"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/intake"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// MaxBody bounds a request body.
const MaxBody = 64 << 10

// maxList bounds how many incidents one list answer carries.
const maxList = 500

// Trail is the part of the audit trail the API reads.
type Trail interface {
	Read(ctx context.Context, incidentID string) ([]audit.Record, error)
	State(ctx context.Context, incidentID string) (string, error)
	Find(ctx context.Context, vmResourceID, state string) ([]string, error)
	List(ctx context.Context, state string) ([]string, error)
	Append(ctx context.Context, incidentID string, e audit.Entry) (audit.Record, error)
}

// Opener opens incidents (intake.Intake).
type Opener interface {
	Open(ctx context.Context, req intake.Request) (intake.Result, error)
}

// API holds the handlers' dependencies.
type API struct {
	Trail  Trail
	Intake Opener
	Bus    bus.Sender
	Log    *slog.Logger
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/remediations", a.create)
	mux.HandleFunc("GET /api/remediations", a.list)
	mux.HandleFunc("GET /api/remediations/{incidentId}", a.get)
	mux.HandleFunc("POST /api/remediations/{incidentId}/rollback", a.rollback)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, http.StatusNotFound, "no such API route: "+r.Method+" "+r.URL.Path)
	})
}

// CreateRequest is the body of POST /api/remediations.
type CreateRequest struct {
	VMResourceID string `json:"vmResourceId"`
	Reason       string `json:"reason"`
	DryRun       bool   `json:"dryRun"`
}

// Accepted is the 202 answer of create and rollback.
type Accepted struct {
	IncidentID string `json:"incidentId"`
	StatusURL  string `json:"statusUrl"`
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	if !decodeBody(w, r, &req) {
		return
	}
	vm, err := resourceid.ParseVM(req.VMResourceID)
	if err != nil {
		writeProblem(w, r, http.StatusBadRequest, "vmResourceId: "+err.Error())
		return
	}
	if len(req.Reason) > 1024 {
		writeProblem(w, r, http.StatusBadRequest, "reason: longer than 1024 characters")
		return
	}
	res, err := a.Intake.Open(r.Context(), intake.Request{
		VM:      vm,
		Trigger: incident.Trigger{Kind: incident.TriggerManual, Reason: req.Reason},
		DryRun:  req.DryRun,
	})
	switch {
	case errors.Is(err, intake.ErrOutOfScope):
		writeProblem(w, r, http.StatusBadRequest, "vmResourceId: the VM's subscription or resource group is outside the scope vmrescue is allowed to act in")
		return
	case errors.Is(err, intake.ErrBusy):
		w.Header().Set("Retry-After", "5")
		writeProblem(w, r, http.StatusServiceUnavailable, err.Error())
		return
	case err != nil:
		a.log().Error("open incident", "vm", vm.String(), "err", err)
		writeProblem(w, r, http.StatusInternalServerError, "could not open the incident: "+err.Error())
		return
	case !res.Opened:
		writeProblemFor(w, r, http.StatusConflict, "the VM already has an active incident "+res.IncidentID, res.IncidentID)
		return
	}
	writeJSON(w, http.StatusAccepted, Accepted{IncidentID: res.IncidentID, StatusURL: statusURL(res.IncidentID)})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("incidentId")
	view, ok := a.view(w, r, id, true)
	if ok {
		writeJSON(w, http.StatusOK, view)
	}
}

// view reads one incident, answering the error itself when it cannot.
func (a *API) view(w http.ResponseWriter, r *http.Request, id string, withRecords bool) (View, bool) {
	if !incident.ValidID(id) {
		writeProblem(w, r, http.StatusNotFound, fmt.Sprintf("no incident %q: incident ids look like inc-20261120-031407-7f3c", clip(id)))
		return View{}, false
	}
	recs, err := a.Trail.Read(r.Context(), id)
	if errors.Is(err, audit.ErrNotFound) {
		writeProblem(w, r, http.StatusNotFound, "no incident "+id)
		return View{}, false
	}
	if err != nil {
		writeProblem(w, r, http.StatusBadGateway, "read audit trail: "+err.Error())
		return View{}, false
	}
	state, err := a.Trail.State(r.Context(), id)
	if err != nil {
		writeProblem(w, r, http.StatusBadGateway, "read incident state: "+err.Error())
		return View{}, false
	}
	v := Summarize(id, state, recs)
	if withRecords {
		v.Records = recs
	}
	return v, true
}

// List is the answer of GET /api/remediations.
type List struct {
	Incidents []View `json:"incidents"`
	Truncated bool   `json:"truncated,omitempty"`
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != "vm" && k != "state" && k != "code" {
			writeProblem(w, r, http.StatusBadRequest, fmt.Sprintf("unknown query parameter %q: use vm or state", clip(k)))
			return
		}
	}
	state := q.Get("state")
	switch state {
	case "", incident.StateActive, incident.StateClosed, incident.StateFailed, incident.StateRejected:
	default:
		writeProblem(w, r, http.StatusBadRequest, "state must be active, closed, failed or rejected")
		return
	}
	var ids []string
	var err error
	if vm := q.Get("vm"); vm != "" {
		id, perr := resourceid.ParseVM(vm)
		if perr != nil {
			writeProblem(w, r, http.StatusBadRequest, "vm: "+perr.Error())
			return
		}
		ids, err = a.Trail.Find(r.Context(), id.String(), state)
	} else {
		ids, err = a.Trail.List(r.Context(), state)
	}
	if err != nil {
		writeProblem(w, r, http.StatusBadGateway, "find incidents: "+err.Error())
		return
	}
	out := List{Incidents: []View{}}
	if len(ids) > maxList {
		ids, out.Truncated = ids[len(ids)-maxList:], true
	}
	for _, id := range ids {
		recs, err := a.Trail.Read(r.Context(), id)
		if err != nil {
			continue // removed between find and read
		}
		st, _ := a.Trail.State(r.Context(), id)
		out.Incidents = append(out.Incidents, Summarize(id, st, recs))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) rollback(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("incidentId")
	if r.ContentLength > 0 {
		var body struct {
			Reason string `json:"reason"`
		}
		if !decodeBody(w, r, &body) {
			return
		}
	}
	v, ok := a.view(w, r, id, false)
	if !ok {
		return
	}
	if v.State == incident.StateRejected {
		writeProblem(w, r, http.StatusConflict, "incident "+id+" was rejected at intake: there is nothing to roll back")
		return
	}
	// The rollback runs in the Failed function, off the HTTP path: its ARM operations take minutes.
	if _, err := a.Trail.Append(r.Context(), id, audit.Entry{
		VMResourceID: v.VMResourceID, Stage: "rollback", Event: incident.EventStarted,
		Detail: map[string]any{"requestedBy": "api"},
	}); err != nil {
		writeProblem(w, r, http.StatusBadGateway, "record rollback request: "+err.Error())
		return
	}
	msg := incident.Message{
		Version: incident.MessageVersion, IncidentID: id, VMResourceID: v.VMResourceID, Stage: incident.StageFailed,
		Trigger: incident.Trigger{Kind: incident.TriggerManual, Reason: "rollback requested"},
		DryRun:  v.DryRun, Artifacts: v.Artifacts,
	}
	if err := a.Bus.Send(r.Context(), msg, bus.SendOptions{}); err != nil {
		writeProblem(w, r, http.StatusBadGateway, "queue rollback: "+err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, Accepted{IncidentID: id, StatusURL: statusURL(id)})
}

// decodeBody reads a JSON body strictly, answering the error itself when it cannot.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeProblem(w, r, http.StatusUnsupportedMediaType, "send the body as application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			writeProblem(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", MaxBody))
		case errors.Is(err, io.EOF):
			writeProblem(w, r, http.StatusBadRequest, "body is empty: send a JSON object")
		case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
			writeProblem(w, r, http.StatusBadRequest, "body is not valid JSON: "+err.Error())
		case errors.As(err, &typ):
			writeProblem(w, r, http.StatusBadRequest, fmt.Sprintf("field %s must be a %s", typ.Field, typ.Type))
		default:
			writeProblem(w, r, http.StatusBadRequest, "body: "+err.Error())
		}
		return false
	}
	if dec.More() {
		writeProblem(w, r, http.StatusBadRequest, "body must hold one JSON object")
		return false
	}
	return true
}

func statusURL(id string) string { return "/api/remediations/" + id }

func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

func (a *API) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}
