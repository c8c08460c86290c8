package agent

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// RegKey is one key as reg query prints it: its values, then its subkeys.
type RegKey struct {
	Path    string
	Values  []RegValue
	Subkeys []string // names, not paths
}

// RegValue is one value; Data is as reg query prints it (REG_DWORD as 0x1).
type RegValue struct {
	Name string
	Type string
	Data string
}

// Value returns the named value (case-insensitive).
func (k RegKey) Value(name string) (RegValue, bool) {
	for _, v := range k.Values {
		if strings.EqualFold(v.Name, name) {
			return v, true
		}
	}
	return RegValue{}, false
}

// DWORD reads a REG_DWORD.
func (v RegValue) DWORD() (uint32, bool) {
	if v.Type != "REG_DWORD" {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v.Data), 0, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

var regValueLine = regexp.MustCompile(`^ {4}(.+?) {4}(REG_[A-Z0-9_]+)(?: {4}(.*))?$`)

// ParseRegQuery parses the output of reg query KEY (without /s): the key's path, its values
// (indented four spaces, fields separated by four spaces), then each subkey's full path.
func ParseRegQuery(text string) (RegKey, error) {
	var k RegKey
	for _, line := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if strings.HasPrefix(line, "    ") {
			m := regValueLine.FindStringSubmatch(line)
			if m == nil {
				return RegKey{}, fmt.Errorf("reg query output: unreadable value line %q", line)
			}
			k.Values = append(k.Values, RegValue{Name: m[1], Type: m[2], Data: strings.TrimRight(m[3], " ")})
			continue
		}
		if k.Path == "" {
			k.Path = line
			continue
		}
		if !strings.HasPrefix(strings.ToLower(line), strings.ToLower(k.Path)+`\`) {
			return RegKey{}, fmt.Errorf("reg query output: %q is not a subkey of %q", line, k.Path)
		}
		k.Subkeys = append(k.Subkeys, line[len(k.Path)+1:])
	}
	if k.Path == "" {
		return RegKey{}, fmt.Errorf("reg query output is empty")
	}
	return k, nil
}

var controlSetName = regexp.MustCompile(`(?i)^ControlSet([0-9]{3})$`)

// ChooseControlSets picks the current control set from the hive's Select key and lists every
// ControlSetNNN present, the current one first. Select\Current decides; when it is missing or
// names a set that is not there, Select\Default is used, then a lone control set; otherwise the
// agent refuses. Azure's guide writes CrashControl in both 001 and 002, so patch writes every set.
func ChooseControlSets(sel RegKey, subkeys []string) (current string, all []string, reason string, err error) {
	present := map[int]string{}
	var nums []int
	for _, s := range subkeys {
		if m := controlSetName.FindStringSubmatch(s); m != nil {
			n, _ := strconv.Atoi(m[1])
			if _, dup := present[n]; !dup {
				nums = append(nums, n)
			}
			present[n] = fmt.Sprintf("ControlSet%03d", n)
		}
	}
	sort.Ints(nums)
	if len(nums) == 0 {
		return "", nil, "", refuse("the SYSTEM hive has no ControlSetNNN key")
	}
	pick := func(name string) (int, bool) {
		v, ok := sel.Value(name)
		if !ok {
			return 0, false
		}
		n, ok := v.DWORD()
		if !ok {
			return 0, false
		}
		_, exists := present[int(n)]
		return int(n), exists
	}
	cur, ok := pick("Current")
	switch {
	case ok:
		reason = fmt.Sprintf(`Select\Current=%d`, cur)
	default:
		if def, dok := pick("Default"); dok {
			cur, ok = def, true
			reason = fmt.Sprintf(`Select\Current missing or naming an absent set; Select\Default=%d`, def)
		} else if len(nums) == 1 {
			cur, ok = nums[0], true
			reason = "Select names no present set; the hive holds one control set"
		}
	}
	if !ok {
		return "", nil, "", refuse(`Select\Current and Select\Default name no present control set, and the hive holds %d`, len(nums))
	}
	all = append(all, present[cur])
	for _, n := range nums {
		if n != cur {
			all = append(all, present[n])
		}
	}
	return present[cur], all, reason, nil
}

// CrashControl value names and what patch writes.
const (
	crashControlKey       = `Control\CrashControl`
	DefaultDumpFile       = `%SystemRoot%\MEMORY.DMP`
	DefaultMinidumpDir    = `%SystemRoot%\Minidump`
	crashDumpComplete     = 1
	crashDumpKernel       = 2
	regDWORD, regExpandSZ = "REG_DWORD", "REG_EXPAND_SZ"
)

func crashControlFrom(set string, k RegKey) CrashControl {
	cc := CrashControl{ControlSet: set}
	dw := func(name string) *uint32 {
		v, ok := k.Value(name)
		if !ok {
			return nil
		}
		n, ok := v.DWORD()
		if !ok {
			return nil
		}
		return &n
	}
	cc.CrashDumpEnabled = dw("CrashDumpEnabled")
	cc.NMICrashDump = dw("NMICrashDump")
	cc.AutoReboot = dw("AutoReboot")
	cc.Overwrite = dw("Overwrite")
	cc.AlwaysKeepMemoryDump = dw("AlwaysKeepMemoryDump")
	if v, ok := k.Value("DumpFile"); ok {
		cc.DumpFile = v.Data
	}
	if v, ok := k.Value("MinidumpDir"); ok {
		cc.MinidumpDir = v.Data
	}
	return cc
}

// regWrite is one value patch writes.
type regWrite struct {
	set, name, typ, data string
	ok                   bool // already so
}

// planCrashControl lists the values patch writes in each control set, marking those in place.
func planCrashControl(current map[string]CrashControl, sets []string, plan DumpPlan) []regWrite {
	var out []regWrite
	for _, set := range sets {
		cc := current[set]
		eq := func(p *uint32, want uint32) bool { return p != nil && *p == want }
		out = append(out,
			regWrite{set, "CrashDumpEnabled", regDWORD, strconv.Itoa(int(plan.CrashDumpEnabled)), eq(cc.CrashDumpEnabled, plan.CrashDumpEnabled)},
			regWrite{set, "DumpFile", regExpandSZ, plan.DumpFile, strings.EqualFold(cc.DumpFile, plan.DumpFile)},
			regWrite{set, "NMICrashDump", regDWORD, "1", eq(cc.NMICrashDump, 1)},
			regWrite{set, "AutoReboot", regDWORD, "1", eq(cc.AutoReboot, 1)},
			regWrite{set, "Overwrite", regDWORD, "1", eq(cc.Overwrite, 1)},
			regWrite{set, "AlwaysKeepMemoryDump", regDWORD, "1", eq(cc.AlwaysKeepMemoryDump, 1)},
		)
	}
	return out
}

// crashControlMatches reports whether cc holds what plan wants.
func crashControlMatches(cc CrashControl, plan DumpPlan) bool {
	for _, w := range planCrashControl(map[string]CrashControl{cc.ControlSet: cc}, []string{cc.ControlSet}, plan) {
		if !w.ok {
			return false
		}
	}
	return true
}

// expandSystemRoot turns a CrashControl path into one the rescue VM can open: %SystemRoot% is
// the Windows directory on the attached volume. A path on another letter belongs to a volume
// of the VM that is not attached here; ok is false for it.
func expandSystemRoot(p, windowsVolume string) (string, bool) {
	const sr = `%systemroot%`
	if strings.HasPrefix(strings.ToLower(p), sr) {
		return JoinPath(windowsVolume, "Windows", p[len(sr):]), true
	}
	if len(p) >= 2 && p[1] == ':' && strings.EqualFold(p[:2], "C:") {
		return JoinPath(windowsVolume, p[2:]), true // the VM's C: is the Windows volume
	}
	return p, false
}
