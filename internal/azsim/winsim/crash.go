package winsim

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
	"github.com/vmrescue/vmrescue/internal/agent/wintest"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/dumpfile"
)

// CrashDumpEnabled values (CrashControl).
const (
	crashDumpNone      = 0
	crashDumpComplete  = 1
	crashDumpKernel    = 2
	crashDumpSmall     = 3
	crashDumpAutomatic = 7
)

// kernelShare: a kernel (or automatic) dump is taken as a third of memory, the usual upper
// bound Microsoft gives and the figure the agent plans with.
const kernelShare = 3

// dumpBytes is the real size of the memory dump a CrashDumpEnabled setting asks for; 0 when it
// asks for none.
func dumpBytes(enabled uint32, memory int64) int64 {
	switch enabled {
	case crashDumpComplete:
		return memory + 2<<20 // all of memory, the header and the bitmap
	case crashDumpKernel, crashDumpAutomatic:
		return memory / kernelShare
	}
	return 0
}

func dumpTypeName(enabled uint32) string {
	if enabled == crashDumpComplete {
		return agent.DumpComplete
	}
	return agent.DumpKernel
}

// bugCheckParameters are plausible parameters for a stop code: the ones a reader of the ticket
// recognizes for the common codes, kernel addresses otherwise.
func bugCheckParameters(code uint32) [4]uint64 {
	const addr, pool, ctx = 0xFFFFF8031A2B3C4D, 0xFFFF9A0C12345080, 0xFFFF9A0C123447C0
	switch code {
	case 0x7E, 0x8E, 0x1E, 0x1000007E, 0x1000008E:
		return [4]uint64{0xFFFFFFFFC0000005, addr, pool, ctx} // access violation in a driver
	case 0xD1:
		return [4]uint64{0x28, 0x2, 0x0, addr} // IRQL 2, read
	case 0x50:
		return [4]uint64{pool, 0x0, addr, 0x2}
	case 0x7B:
		return [4]uint64{0xFFFFF8801A2B3C40, 0xFFFFFFFFC0000034, 0x0, 0x0} // object name not found
	case 0x3B:
		return [4]uint64{0xC0000005, addr, ctx, 0x0}
	case 0xEF:
		return [4]uint64{pool, 0x0, 0x0, 0x0}
	case 0x133:
		return [4]uint64{0x1, 0x1E00, 0xFFFFF8031A2FB320, 0x0}
	}
	return [4]uint64{pool, addr, 0x0, 0x0}
}

func dumpSpec(code, enabled uint32, real int64, at time.Time) dumpfile.Spec {
	typ := dumpfile.TypeBitmapKernel
	if enabled == crashDumpComplete {
		typ = dumpfile.TypeBitmapFull
	}
	return dumpfile.Spec{BugCheckCode: code, Parameters: bugCheckParameters(code), DumpType: typ,
		SystemTime: at, RequiredBytes: uint64(real)}
}

func minidumpSpec(code uint32, at time.Time) dumpfile.Spec {
	return dumpfile.Spec{BugCheckCode: code, Parameters: bugCheckParameters(code), DumpType: dumpfile.TypeTriage,
		SystemTime: at, RequiredBytes: minidumpSize}
}

// onVMStarted is azsim's OnVMStarted: the guest of a fleet VM boots. A VM whose behaviour is
// healthy-after-patch and whose OS disk is no longer its original boots to the desktop. Any
// other Windows or Linux VM crashes at boot: after LatencyBoot the stop error happens; with
// crash dumps enabled on the disk (CrashDumpEnabled of Select\Current's control set) Windows
// writes the dump where DumpFile says, if the volume has room (crash-without-dump writes none);
// then the VM reboots into the same crash, a loop, and after LatencyEventDelay Resource Health
// raises VirtualMachineCrashed. The VM's power state stays "running" (a guest crash loop is
// "running" to the platform); its boot diagnostics show the stop error.
func (w *World) onVMStarted(vmID string) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	defer w.wg.Done()
	st, err := w.state()
	if err != nil {
		w.log.Error("winsim: VM started before the world was bound", "vm", vmID)
		return
	}
	vm, ok := st.VM(vmID)
	if !ok || vm.Rescue || vm.Spec.Name == "" {
		return // rescue VMs boot and stay healthy
	}
	b := &Boot{VMID: vm.ID, StartedAt: w.now(), OSDiskID: vm.OSDiskID, Outcome: OutcomeBooting,
		BugCheck: uint32(vm.Spec.BugCheck)}
	w.mu.Lock()
	k := strings.ToLower(vm.ID)
	w.boots[k] = append(w.boots[k], b)
	b.Seq = len(w.boots[k])
	w.mu.Unlock()
	w.boot(st, vm, b)
}

