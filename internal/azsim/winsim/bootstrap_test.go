package winsim_test

import (
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azsim/winsim"
)

// TestBootstrapChecks: the executor refuses what the bootstrap refuses, with its messages and
// exit codes, and a request the agent cannot parse still ends in a result line.
func TestBootstrapChecks(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil, winsim.LocalOptions{})
	rescue := "vmrescue-rescue-2"
	good := agent.Request{Command: agent.CommandInspect, LUN: 0, MemoryGB: 8}
	params := func(url, sum, request string) []agent.ScriptParameter {
		return []agent.ScriptParameter{{Name: agent.ParamAgentURL, Value: url}, {Name: agent.ParamAgentSHA256, Value: sum},
			{Name: agent.ParamAgentRequest, Value: request}}
	}
	goodJSON := `{"command":"inspect","lun":0,"memoryGB":8}`
	wrongSum := strings.Repeat("ab", 32)
	tests := []struct {
		name     string
		script   string
		params   []agent.ScriptParameter
		wantExit int32
		wantErr  string // in the error stream
		wantLine bool   // a result line in the output
		refused  bool   // ... a terminal refusal
	}{
		{name: "another script", script: "Write-Output hello", params: params(r.agentURL, r.agentSum, goodJSON),
			wantExit: 1, wantErr: "bootstrap script only"},
		{name: "hash not hex", params: params(r.agentURL, "nothex", goodJSON), wantExit: 1, wantErr: "AgentSha256 must be 64 hex digits"},
		{name: "plain http off loopback", params: params("http://example.com/agent.exe", r.agentSum, goodJSON),
			wantExit: 1, wantErr: "AgentUrl must be an https URL"},
		{name: "hash mismatch", params: params(r.agentURL, wrongSum, goodJSON), wantExit: 1,
			wantErr: "agent SHA-256 mismatch: got " + strings.ToUpper(r.agentSum)},
		{name: "agent URL with a broken SAS", params: params(strings.Replace(r.agentURL, ".exe", ".missing", 1), wrongSum, goodJSON),
			wantExit: 1, wantErr: "(403) Forbidden"},
		{name: "request the agent refuses", params: params(r.agentURL, r.agentSum, `{"command":"format-c"}`),
			wantExit: agent.ExitUsage, wantLine: true, refused: true},
		// The disk may not have come up yet: a failure a retry may cure.
		{name: "no disk at the LUN", params: mustParams(t, r, good), wantExit: agent.ExitFailed, wantLine: true},
	}
	for _, tc := range tests { // one Run Command at a time on the rescue VM: sequential
		t.Run(tc.name, func(t *testing.T) {
			script := tc.script
			if script == "" {
				script = agent.BootstrapScript
			}
			out := r.runCommand(rescue, "check-"+strings.ReplaceAll(tc.name, " ", "-"), tc.params, script)
			if out.exitCode != tc.wantExit || out.state != armcompute.ExecutionStateFailed || !strings.Contains(out.errTail, tc.wantErr) {
				t.Errorf("exit %d, state %s, error %q; want exit %d, Failed, error with %q", out.exitCode, out.state, out.errTail, tc.wantExit, tc.wantErr)
			}
			res, err := agent.ParseResult(out.tail)
			if (err == nil) != tc.wantLine {
				t.Fatalf("result line present = %v (%v), want %v", err == nil, err, tc.wantLine)
			}
			if tc.wantLine && (res.OK || res.Refused != tc.refused) {
				t.Errorf("result %+v, want a failure (refused: %v)", res, tc.refused)
			}
			if strings.Contains(out.errTail, "sig=") {
				t.Errorf("a SAS leaked into the error stream: %s", out.errTail)
			}
		})
	}
}

func mustParams(t *testing.T, r *rig, req agent.Request) []agent.ScriptParameter {
	t.Helper()
	p, err := agent.BootstrapParameters(r.agentURL, r.agentSum, req)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunCommandOffThePool: a Run Command on a VM outside the rescue pool fails.
func TestRunCommandOffThePool(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil, winsim.LocalOptions{})
	out := r.runCommand("app-web-01", "x", mustParams(t, r, agent.Request{Command: agent.CommandInspect, LUN: 0, MemoryGB: 8}), agent.BootstrapScript)
	if out.exitCode != 1 || !strings.Contains(out.errTail, "not a rescue VM") {
		t.Errorf("exit %d, error %q", out.exitCode, out.errTail)
	}
}

// TestAgentDownloadCached: the bootstrap downloads the agent once per rescue VM and hash; the
// simulated run time says so.
func TestAgentDownloadCached(t *testing.T) {
	t.Parallel()
	r := newRig(t, nil, winsim.LocalOptions{})
	req := agent.Request{Command: agent.CommandInspect, LUN: 0, MemoryGB: 8}
	for i, rescue := range []string{"vmrescue-rescue-1", "vmrescue-rescue-1", "vmrescue-rescue-2"} {
		res := r.w.Run(ctxT(t), azsim.RunCommandRequest{
			VM:         mustVM(t, r, rescue),
			RunCommand: azsim.RunCommand{Script: agent.BootstrapScript, ProtectedParameters: toParams(mustParams(t, r, req))},
		})
		base := winsim.DefaultLatency()[winsim.LatencyAgentPrefix+"inspect"]
		want := base
		if i != 1 {
			want += winsim.DefaultLatency()[winsim.LatencyAgentDownload]
		}
		if res.Duration != want {
			t.Errorf("run %d on %s: duration %v, want %v", i+1, rescue, res.Duration, want)
		}
	}
}

func mustVM(t *testing.T, r *rig, name string) azsim.VM {
	t.Helper()
	vm, ok := r.sim.State().VM(r.sim.Fleet().VMID(name))
	if !ok {
		t.Fatalf("no VM %s", name)
	}
	return vm
}

func toParams(ps []agent.ScriptParameter) []azsim.RunCommandParam {
	var out []azsim.RunCommandParam
	for _, p := range ps {
		out = append(out, azsim.RunCommandParam{Name: p.Name, Value: p.Value})
	}
	return out
}
