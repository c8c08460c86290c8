package harvest

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// execSelf runs this test binary as the memory child.
func execSelf(t *testing.T, path, url string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), memChildEnv+"="+path, memChildURL+"="+url)
	cmd.Stderr = os.Stderr
	return cmd
}

// peakMemory reads the process's peak resident set (VmHWM) and the Go heap figures.
func peakMemory() (vmHWMKiB int64, heapSysMiB, totalAllocMiB float64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f, err := os.Open("/proc/self/status")
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
				vmHWMKiB, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			}
		}
	}
	return vmHWMKiB, float64(ms.HeapSys) / (1 << 20), float64(ms.TotalAlloc) / (1 << 20)
}