// still reports whether the boot is still the VM's current one: the VM is running on the same
// OS disk and has not been started again.
func (w *World) still(st *azsim.State, b *Boot) bool {
	vm, ok := st.VM(b.VMID)
	if !ok || vm.Power != azsim.PowerRunning || !strings.EqualFold(vm.OSDiskID, b.OSDiskID) {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.boots[strings.ToLower(b.VMID)]) == b.Seq
}

func (w *World) boot(st *azsim.State, vm azsim.VM, b *Boot) {
	ctx := w.ctx
	interrupted := func() { w.update(b, func(b *Boot) { b.Outcome, b.Done = OutcomeInterrupted, true }) }
	if sleep(ctx, w.timing.scaled(w.timing.base(LatencyBoot))) != nil || !w.still(st, b) {
		interrupted()
		return
	}
	disk, _ := st.Disk(vm.OSDiskID)
	content, _ := st.DiskContent(vm.OSDiskID)
	win, _ := content.(*Disk)

	if vm.Spec.Behaviour == azsim.BehaviourHealthyAfterPatch && !disk.Original {
		if win != nil {
			w.setBootDiagnostics(st, vm.ID, win, false, 0)
		}
		if err := st.SetAgentReady(vm.ID, b.OSDiskID); err != nil {
			interrupted() // stopped in the meantime
			return
		}
		w.update(b, func(b *Boot) { b.Outcome, b.Done = OutcomeHealthy, true })
		w.log.Info("winsim: guest booted", "vm", vm.Name, "boot", b.Seq)
		return
	}

	// The stop error. The dump, if any, is written before the reboot that makes the loop.
	crashAt := w.now()
	plan := w.planDump(st, vm, disk, win)
	if plan.real > 0 {
		if sleep(ctx, w.timing.scaled(w.timing.perGiB(LatencyDumpWritePerGiB, plan.real))) != nil || !w.still(st, b) {
			interrupted() // powered off while writing: no dump
			return
		}
	}
	dump, mini, why := w.writeDump(plan, crashAt, b.Seq)
	if win != nil {
		w.setBootDiagnostics(st, vm.ID, win, true, b.BugCheck)
	}
	eventID := newEventID()
	w.update(b, func(b *Boot) {
		b.Outcome, b.Dump, b.Minidump, b.NoDump, b.EventID = OutcomeCrashed, dump, mini, why, eventID
	})
	w.log.Info("winsim: guest crashed at boot", "vm", vm.Name, "boot", b.Seq,
		"bugCheck", fmt.Sprintf("0x%08X", b.BugCheck), "dump", dump != nil, "noDump", why)

	if w.post == nil {
		w.update(b, func(b *Boot) { b.EventError, b.Done = "no event destination configured", true })
		return
	}
	if sleep(ctx, w.timing.scaled(w.timing.base(LatencyEventDelay))) != nil {
		w.update(b, func(b *Boot) { b.EventError, b.Done = "simulator closed", true })
		return
	}
	body, err := CrashEvent(vm.ID, eventID, crashAt, w.opts.EventSchema)
	attempts := 0
	if err == nil {
		attempts, err = w.deliver(ctx, body)
	}
	w.update(b, func(b *Boot) {
		b.EventAttempts, b.Done = attempts, true
		if err != nil {
			b.EventError = err.Error()
		}
	})
	if err != nil {
		w.log.Error("winsim: crash event not delivered", "vm", vm.Name, "event", eventID, "err", err)
	}
}

