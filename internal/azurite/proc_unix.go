//go:build !windows

package azurite

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup puts Azurite (node and its children) in a process group of its own, so that
// Stop ends them all.
func setProcessGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

func terminateGroup(p *os.Process, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(-p.Pid, sig)
}
