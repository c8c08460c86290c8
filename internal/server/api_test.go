package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/vmrescue/vmrescue/internal/api"
)

func (e *env) do(t *testing.T, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, out
}

func TestAPI(t *testing.T) {
	e := newEnv(t, nil)

	// Open a dry-run remediation.
	code, _, body := e.do(t, "POST", "/api/remediations", `{"vmResourceId":"`+vmWeb+`","reason":"bsod at boot","dryRun":true}`)
	if code != 202 {
		t.Fatalf("create = %d %s", code, body)
	}
	var acc api.Accepted
	if err := json.Unmarshal(body, &acc); err != nil || acc.StatusURL != "/api/remediations/"+acc.IncidentID {
		t.Fatalf("create answer %s: %v", body, err)
	}
	if len(e.bus.sent) != 1 || !bytes.Contains(e.bus.sent[0].Body, []byte(`"dryRun":true`)) ||
		!bytes.Contains(e.bus.sent[0].Body, []byte(`"kind":"manual"`)) {
		t.Fatalf("first stage message does not carry dryRun and the manual trigger: %s", e.bus.sent)
	}

	// A second request for the same VM (case variant) conflicts and names the active incident.
	code, hdr, body := e.do(t, "POST", "/api/remediations", `{"vmResourceId":"`+strings.ToLower(vmWeb)+`"}`)
	if code != 409 || !strings.Contains(string(body), acc.IncidentID) || hdr.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("second create = %d %s", code, body)
	}

	// Status of one incident.
	code, _, body = e.do(t, "GET", acc.StatusURL, "")
	var view api.View
	if code != 200 || json.Unmarshal(body, &view) != nil {
		t.Fatalf("get = %d %s", code, body)
	}
	if view.State != "active" || !view.DryRun || !view.ChainVerified || len(view.Records) != 1 || view.Trigger == nil || view.Trigger.Reason != "bsod at boot" {
		t.Errorf("view = %+v", view)
	}

	// List by VM, case-insensitively.
	code, _, body = e.do(t, "GET", "/api/remediations?vm="+strings.ToUpper(vmWeb[:20])+vmWeb[20:], "")
	var list api.List
	if code != 200 || json.Unmarshal(body, &list) != nil || len(list.Incidents) != 1 || list.Incidents[0].IncidentID != acc.IncidentID {
		t.Fatalf("list = %d %s", code, body)
	}

	// Rollback queues a message to the failed queue.
	code, _, body = e.do(t, "POST", acc.StatusURL+"/rollback", "")
	if code != 202 {
		t.Fatalf("rollback = %d %s", code, body)
	}
	if last := e.bus.sent[len(e.bus.sent)-1]; last.Queue != "failed" || last.MessageID != acc.IncidentID+":failed" {
		t.Errorf("rollback sent %+v", last)
	}
}

func TestAPIErrors(t *testing.T) {
	e := newEnv(t, nil)
	big := `{"vmResourceId":"` + strings.Repeat("a", 70<<10) + `"}`
	tests := []struct {
		name, method, path, body string
		code                     int
		detail                   string
	}{
		{"malformed JSON", "POST", "/api/remediations", `{"vmResourceId":`, 400, "not valid JSON"},
		{"empty body", "POST", "/api/remediations", ``, 400, "empty"},
		{"wrong type", "POST", "/api/remediations", `{"vmResourceId":"` + vmWeb + `","dryRun":"yes"}`, 400, "dryRun"},
		{"unknown field", "POST", "/api/remediations", `{"vmResourceId":"` + vmWeb + `","dry_run":true}`, 400, "dry_run"},
		{"two objects", "POST", "/api/remediations", `{"vmResourceId":"` + vmWeb + `"}{}`, 400, "one JSON object"},
		{"too large", "POST", "/api/remediations", big, 413, "larger than"},
		{"not a VM", "POST", "/api/remediations", `{"vmResourceId":"` + strings.Replace(vmWeb, "virtualMachines", "disks", 1) + `"}`, 400, "wrong resource type"},
		{"extra segments", "POST", "/api/remediations", `{"vmResourceId":"` + vmWeb + `/extensions/x"}`, 400, "segments"},
		{"shell metacharacters", "POST", "/api/remediations", `{"vmResourceId":"` + vmWeb + `$(reboot)"}`, 400, "character"},
		{"foreign subscription", "POST", "/api/remediations", `{"vmResourceId":"` + vmOther + `"}`, 400, "outside the scope"},
		{"unknown incident", "GET", "/api/remediations/inc-20261120-031407-ffff00", ``, 404, "no incident"},
		{"malformed incident id", "GET", "/api/remediations/..%2f..%2fetc", ``, 404, "incident ids look like"},
		{"bad list filter", "GET", "/api/remediations?vm=nope", ``, 400, "vm:"},
		{"unknown query", "GET", "/api/remediations?color=red", ``, 400, "unknown query parameter"},
		{"rollback unknown", "POST", "/api/remediations/inc-20261120-031407-ffff00/rollback", ``, 404, "no incident"},
		{"unknown route", "GET", "/api/other", ``, 404, "no such API route"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := e.do(t, tc.method, tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("code = %d, want %d: %s", code, tc.code, body)
			}
			var p api.Problem
			if hdr.Get("Content-Type") != "application/problem+json" || json.Unmarshal(body, &p) != nil {
				t.Fatalf("not a problem document: %s %s", hdr.Get("Content-Type"), body)
			}
			if p.Status != tc.code || !strings.Contains(p.Detail, tc.detail) {
				t.Errorf("detail %q does not mention %q", p.Detail, tc.detail)
			}
		})
	}
	if len(e.bus.sent) != 0 {
		t.Errorf("bad requests sent messages: %v", e.bus.ids())
	}
}
