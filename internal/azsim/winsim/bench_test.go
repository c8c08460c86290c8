package winsim_test

import (
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/azsim/winsim"
)

// benchDisk is the OS disk of a VM with a dump present: the largest the default fleet has.
func benchDisk(b *testing.B) *winsim.Disk {
	spec := azsim.VMSpec{Name: "b", OSType: "Windows", HyperVGeneration: "V2", Size: "Standard_E8s_v5", OSDiskFreeGB: 60,
		DumpPresent: true, BugCheck: 0x3B}
	return winsim.OSDiskFor(spec, winsim.DefaultDumpScale, time.Now()).(*winsim.Disk)
}

// BenchmarkDiskHash is the cost of checking one original OS disk (ChangedOriginalDisks hashes
// every original).
func BenchmarkDiskHash(b *testing.B) {
	d := benchDisk(b)
	for b.Loop() {
		_ = d.Hash()
	}
}

// BenchmarkDiskClone is the cost of a snapshot or a disk made from one.
func BenchmarkDiskClone(b *testing.B) {
	d := benchDisk(b)
	for b.Loop() {
		_ = d.Clone()
	}
}
