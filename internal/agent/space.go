package agent

import (
	"fmt"
	"sort"
)

// DumpPlan is patch's decision on what dump to ask for and where Windows writes it.
type DumpPlan struct {
	Type             string // DumpComplete or DumpKernel
	CrashDumpEnabled uint32 // 1 or 2
	DumpFile         string // as the VM sees it
	DumpVolume       string // "os" or the data volume's letter
	Reason           string
	Overridden       bool
}

// SpaceInput is what the dump decision rests on.
type SpaceInput struct {
	MemoryBytes int64
	MarginBytes int64
	OSFreeBytes int64        // the Windows volume of the attached disk
	Data        []DataVolume // the VM's data volumes, as the caller declared them
	Override    string       // "", auto, complete or kernel
}

// kernelShare estimates a kernel dump at a third of memory, the usual upper bound.
const kernelShare = 3

// PlanDump chooses the dump type and place:
//   - a complete dump (CrashDumpEnabled=1) on the OS volume when its free space is at least
//     memory plus margin;
//   - else a complete dump on the data volume with the most free space, if that one has enough;
//   - else a kernel dump (CrashDumpEnabled=2), with the reason, on the OS volume when a kernel
//     dump fits there, else on the roomiest data volume that fits one, else on the OS volume.
//
// An override of complete or kernel fixes the type; the place is chosen the same way.
func PlanDump(in SpaceInput) DumpPlan {
	need := in.MemoryBytes + in.MarginBytes
	kernelNeed := in.MemoryBytes/kernelShare + in.MarginBytes
	data := append([]DataVolume(nil), in.Data...)
	sort.SliceStable(data, func(i, j int) bool { return data[i].FreeBytes > data[j].FreeBytes })
	var best *DataVolume
	if len(data) > 0 {
		best = &data[0]
	}
	osPlan := func(typ, reason string) DumpPlan {
		return DumpPlan{Type: typ, CrashDumpEnabled: enabledFor(typ), DumpFile: DefaultDumpFile, DumpVolume: RoleOS, Reason: reason}
	}
	dataPlan := func(typ string, v DataVolume, reason string) DumpPlan {
		return DumpPlan{Type: typ, CrashDumpEnabled: enabledFor(typ), DumpFile: JoinPath(Letter(v.Volume), "MEMORY.DMP"),
			DumpVolume: Letter(v.Volume), Reason: reason}
	}
	osFree := fmt.Sprintf("the OS volume has %s free", gib(in.OSFreeBytes))
	needs := fmt.Sprintf("memory %s + margin %s", gib(in.MemoryBytes), gib(in.MarginBytes))

	placeKernel := func(why string) DumpPlan {
		switch {
		case in.OSFreeBytes >= kernelNeed:
			return osPlan(DumpKernel, why+"; kernel dump on the OS volume")
		case best != nil && best.FreeBytes >= kernelNeed:
			return dataPlan(DumpKernel, *best, fmt.Sprintf("%s; kernel dump on data volume %s (%s free)", why, Letter(best.Volume), gib(best.FreeBytes)))
		}
		return osPlan(DumpKernel, fmt.Sprintf("%s; no volume has the %s a kernel dump may need, so the OS volume is used and the dump may not fit", why, gib(kernelNeed)))
	}

	switch in.Override {
	case DumpKernel:
		p := placeKernel("kernel dump requested")
		p.Overridden = true
		return p
	case DumpComplete:
		var p DumpPlan
		switch {
		case in.OSFreeBytes >= need:
			p = osPlan(DumpComplete, fmt.Sprintf("complete dump requested; %s ≥ %s", osFree, needs))
		case best != nil && best.FreeBytes >= need:
			p = dataPlan(DumpComplete, *best, fmt.Sprintf("complete dump requested; %s < %s; data volume %s has %s", osFree, needs, Letter(best.Volume), gib(best.FreeBytes)))
		default:
			p = osPlan(DumpComplete, fmt.Sprintf("complete dump requested although no volume has %s (%s); the dump may not be written", gib(need), osFree))
		}
		p.Overridden = true
		return p
	}

	if in.OSFreeBytes >= need {
		return osPlan(DumpComplete, fmt.Sprintf("%s ≥ %s", osFree, needs))
	}
	if best != nil && best.FreeBytes >= need {
		return dataPlan(DumpComplete, *best, fmt.Sprintf("%s < %s; data volume %s has %s", osFree, needs, Letter(best.Volume), gib(best.FreeBytes)))
	}
	why := fmt.Sprintf("no volume has %s free for a complete dump (%s", gib(need), osFree)
	if best != nil {
		why += fmt.Sprintf(", the roomiest data volume %s has %s", Letter(best.Volume), gib(best.FreeBytes))
	}
	return placeKernel(why + ")")
}

func enabledFor(typ string) uint32 {
	if typ == DumpComplete {
		return crashDumpComplete
	}
	return crashDumpKernel
}

func gib(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }

// volumeSpaces reports each volume's free space against memory plus margin.
func volumeSpaces(memory, margin int64, vols []VolumeSpace) []VolumeSpace {
	out := make([]VolumeSpace, len(vols))
	for i, v := range vols {
		v.FitsComplete = v.FreeBytes >= memory+margin
		out[i] = v
	}
	return out
}
