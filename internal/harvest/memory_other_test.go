//go:build !linux

package harvest

import (
	"os/exec"
	"runtime"
	"testing"
)

// execSelf is Linux-only: the peak resident set comes from /proc.
func execSelf(t *testing.T, path, url string) *exec.Cmd {
	t.Skip("the memory measurement reads /proc/self/status")
	return nil
}

func peakMemory() (vmHWMKiB int64, heapSysMiB, totalAllocMiB float64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return 0, float64(ms.HeapSys) / (1 << 20), float64(ms.TotalAlloc) / (1 << 20)
}