// dumpPlan is what Windows will write at the crash.
type dumpPlan struct {
	code    uint32
	enabled uint32
	os      *Disk  // the VM's Windows disk: the minidump goes there
	miniDir string // MinidumpDir on the Windows volume; "" when no minidump is written
	// The memory dump: real > 0 when one is written.
	target   *Disk
	targetID string
	vol      func(*wintest.Disk) *wintest.Partition
	path     string // on the target volume
	file     string // DumpFile as configured
	real     int64
	why      string // why no memory dump
}

// crashControl is what Windows reads from the current control set at a stop error.
type crashControl struct {
	set         string
	enabled     uint32
	dumpFile    string
	minidumpDir string
	overwrite   uint32
}

// readCrashControl reads Select\Current and that control set's CrashControl, with Windows'
// defaults for absent values.
func readCrashControl(d *wintest.Disk) (crashControl, error) {
	hive := d.SystemHive()
	if hive == nil {
		return crashControl{}, errors.New("the disk has no SYSTEM hive")
	}
	cur, ok := hive.DWORD("Select", "Current")
	if !ok {
		return crashControl{}, errors.New(`the SYSTEM hive has no Select\Current`)
	}
	key := crashControlKey(int(cur))
	cc := crashControl{set: fmt.Sprintf("ControlSet%03d", cur), dumpFile: agent.DefaultDumpFile,
		minidumpDir: agent.DefaultMinidumpDir, overwrite: 1}
	cc.enabled, _ = hive.DWORD(key, "CrashDumpEnabled")
	if v, ok := hive.Get(key, "DumpFile"); ok && v.Data != "" {
		cc.dumpFile = v.Data
	}
	if v, ok := hive.Get(key, "MinidumpDir"); ok && v.Data != "" {
		cc.minidumpDir = v.Data
	}
	if v, ok := hive.DWORD(key, "Overwrite"); ok {
		cc.overwrite = v
	}
	return cc, nil
}

// planDump decides what the crash writes, checking free space with the real size of the dump.
func (w *World) planDump(st *azsim.State, vm azsim.VM, disk azsim.Disk, win *Disk) dumpPlan {
	p := dumpPlan{code: uint32(vm.Spec.BugCheck), os: win}
	switch {
	case win == nil:
		p.why = "the OS disk holds no simulated Windows"
		return p
	case vm.Spec.Behaviour == azsim.BehaviourCrashWithoutDump:
		p.why = "the fleet's behaviour is crash-without-dump"
		return p
	case disk.Original:
		// Windows would write to it; vmrescue never boots a VM on its original disk during an
		// incident, and the simulator keeps originals as seeded so that ChangedOriginalDisks
		// reports only what vmrescue did.
		p.why = "the VM runs on its original OS disk, which the simulator never writes"
		return p
	}
	var cc crashControl
	var err error
	win.View(func(d *wintest.Disk) { cc, err = readCrashControl(d) })
	if err != nil {
		p.why = err.Error()
		return p
	}
	p.enabled = cc.enabled
	switch cc.enabled {
	case crashDumpNone:
		p.why = fmt.Sprintf("crash dumps are turned off (%s CrashDumpEnabled=0)", cc.set)
		return p
	case crashDumpComplete, crashDumpKernel, crashDumpAutomatic, crashDumpSmall:
	default:
		p.why = fmt.Sprintf("%s CrashDumpEnabled=%d is not a dump type Windows knows", cc.set, cc.enabled)
		return p
	}
	if dir, ok := onWindowsVolume(cc.minidumpDir); ok {
		p.miniDir = dir
	}
	if cc.enabled == crashDumpSmall {
		p.why = fmt.Sprintf("%s CrashDumpEnabled=3 asks for a small memory dump only", cc.set)
		return p
	}
	p.file = cc.dumpFile
	real := dumpBytes(cc.enabled, memoryBytes(vm.Spec))
	if err := w.resolveDumpFile(st, vm, win, &p); err != nil {
		p.why = err.Error()
		return p
	}
	var free int64
	var exists bool
	p.target.View(func(d *wintest.Disk) {
		if v := p.vol(d); v != nil {
			free = v.Free
			if f := v.File(p.path); f != nil {
				exists = true
				free += f.Size // an overwrite reuses the old file's space
			}
		}
	})
	switch {
	case exists && cc.overwrite == 0:
		p.why = fmt.Sprintf("%s exists and %s Overwrite=0", cc.dumpFile, cc.set)
	case free < real:
		p.why = fmt.Sprintf("the %s dump needs %.1f GiB but the volume of %s has %.1f GiB free",
			dumpTypeName(cc.enabled), float64(real)/gib, cc.dumpFile, float64(free)/gib)
	default:
		p.real = real
	}
	return p
}

