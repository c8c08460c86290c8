//go:build windows

package localhost

import (
	"os"
	"os/exec"
)

func setProcessGroup(*exec.Cmd) {}

// terminate ends p. Windows has no SIGTERM for console processes started this way, so both the
// polite and the forced stop kill the process.
func terminate(p *os.Process, _ bool) { _ = p.Kill() }
