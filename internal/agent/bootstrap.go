package agent

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
)

// BootstrapScript is the PowerShell script Run Command executes on the rescue VM (the
// `source.script` of a managed Run Command). It downloads the agent, checks its SHA-256, runs
// `handler agent --request-env` with the request in RequestEnv, and passes the agent's output
// and exit code through. It holds no value of its own: all arrive as parameters.
//
//go:embed bootstrap.ps1
var BootstrapScript string

// The bootstrap's parameters.
const (
	ParamAgentURL     = "AgentUrl"     // read SAS URL of the agent binary (https)
	ParamAgentSHA256  = "AgentSha256"  // its SHA-256, hex
	ParamAgentRequest = "AgentRequest" // the Request as JSON
)

// ScriptParameter is one Run Command parameter (armcompute.RunCommandInputParameter).
type ScriptParameter struct {
	Name  string
	Value string
}

var sha256Hex = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// BootstrapParameters returns the Run Command parameters for one agent run. Pass them all as
// protectedParameters: the agent URL and a harvest request carry SAS tokens.
func BootstrapParameters(agentURL, agentSHA256 string, req Request) ([]ScriptParameter, error) {
	if !sha256Hex.MatchString(agentSHA256) {
		return nil, fmt.Errorf("agent SHA-256 %q: want 64 hex digits", agentSHA256)
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	return []ScriptParameter{
		{ParamAgentURL, agentURL},
		{ParamAgentSHA256, agentSHA256},
		{ParamAgentRequest, string(raw)},
	}, nil
}