// onWindowsVolume turns a path as the VM sees it into a path on its Windows volume, when it is
// on that volume (%SystemRoot%, %SystemDrive% or C:).
func onWindowsVolume(p string) (string, bool) {
	lower := strings.ToLower(p)
	for _, pre := range []struct{ prefix, repl string }{
		{`%systemroot%`, `Windows`}, {`%windir%`, `Windows`}, {`%systemdrive%`, ``}, {`c:`, ``},
	} {
		if strings.HasPrefix(lower, pre.prefix) {
			rest := strings.TrimLeft(p[len(pre.prefix):], `\`)
			if pre.repl == "" {
				return rest, rest != ""
			}
			if rest == "" {
				return pre.repl, true
			}
			return pre.repl + `\` + rest, true
		}
	}
	return "", false
}

// firstDataLetter is the letter of the VM's first data volume: C: is Windows and D: Azure's
// temporary disk, so data volumes are E:, F:, ... in LUN order.
const firstDataLetter = 'E'

// resolveDumpFile finds the disk and volume DumpFile names.
func (w *World) resolveDumpFile(st *azsim.State, vm azsim.VM, win *Disk, p *dumpPlan) error {
	if path, ok := onWindowsVolume(p.file); ok {
		p.target, p.targetID, p.path = win, vm.OSDiskID, path
		p.vol = func(d *wintest.Disk) *wintest.Partition { return d.WindowsPartition() }
		return nil
	}
	l := agent.Letter(p.file[:min(2, len(p.file))])
	if l == "" || len(p.file) < 4 || p.file[2] != '\\' {
		return fmt.Errorf("DumpFile %s is not a path Windows can write at a crash", p.file)
	}
	luns := make([]azsim.DataDiskRef, len(vm.DataDisks))
	copy(luns, vm.DataDisks)
	slices.SortFunc(luns, func(a, b azsim.DataDiskRef) int { return int(a.LUN) - int(b.LUN) })
	i := int(l[0]) - firstDataLetter
	if i < 0 || i >= len(luns) {
		return fmt.Errorf("DumpFile %s is on %s, which is not a volume of the VM", p.file, l)
	}
	c, _ := st.DiskContent(luns[i].DiskID)
	d, ok := c.(*Disk)
	if !ok {
		return fmt.Errorf("DumpFile %s: data disk %s holds no simulated volume", p.file, luns[i].DiskID)
	}
	p.target, p.targetID, p.path, p.vol = d, luns[i].DiskID, strings.TrimLeft(p.file[2:], `\`), dataVolume
	return nil
}

// writeDump writes what the plan says.
func (w *World) writeDump(p dumpPlan, at time.Time, seq int) (dump *DumpWritten, mini, why string) {
	why = p.why
	if p.real > 0 {
		size := storedSize(p.real, w.opts.DumpScale)
		err := errors.New("the dump volume is gone")
		p.target.View(func(d *wintest.Disk) {
			if v := p.vol(d); v != nil {
				err = v.WriteFile(p.path, dumpfile.Synthesize(dumpSpec(p.code, p.enabled, p.real, at)), size, at)
			}
		})
		if err != nil {
			why = "writing the dump failed: " + err.Error()
		} else {
			dump = &DumpWritten{DiskID: p.targetID, Path: p.path, DumpFile: p.file, Type: dumpTypeName(p.enabled),
				RealBytes: p.real, Bytes: size}
		}
	}
	if p.miniDir != "" && p.os != nil {
		path := p.miniDir + `\` + minidumpName(at, seq)
		p.os.View(func(d *wintest.Disk) {
			if v := d.WindowsPartition(); v != nil &&
				v.WriteFile(path, dumpfile.Synthesize(minidumpSpec(p.code, at)), minidumpSize, at) == nil {
				mini = path
			}
		})
	}
	return dump, mini, why
}
