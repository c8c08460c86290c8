package azsim

import (
	"slices"
	"strings"
)

// VMSize is one VM size as Resource SKUs reports it.
type VMSize struct {
	Name              string   // e.g. Standard_D4s_v5
	Family            string   // e.g. standardDSv5Family
	VCPUs             int      // capability vCPUs
	MemoryGB          float64  // capability MemoryGB
	MaxDataDiskCount  int      // capability MaxDataDiskCount
	HyperVGenerations []string // capability HyperVGenerations, e.g. V1,V2
}

// Sizes is the catalog of VM sizes the simulator knows, with Azure's published figures (Azure
// "Sizes for virtual machines in Azure": the B, Dv3, Dsv5, Esv5, Fsv2, DSv2 and Av2 series pages,
// columns vCPU, Memory: GiB, Max data disks).
var Sizes = []VMSize{
	{"Standard_A1_v2", "standardAv2Family", 1, 2, 2, []string{"V1"}},
	{"Standard_A2_v2", "standardAv2Family", 2, 4, 4, []string{"V1"}},
	{"Standard_B2s", "standardBSFamily", 2, 4, 4, []string{"V1", "V2"}},
	{"Standard_B2ms", "standardBSFamily", 2, 8, 4, []string{"V1", "V2"}},
	{"Standard_DS1_v2", "standardDSv2Family", 1, 3.5, 4, []string{"V1", "V2"}},
	{"Standard_DS2_v2", "standardDSv2Family", 2, 7, 8, []string{"V1", "V2"}},
	{"Standard_D2s_v3", "standardDSv3Family", 2, 8, 4, []string{"V1", "V2"}},
	{"Standard_D4s_v3", "standardDSv3Family", 4, 16, 8, []string{"V1", "V2"}},
	{"Standard_D8s_v3", "standardDSv3Family", 8, 32, 16, []string{"V1", "V2"}},
	{"Standard_D2s_v5", "standardDSv5Family", 2, 8, 4, []string{"V1", "V2"}},
	{"Standard_D4s_v5", "standardDSv5Family", 4, 16, 8, []string{"V1", "V2"}},
	{"Standard_D8s_v5", "standardDSv5Family", 8, 32, 16, []string{"V1", "V2"}},
	{"Standard_D16s_v5", "standardDSv5Family", 16, 64, 32, []string{"V1", "V2"}},
	{"Standard_E4s_v5", "standardESv5Family", 4, 32, 8, []string{"V1", "V2"}},
	{"Standard_E8s_v5", "standardESv5Family", 8, 64, 16, []string{"V1", "V2"}},
	{"Standard_E16s_v5", "standardESv5Family", 16, 128, 32, []string{"V1", "V2"}},
	{"Standard_F4s_v2", "standardFSv2Family", 4, 8, 8, []string{"V1", "V2"}},
}

// LookupSize finds a size by name, case-insensitively.
func LookupSize(name string) (VMSize, bool) {
	i := slices.IndexFunc(Sizes, func(s VMSize) bool { return strings.EqualFold(s.Name, name) })
	if i < 0 {
		return VMSize{}, false
	}
	return Sizes[i], true
}

// SizeForMemory is the smallest catalog size with at least memoryGB of memory that supports the
// generation (fewest vCPUs first, then least memory).
func SizeForMemory(memoryGB float64, generation string) (VMSize, bool) {
	var best *VMSize
	for i := range Sizes {
		s := &Sizes[i]
		if s.MemoryGB < memoryGB || (generation != "" && !slices.Contains(s.HyperVGenerations, strings.ToUpper(generation))) {
			continue
		}
		if best == nil || s.MemoryGB < best.MemoryGB || (s.MemoryGB == best.MemoryGB && s.VCPUs < best.VCPUs) {
			best = s
		}
	}
	if best == nil {
		return VMSize{}, false
	}
	return *best, true
}
