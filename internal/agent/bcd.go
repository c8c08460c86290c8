package agent

import (
	"fmt"
	"strconv"
	"strings"
)

// Well-known BCD object identifiers. bcdedit /v prints them as GUIDs; without /v it prints the
// aliases. Both are understood.
const (
	BCDBootMgr        = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
	BCDFwBootMgr      = "{a5a30fa2-3d06-4e9f-b5f4-a01df9d1fcba}"
	BCDEMSSettings    = "{0ce4991b-e6b3-4b16-b23c-5e0d9250e5d9}"
	BCDGlobalSettings = "{7ea2e1ac-2e61-4728-aaa3-896d9d0a9f0e}"
	BCDDefault        = "{1cae1eb7-a0df-4d4d-9851-4860e34ef535}" // the {default} alias
	BCDCurrent        = "{fa926493-6f1c-4193-a414-58f0b2456d1e}" // the {current} alias
)

var bcdAliases = map[string]string{
	"{bootmgr}":              BCDBootMgr,
	"{fwbootmgr}":            BCDFwBootMgr,
	"{emssettings}":          BCDEMSSettings,
	"{globalsettings}":       BCDGlobalSettings,
	"{default}":              BCDDefault,
	"{current}":              BCDCurrent,
	"{bootloadersettings}":   "{6efb52bf-1766-41db-a6b3-0ee5eff72bd7}",
	"{dbgsettings}":          "{4636856e-540f-4170-a130-a84776f4c654}",
	"{badmemory}":            "{5189b25c-5558-4bf2-bca4-289b11bd29e2}",
	"{resumeloadersettings}": "{1afa9c49-16ab-4a5c-901b-212802da9460}",
	"{hypervisorsettings}":   "{7ff607e0-4395-11db-b0de-0800200c9a66}",
	"{memdiag}":              "{b2721d73-1db4-4c62-bf78-c548a880142d}",
}

// CanonicalBCDID lower-cases an identifier and turns a well-known alias into its GUID.
func CanonicalBCDID(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	if g, ok := bcdAliases[id]; ok {
		return g
	}
	return id
}

// BCDEntry is one object of a BCD store as bcdedit /enum prints it.
type BCDEntry struct {
	// Type is the heading bcdedit prints ("Windows Boot Loader"). It is localized, so the agent
	// never decides on it.
	Type     string
	ID       string // the identifier element, canonical (see CanonicalBCDID)
	Elements []BCDElement
}

// BCDElement is one element; multi-valued ones (displayorder, inherit) have several values.
type BCDElement struct {
	Name   string
	Values []string
}

// Get returns the first value of the named element.
func (e BCDEntry) Get(name string) (string, bool) {
	for _, el := range e.Elements {
		if strings.EqualFold(el.Name, name) {
			if len(el.Values) == 0 {
				return "", true
			}
			return el.Values[0], true
		}
	}
	return "", false
}

// IsWindowsLoader reports whether e starts Windows: its path is winload.exe or winload.efi and
// it is not a Windows PE (recovery) loader.
func (e BCDEntry) IsWindowsLoader() bool {
	path, _ := e.Get("path")
	p := strings.ToLower(path)
	if !strings.HasSuffix(p, `\winload.exe`) && !strings.HasSuffix(p, `\winload.efi`) {
		return false
	}
	winpe, _ := e.Get("winpe")
	return !bcdBool(winpe)
}

