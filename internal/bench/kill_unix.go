//go:build !windows

package bench

import "syscall"

// killHard ends a process at once, without a chance to clean up: SIGKILL.
func killHard(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
