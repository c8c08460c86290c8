package wintest

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/vmrescue/vmrescue/internal/agent"
)

// Messages of reg.exe and bcdedit.exe, as the real programs print them.
const (
	regNotFound     = "ERROR: The system was unable to find the specified registry key or value."
	regAccessDenied = "ERROR: Access is denied."
	regInvalid      = "ERROR: Invalid syntax.\r\nType \"REG /?\" for usage."
	regInUse        = "ERROR: The process cannot access the file because it is being used by another process."
	regOK           = "The operation completed successfully.\r\n"
	bcdOK           = "The operation completed successfully.\r\n"
	bcdNoStore      = "The boot configuration data store could not be opened.\r\nThe system cannot find the file specified."
	bcdNoEntry      = "An error occurred while attempting to reference the specified entry.\r\nThe system cannot find the file specified."
	bcdInvalid      = "The parameter is incorrect."
)

// The machine's own HKLM keys, listed by reg query HKLM next to loaded hives.
var hklmKeys = []string{"BCD00000000", "HARDWARE", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"}

// splitRegPath returns the HKLM subkey name and the path below it.
func splitRegPath(p string) (root, rest string, ok bool) {
	for _, prefix := range []string{`HKLM\`, `HKEY_LOCAL_MACHINE\`} {
		if len(p) > len(prefix) && strings.EqualFold(p[:len(prefix)], prefix) {
			root, rest, _ = strings.Cut(p[len(prefix):], `\`)
			return root, rest, root != ""
		}
	}
	return "", "", false
}

// Reg interprets reg.exe: load, unload, query (with or without /v) and add.
func (m *Machine) Reg(ctx context.Context, args ...string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(msg string) (string, error) { return "", commandError("reg.exe", args, msg) }
	if err := m.call("reg " + strings.Join(args, " ")); err != nil {
		return fail("ERROR: " + err.Error())
	}
	if len(args) == 0 {
		return fail(regInvalid)
	}
	switch strings.ToLower(args[0]) {
	case "load":
		if len(args) != 3 {
			return fail(regInvalid)
		}
		root, rest, ok := splitRegPath(args[1])
		if !ok || rest != "" {
			return fail(regInvalid)
		}
		if m.loaded[strings.ToUpper(root)] != nil || contains(hklmKeys, root) {
			return fail(regAccessDenied)
		}
		p, k, err := m.resolve(args[2])
		if err != nil || p.files[k] == nil {
			return fail("ERROR: The system cannot find the file specified.")
		}
		f := p.files[k]
		if f.Hive == nil {
			return fail("ERROR: The system was unable to load the hive: the file is not a registry hive.")
		}
		if m.lockedHive(f) {
			return fail(regInUse)
		}
		m.loaded[strings.ToUpper(root)] = f
		return regOK, nil
	case "unload":
		if len(args) != 2 {
			return fail(regInvalid)
		}
		root, rest, ok := splitRegPath(args[1])
		if !ok || rest != "" || m.loaded[strings.ToUpper(root)] == nil {
			return fail("ERROR: The parameter is incorrect.")
		}
		if m.UnloadFailures > 0 {
			m.UnloadFailures--
			return fail(regAccessDenied)
		}
		delete(m.loaded, strings.ToUpper(root))
		return regOK, nil
	case "query":
		return m.regQuery(args, fail)
	case "add":
		return m.regAdd(args, fail)
	}
	return fail(regInvalid)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func (m *Machine) regQuery(args []string, fail func(string) (string, error)) (string, error) {
	if len(args) != 2 && !(len(args) == 4 && strings.EqualFold(args[2], "/v")) {
		return fail(regInvalid)
	}
	path := args[1]
	if strings.EqualFold(path, "HKLM") || strings.EqualFold(path, "HKEY_LOCAL_MACHINE") {
		names := append([]string(nil), hklmKeys...)
		for k := range m.loaded {
			names = append(names, k)
		}
		sort.Strings(names)
		var sb strings.Builder
		sb.WriteString("\r\nHKEY_LOCAL_MACHINE\r\n")
		for _, n := range names {
			sb.WriteString(`HKEY_LOCAL_MACHINE\` + n + "\r\n")
		}
		return sb.String(), nil
	}
	root, rest, ok := splitRegPath(path)
	if !ok {
		return fail(regInvalid)
	}
	f := m.loaded[strings.ToUpper(root)]
	if f == nil {
		return fail(regNotFound)
	}
	k := f.Hive.Key(rest)
	if k == nil {
		return fail(regNotFound)
	}
	full := `HKEY_LOCAL_MACHINE\` + root
	if rest != "" {
		full += `\` + strings.Trim(rest, `\`)
	}
	var sb strings.Builder
	sb.WriteString("\r\n" + full + "\r\n")
	if len(args) == 4 {
		v, ok := f.Hive.Get(rest, args[3])
		if !ok {
			return fail(regNotFound)
		}
		sb.WriteString("    " + v.Name + "    " + v.Type + "    " + v.Data + "\r\n\r\n")
		return sb.String(), nil
	}
	for _, v := range k.Values {
		sb.WriteString("    " + v.Name + "    " + v.Type + "    " + v.Data + "\r\n")
	}
	if len(k.Subkeys) > 0 {
		sb.WriteString("\r\n")
		for _, s := range k.Subkeys {
			sb.WriteString(full + `\` + s.Name + "\r\n")
		}
	}
	return sb.String(), nil
}

var regTypes = map[string]bool{"REG_SZ": true, "REG_EXPAND_SZ": true, "REG_DWORD": true, "REG_QWORD": true, "REG_MULTI_SZ": true, "REG_BINARY": true}

func (m *Machine) regAdd(args []string, fail func(string) (string, error)) (string, error) {
	// reg add KEY /v NAME /t TYPE /d DATA /f, the switches in any order.
	if len(args) < 2 {
		return fail(regInvalid)
	}
	var name, typ, data string
	force, hasD := false, false
	for i := 2; i < len(args); i++ {
		switch strings.ToLower(args[i]) {
		case "/v", "/t", "/d":
			if i+1 >= len(args) {
				return fail(regInvalid)
			}
			switch strings.ToLower(args[i]) {
			case "/v":
				name = args[i+1]
			case "/t":
				typ = strings.ToUpper(args[i+1])
			case "/d":
				data, hasD = args[i+1], true
			}
			i++
		case "/f":
			force = true
		default:
			return fail(regInvalid)
		}
	}
	if name == "" || !regTypes[typ] || !hasD || !force {
		return fail(regInvalid) // the agent always names, types and forces
	}
	root, rest, ok := splitRegPath(args[1])
	if !ok {
		return fail(regInvalid)
	}
	f := m.loaded[strings.ToUpper(root)]
	if f == nil {
		return fail(regAccessDenied)
	}
	if err := f.Hive.Set(rest, name, typ, data); err != nil {
		return fail("ERROR: " + err.Error())
	}
	return regOK, nil
}

// Boolean BCD elements, which bcdedit shows as Yes or No.
var bcdBools = map[string]bool{
	"displaybootmenu": true, "bootems": true, "ems": true, "bootdebug": true, "debug": true,
	"recoveryenabled": true, "winpe": true, "bootshutdowndisabled": true, "nointegritychecks": true,
}

// Bcdedit interprets bcdedit.exe /store PATH with /enum, /set, /deletevalue, /ems, /bootems,
// /timeout and /emssettings. The store's file is read and written whole, as bcdedit loads and
// unloads it.
func (m *Machine) Bcdedit(ctx context.Context, args ...string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fail := func(msg string) (string, error) { return "", commandError("bcdedit.exe", args, msg) }
	if len(args) < 3 || !strings.EqualFold(args[0], "/store") {
		return fail(bcdInvalid) // the agent always names the store: the rescue VM's own is never touched
	}
	if err := m.call("bcdedit " + strings.Join(args[2:], " ")); err != nil {
		return fail(err.Error())
	}
	p, k, err := m.resolve(args[1])
	if err != nil || p.files[k] == nil || p.files[k].BCD == nil {
		return fail(bcdNoStore)
	}
	store := p.files[k].BCD
	op, rest := strings.ToLower(args[2]), args[3:]
	entry := func(id string) (*agent.BCDEntry, bool) {
		e := store.Entry(id)
		return e, e != nil
	}
	switch op {
	case "/enum":
		if len(rest) > 2 {
			return fail(bcdInvalid)
		}
		return store.Render(), nil
	case "/set":
		if len(rest) != 3 {
			return fail(bcdInvalid)
		}
		e, ok := entry(rest[0])
		if !ok {
			return fail(bcdNoEntry)
		}
		name, value := strings.ToLower(rest[1]), rest[2]
		if bcdBools[name] {
			b, ok := parseBCDBool(value)
			if !ok {
				return fail(bcdInvalid)
			}
			value = yesNo(b)
		}
		setElement(e, name, value)
	case "/deletevalue":
		if len(rest) != 2 {
			return fail(bcdInvalid)
		}
		e, ok := entry(rest[0])
		if !ok {
			return fail(bcdNoEntry)
		}
		for i, el := range e.Elements {
			if strings.EqualFold(el.Name, rest[1]) {
				e.Elements = append(e.Elements[:i], e.Elements[i+1:]...)
				break
			}
		}
	case "/ems", "/bootems":
		if len(rest) != 2 {
			return fail(bcdInvalid)
		}
		e, ok := entry(rest[0])
		if !ok {
			return fail(bcdNoEntry)
		}
		b, ok := parseBCDBool(rest[1])
		if !ok {
			return fail(bcdInvalid)
		}
		setElement(e, strings.TrimPrefix(op, "/"), yesNo(b))
	case "/timeout":
		if len(rest) != 1 {
			return fail(bcdInvalid)
		}
		e, ok := entry("{bootmgr}")
		if !ok {
			return fail(bcdNoEntry)
		}
		setElement(e, "timeout", rest[0])
	case "/emssettings":
		e, ok := entry(agent.BCDEMSSettings)
		if !ok {
			store.Entries = append(store.Entries, agent.BCDEntry{Type: "EMS Settings", ID: agent.BCDEMSSettings,
				Elements: []agent.BCDElement{{Name: "identifier", Values: []string{agent.BCDEMSSettings}}}})
			e = &store.Entries[len(store.Entries)-1]
		}
		if len(rest) == 1 && strings.EqualFold(rest[0], "BIOS") {
			setElement(e, "emsport", "BIOS")
			break
		}
		if len(rest) == 0 || len(rest) > 2 {
			return fail(bcdInvalid)
		}
		for _, a := range rest {
			k, v, ok := strings.Cut(a, ":")
			if !ok || v == "" {
				return fail(bcdInvalid)
			}
			switch strings.ToUpper(k) {
			case "EMSPORT":
				setElement(e, "emsport", v)
			case "EMSBAUDRATE":
				setElement(e, "emsbaudrate", v)
			default:
				return fail(bcdInvalid)
			}
		}
	default:
		return fail(bcdInvalid)
	}
	return bcdOK, nil
}

func parseBCDBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "yes", "on", "true", "1":
		return true, true
	case "no", "off", "false", "0":
		return false, true
	}
	return false, false
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

// String describes the machine's disks, for test failures.
func (m *Machine) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sb strings.Builder
	for _, d := range m.disks {
		fmt.Fprintf(&sb, "disk %d lun %d port %d %s %s offline=%t(%s)\n", d.number, d.lun, d.port, d.Style, d.Identity(), d.offline, d.offlineReason)
		for _, p := range d.Partitions {
			fmt.Fprintf(&sb, "  part %d %s free=%d files=%d\n", p.Number, p.letter, p.Free, len(p.files))
		}
	}
	return sb.String()
}
