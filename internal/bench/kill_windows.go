package bench

import "os"

// killHard ends a process at once, without a chance to clean up: TerminateProcess.
func killHard(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}