// ParseBCDEnum parses the output of bcdedit /enum (all, /v or not). Entries are separated by
// blank lines; each starts with a heading underlined with dashes; an element's further values
// are on indented lines below it.
func ParseBCDEnum(text string) ([]BCDEntry, error) {
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	var entries []BCDEntry
	var cur *BCDEntry
	flush := func() error {
		if cur == nil {
			return nil
		}
		if cur.ID == "" {
			return fmt.Errorf("bcdedit output: entry %q has no identifier", cur.Type)
		}
		entries = append(entries, *cur)
		cur = nil
		return nil
	}
	for i := 0; i < len(lines); i++ {
		line := strings.TrimRight(lines[i], " \t")
		switch {
		case line == "":
			if err := flush(); err != nil {
				return nil, err
			}
		case cur == nil:
			if i+1 < len(lines) && isDashes(strings.TrimSpace(lines[i+1])) {
				cur = &BCDEntry{Type: strings.TrimSpace(line)}
				i++ // the dashes
				continue
			}
			// A line outside any entry: bcdedit's own messages. Ignore.
		case line[0] == ' ' || line[0] == '\t':
			if len(cur.Elements) == 0 {
				return nil, fmt.Errorf("bcdedit output: continuation line %q before any element", line)
			}
			last := &cur.Elements[len(cur.Elements)-1]
			last.Values = append(last.Values, strings.TrimSpace(line))
		default:
			name, value, _ := strings.Cut(line, " ")
			value = strings.TrimSpace(value)
			el := BCDElement{Name: name}
			if value != "" {
				el.Values = []string{value}
			}
			if strings.EqualFold(name, "identifier") {
				cur.ID = CanonicalBCDID(value)
			}
			cur.Elements = append(cur.Elements, el)
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("bcdedit output holds no entries")
	}
	return entries, nil
}

func isDashes(s string) bool {
	return len(s) >= 3 && strings.Trim(s, "-") == ""
}

// FindBCDEntry returns the entry with the given identifier (GUID or alias).
func FindBCDEntry(entries []BCDEntry, id string) (BCDEntry, bool) {
	id = CanonicalBCDID(id)
	for _, e := range entries {
		if e.ID == id {
			return e, true
		}
	}
	return BCDEntry{}, false
}

// ChooseLoader picks the loader that patch turns EMS on for: the one the boot manager's default
// element names. displayorder is never used: it orders the menu and says nothing about what
// boots. Without a default, the only Windows loader in the store is taken (the boot manager
// boots it); with several, or none, or a default that names a missing or non-Windows entry, the
// agent refuses rather than guess.
func ChooseLoader(entries []BCDEntry) (BCDEntry, string, error) {
	bootmgr, ok := FindBCDEntry(entries, BCDBootMgr)
	if !ok {
		return BCDEntry{}, "", refuse("the BCD store has no Windows Boot Manager entry")
	}
	var loaders []BCDEntry
	for _, e := range entries {
		if e.IsWindowsLoader() {
			loaders = append(loaders, e)
		}
	}
	if def, ok := bootmgr.Get("default"); ok && def != "" {
		id := CanonicalBCDID(def)
		e, found := FindBCDEntry(entries, id)
		switch {
		case !found:
			return BCDEntry{}, "", refuse("the boot manager's default %s names no entry in the store", id)
		case !e.IsWindowsLoader():
			return BCDEntry{}, "", refuse("the boot manager's default %s is not a Windows loader", id)
		}
		return e, "bootmgr default", nil
	}
	switch len(loaders) {
	case 0:
		return BCDEntry{}, "", refuse("the BCD store has no default and no Windows loader")
	case 1:
		return loaders[0], "bootmgr has no default; the store holds one Windows loader", nil
	}
	return BCDEntry{}, "", refuse("the boot manager has no default and the store holds %d Windows loaders; refusing to guess", len(loaders))
}

// Settings patch wants in the BCD store (Azure's guide for serial console and EMS).
const (
	EMSPort     = 1
	EMSBaudRate = 115200
	BootTimeout = 5
)

// bcdChange is one setting and the bcdedit arguments (after /store PATH) that make it so.
type bcdChange struct {
	what string   // for reports: "bootmgr displaybootmenu"
	ok   bool     // already so
	args []string // the bcdedit command that sets it
}

// planBCD lists the changes patch makes, marking those already in place.
func planBCD(entries []BCDEntry, loader BCDEntry) []bcdChange {
	bootmgr, _ := FindBCDEntry(entries, BCDBootMgr)
	ems, _ := FindBCDEntry(entries, BCDEMSSettings)
	isYes := func(e BCDEntry, name string) bool { v, _ := e.Get(name); return bcdBool(v) }
	isInt := func(e BCDEntry, name string, want int) bool {
		v, _ := e.Get(name)
		n, ok := bcdInt(v)
		return ok && n == want
	}
	return []bcdChange{
		{"bootmgr displaybootmenu", isYes(bootmgr, "displaybootmenu"), []string{"/set", "{bootmgr}", "displaybootmenu", "yes"}},
		{"bootmgr timeout", isInt(bootmgr, "timeout", BootTimeout), []string{"/set", "{bootmgr}", "timeout", strconv.Itoa(BootTimeout)}},
		{"bootmgr bootems", isYes(bootmgr, "bootems"), []string{"/set", "{bootmgr}", "bootems", "yes"}},
		{"loader ems", isYes(loader, "ems"), []string{"/ems", loader.ID, "on"}},
		{"emssettings", isInt(ems, "emsport", EMSPort) && isInt(ems, "emsbaudrate", EMSBaudRate),
			[]string{"/emssettings", "EMSPORT:" + strconv.Itoa(EMSPort), "EMSBAUDRATE:" + strconv.Itoa(EMSBaudRate)}},
	}
}

// bootResult reads the settings inspect reports.
func bootResult(entries []BCDEntry, loader BCDEntry, choice string) *BootResult {
	r := &BootResult{DefaultLoader: loader.ID, LoaderChoice: choice}
	for _, e := range entries {
		if e.IsWindowsLoader() {
			r.LoaderCount++
		}
	}
	r.LoaderPath, _ = loader.Get("path")
	bootmgr, _ := FindBCDEntry(entries, BCDBootMgr)
	ems, _ := FindBCDEntry(entries, BCDEMSSettings)
	r.DisplayBootMenu = optBool(bootmgr, "displaybootmenu")
	r.Timeout = optInt(bootmgr, "timeout")
	r.BootEMS = optBool(bootmgr, "bootems")
	if loader.ID != "" {
		r.EMS = optBool(loader, "ems")
	}
	r.EMSPort = optInt(ems, "emsport")
	r.EMSBaudRate = optInt(ems, "emsbaudrate")
	return r
}

func optBool(e BCDEntry, name string) *bool {
	v, ok := e.Get(name)
	if !ok {
		return nil
	}
	b := bcdBool(v)
	return &b
}

func optInt(e BCDEntry, name string) *int {
	v, ok := e.Get(name)
	if !ok {
		return nil
	}
	n, ok := bcdInt(v)
	if !ok {
		return nil
	}
	return &n
}

// bcdBool reads a boolean as bcdedit prints or accepts it.
func bcdBool(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "yes", "on", "true", "1":
		return true
	}
	return false
}

func bcdInt(v string) (int, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 0, 64)
	if err != nil {
		return 0, false
	}
	return int(n), true
}
