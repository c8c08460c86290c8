//go:build !windows

package agent

import "errors"

// SystemWindows returns the Windows of the machine the agent runs on. The agent runs on
// Windows only; elsewhere it is tested through wintest.Machine.
func SystemWindows() (Windows, error) {
	return nil, errors.New("the rescue agent runs on Windows only (build with GOOS=windows)")
}
