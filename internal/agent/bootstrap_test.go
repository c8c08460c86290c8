package agent

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

func TestBootstrapScript(t *testing.T) {
	t.Parallel()
	lines := strings.Split(strings.TrimRight(BootstrapScript, "\n"), "\n")
	if len(lines) > 30 {
		t.Errorf("bootstrap has %d lines, over 30", len(lines))
	}
	for _, p := range []string{ParamAgentURL, ParamAgentSHA256, ParamAgentRequest} {
		if !regexp.MustCompile(`\[string\]\$` + p + ` = \$env:` + p).MatchString(BootstrapScript) {
			t.Errorf("parameter %s is not declared", p)
		}
	}
	for _, must := range []string{
		"Get-FileHash -LiteralPath $tmp -Algorithm SHA256", // the download is checked before it runs
		"$env:" + RequestEnv + " = $AgentRequest",          // the request travels in the environment
		"& $exe agent --request-env",
		"exit $LASTEXITCODE",
	} {
		if !strings.Contains(BootstrapScript, must) {
			t.Errorf("bootstrap lacks %q", must)
		}
	}
	// No value is ever spliced into code: no Invoke-Expression, no template markers, and the
	// request never reaches a command line.
	for _, never := range []string{"Invoke-Expression", "iex ", "{{", "%s", "-Command", "$AgentRequest)"} {
		if strings.Contains(BootstrapScript, never) {
			t.Errorf("bootstrap holds %q", never)
		}
	}
}

func TestBootstrapParameters(t *testing.T) {
	t.Parallel()
	req := Request{Command: CommandHarvest, IncidentID: "inc-20261120-031407-7f3c", LUN: 3,
		SASURL: `https://acct.blob.core.windows.net/dumps/inc-20261120-031407-7f3c?sv=2024-08-04&sig=a%2Fb"; rm -rf /`}
	sum := strings.Repeat("ab", 32)
	params, err := BootstrapParameters("https://acct.blob.core.windows.net/tools/handler.exe?sig=x", sum, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(params) != 3 || params[0].Name != ParamAgentURL || params[1].Value != sum || params[2].Name != ParamAgentRequest {
		t.Fatalf("params %+v", params)
	}
	got, err := DecodeRequest([]byte(params[2].Value))
	if err != nil || got.SASURL != req.SASURL || got.LUN != 3 {
		t.Errorf("request does not round-trip: %+v %v", got, err)
	}
	var raw map[string]any
	if json.Unmarshal([]byte(params[2].Value), &raw) != nil {
		t.Error("request is not JSON")
	}
	if _, err := BootstrapParameters("https://x", "nothex", req); err == nil {
		t.Error("a bad SHA-256 accepted")
	}
	if _, err := BootstrapParameters("https://x", sum, Request{Command: CommandPatch}); err == nil {
		t.Error("an invalid request accepted")
	}
}
