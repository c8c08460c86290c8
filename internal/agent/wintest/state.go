// Package wintest simulates the Windows side of the rescue agent: a rescue VM (Machine) with its
// own disks and the copies of broken VMs' OS disks attached at LUNs (Disk), their partitions and
// files, the registry hives and BCD stores inside those files, and the programs the agent runs
// on them (reg.exe, bcdedit.exe, the storage cmdlets). It keeps state, so what patch writes,
// inspect reads back; a Disk outlives its attachment, so the local simulator can use it as "a
// simulated Windows disk": attach it, run the real agent, detach it, boot it (read its
// settings), write a dump to it, attach it again.
//
// Outputs are rendered in the formats the real programs print (bcdedit /enum all /v, reg query,
// the agent's disk listing JSON), and states can be loaded from recorded outputs in
// internal/agent/testdata.
package wintest

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
)

// Disk is a disk: the rescue VM's own, or a copy of a VM's OS disk. The exported fields are its
// contents, which travel with it; the Machine keeps where and how it is attached.
type Disk struct {
	Size       int64
	Style      string // "MBR" or "GPT"
	Signature  uint32 // MBR
	GUID       string // GPT, {...}
	Partitions []*Partition

	// Attachment, kept by the Machine.
	number        int
	lun           int
	port          int
	offline       bool
	offlineReason string
	readOnly      bool
	boot          bool
	attached      bool
}

// Identity is the disk's MBR signature (8 hex digits) or GPT GUID, as the agent prints it.
func (d *Disk) Identity() string {
	if d.Style == "GPT" {
		return strings.ToLower(d.GUID)
	}
	return fmt.Sprintf("%08X", d.Signature)
}

// Number, LUN and Offline report the attachment.
func (d *Disk) Number() int   { return d.number }
func (d *Disk) LUN() int      { return d.lun }
func (d *Disk) Offline() bool { return d.offline }

// Partition returns the partition with the given number.
func (d *Disk) Partition(n int) *Partition {
	for _, p := range d.Partitions {
		if p.Number == n {
			return p
		}
	}
	return nil
}

// WindowsPartition is the partition holding Windows\System32\config\SYSTEM, or nil.
func (d *Disk) WindowsPartition() *Partition {
	for _, p := range d.Partitions {
		if p.File(`Windows\System32\config\SYSTEM`) != nil {
			return p
		}
	}
	return nil
}

// SystemHive is the SYSTEM hive of the disk's Windows, or nil.
func (d *Disk) SystemHive() *Hive {
	if p := d.WindowsPartition(); p != nil {
		return p.File(`Windows\System32\config\SYSTEM`).Hive
	}
	return nil
}

// BCDStore returns the disk's boot store: \EFI\Microsoft\Boot\BCD on GPT, \Boot\BCD on MBR.
func (d *Disk) BCDStore() *BCDStore {
	for _, p := range d.Partitions {
		for _, path := range []string{`EFI\Microsoft\Boot\BCD`, `Boot\BCD`} {
			if f := p.File(path); f != nil && f.BCD != nil {
				return f.BCD
			}
		}
	}
	return nil
}

// Clone deep-copies the disk's contents (a snapshot, or a disk made from one). The copy is not
// attached.
func (d *Disk) Clone() *Disk {
	c := &Disk{Size: d.Size, Style: d.Style, Signature: d.Signature, GUID: d.GUID}
	for _, p := range d.Partitions {
		c.Partitions = append(c.Partitions, p.clone())
	}
	return c
}

// Partition is a partition with its volume's files.
type Partition struct {
	Number  int
	Size    int64
	Free    int64 // free bytes of the volume; writes take from it
	MBRType int   // MBR: 7 for NTFS
	GPTType string
	Active  bool
	Hidden  bool
	GUID    string

	letter string // "F:" while mounted
	files  map[string]*File
	dirs   map[string]bool
}

func key(path string) string {
	return strings.ToLower(strings.Trim(strings.ReplaceAll(path, "/", `\`), `\`))
}

// File returns the file at path (relative to the volume's root), or nil.
func (p *Partition) File(path string) *File {
	if p.files == nil {
		return nil
	}
	return p.files[key(path)]
}

// Letter is the partition's drive letter while mounted, e.g. "F:".
func (p *Partition) Letter() string { return p.letter }

// Put stores a file at path without touching the free space (for building disks).
func (p *Partition) Put(path string, f *File) {
	if p.files == nil {
		p.files = map[string]*File{}
	}
	f.Path = strings.Trim(strings.ReplaceAll(path, "/", `\`), `\`)
	p.files[key(path)] = f
}

// WriteFile writes a file as Windows would: it takes the space from the volume and fails when
// there is not enough. Data is the file's start; the rest up to size reads as zeros (a sparse
// MEMORY.DMP of any size costs only its header in memory).
func (p *Partition) WriteFile(path string, data []byte, size int64, modified time.Time) error {
	if size < int64(len(data)) {
		size = int64(len(data))
	}
	var old int64
	if f := p.File(path); f != nil {
		old = f.size()
	}
	if delta := size - old; delta > p.Free {
		return errNoSpace
	} else {
		p.Free -= delta
	}
	p.Put(path, &File{Data: append([]byte(nil), data...), Size: size, Modified: modified})
	return nil
}

// Files lists the paths of the partition's files, sorted.
func (p *Partition) Files() []string {
	var out []string
	for _, f := range p.files {
		out = append(out, f.Path)
	}
	sort.Strings(out)
	return out
}

func (p *Partition) clone() *Partition {
	c := *p
	c.letter = ""
	c.files = map[string]*File{}
	for k, f := range p.files {
		c.files[k] = f.clone()
	}
	c.dirs = map[string]bool{}
	for k := range p.dirs {
		c.dirs[k] = true
	}
	return &c
}

// File is a file. A registry hive or a BCD store is kept as a structure (Hive, BCD) and its
// bytes are a canonical rendering of it; any other file is Data followed by zeros up to Size.
type File struct {
	Path     string
	Data     []byte
	Size     int64
	Modified time.Time
	Hive     *Hive
	BCD      *BCDStore
}

func (f *File) clone() *File {
	c := *f
	c.Data = append([]byte(nil), f.Data...)
	if f.Hive != nil {
		c.Hive = f.Hive.Clone()
	}
	if f.BCD != nil {
		c.BCD = f.BCD.Clone()
	}
	return &c
}

// Bytes returns the file's content (only the stored part for sparse files: see size).
func (f *File) Bytes() []byte {
	switch {
	case f.Hive != nil:
		b, _ := json.Marshal(f.Hive)
		return append([]byte("regf"), b...)
	case f.BCD != nil:
		b, _ := json.Marshal(f.BCD.Entries)
		return append([]byte("regf"), b...)
	}
	return f.Data
}

func (f *File) size() int64 {
	if f.Hive != nil || f.BCD != nil {
		return int64(len(f.Bytes()))
	}
	return max(f.Size, int64(len(f.Data)))
}

// Hive is a registry hive: a tree of keys.
type Hive struct {
	Root *Key `json:"root"`
}

// Key is a registry key. Names compare case-insensitively.
type Key struct {
	Name    string  `json:"name"`
	Values  []Value `json:"values,omitempty"`
	Subkeys []*Key  `json:"subkeys,omitempty"`
}

// Value is a registry value; Data is as reg query prints it (REG_DWORD as 0x1).
type Value struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Data string `json:"data"`
}

// NewHive returns an empty hive.
func NewHive() *Hive { return &Hive{Root: &Key{}} }

// Clone deep-copies the hive.
func (h *Hive) Clone() *Hive {
	b, _ := json.Marshal(h)
	var c Hive
	_ = json.Unmarshal(b, &c)
	return &c
}

func splitKey(path string) []string {
	var out []string
	for _, p := range strings.Split(path, `\`) {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Key returns the key at path (backslash-separated, from the root), or nil.
func (h *Hive) Key(path string) *Key {
	k := h.Root
	for _, name := range splitKey(path) {
		k = k.sub(name)
		if k == nil {
			return nil
		}
	}
	return k
}

// MakeKey returns the key at path, creating it and its parents.
func (h *Hive) MakeKey(path string) *Key {
	k := h.Root
	for _, name := range splitKey(path) {
		s := k.sub(name)
		if s == nil {
			s = &Key{Name: name}
			k.Subkeys = append(k.Subkeys, s)
		}
		k = s
	}
	return k
}

func (k *Key) sub(name string) *Key {
	for _, s := range k.Subkeys {
		if strings.EqualFold(s.Name, name) {
			return s
		}
	}
	return nil
}

// Get returns a value of the key at path.
func (h *Hive) Get(path, name string) (Value, bool) {
	k := h.Key(path)
	if k == nil {
		return Value{}, false
	}
	for _, v := range k.Values {
		if strings.EqualFold(v.Name, name) {
			return v, true
		}
	}
	return Value{}, false
}

// Set writes a value, creating the key. DWORD data may be given in decimal or as 0x hex; it is
// stored as reg query prints it.
func (h *Hive) Set(path, name, typ, data string) error {
	if typ == "REG_DWORD" {
		n, err := parseUint32(data)
		if err != nil {
			return err
		}
		data = fmt.Sprintf("0x%x", n)
	}
	k := h.MakeKey(path)
	for i, v := range k.Values {
		if strings.EqualFold(v.Name, name) {
			k.Values[i] = Value{Name: v.Name, Type: typ, Data: data}
			return nil
		}
	}
	k.Values = append(k.Values, Value{Name: name, Type: typ, Data: data})
	return nil
}

// SetDWORD writes a REG_DWORD.
func (h *Hive) SetDWORD(path, name string, v uint32) {
	_ = h.Set(path, name, "REG_DWORD", fmt.Sprint(v))
}

// DWORD reads a REG_DWORD.
func (h *Hive) DWORD(path, name string) (uint32, bool) {
	v, ok := h.Get(path, name)
	if !ok || v.Type != "REG_DWORD" {
		return 0, false
	}
	n, err := parseUint32(v.Data)
	return n, err == nil
}

// BCDStore is a BCD store as bcdedit shows it.
type BCDStore struct {
	Entries []agent.BCDEntry
}

// LoadBCD builds a store from recorded bcdedit /enum all /v output.
func LoadBCD(text string) (*BCDStore, error) {
	entries, err := agent.ParseBCDEnum(text)
	if err != nil {
		return nil, err
	}
	return &BCDStore{Entries: entries}, nil
}

// Clone deep-copies the store.
func (b *BCDStore) Clone() *BCDStore {
	c := &BCDStore{}
	for _, e := range b.Entries {
		ce := agent.BCDEntry{Type: e.Type, ID: e.ID}
		for _, el := range e.Elements {
			ce.Elements = append(ce.Elements, agent.BCDElement{Name: el.Name, Values: append([]string(nil), el.Values...)})
		}
		c.Entries = append(c.Entries, ce)
	}
	return c
}

// Entry returns the entry with the identifier (GUID or alias), or nil.
func (b *BCDStore) Entry(id string) *agent.BCDEntry {
	id = agent.CanonicalBCDID(id)
	for i := range b.Entries {
		if b.Entries[i].ID == id {
			return &b.Entries[i]
		}
	}
	return nil
}

// Render prints the store as bcdedit /enum all /v does: each entry's heading underlined with
// dashes, element names in a 24-column field, further values of an element on indented lines.
func (b *BCDStore) Render() string {
	var sb strings.Builder
	for _, e := range b.Entries {
		sb.WriteString("\n" + e.Type + "\n" + strings.Repeat("-", len(e.Type)) + "\n")
		for _, el := range e.Elements {
			vals := el.Values
			if len(vals) == 0 {
				vals = []string{""}
			}
			name := el.Name
			if len(name) < 24 {
				name += strings.Repeat(" ", 24-len(name))
			} else {
				name += " "
			}
			sb.WriteString(strings.TrimRight(name+vals[0], " ") + "\n")
			for _, v := range vals[1:] {
				sb.WriteString(strings.Repeat(" ", 24) + v + "\n")
			}
		}
	}
	return sb.String()
}

// set writes an element, replacing its values.
func setElement(e *agent.BCDEntry, name string, values ...string) {
	for i := range e.Elements {
		if strings.EqualFold(e.Elements[i].Name, name) {
			e.Elements[i].Values = values
			return
		}
	}
	e.Elements = append(e.Elements, agent.BCDElement{Name: name, Values: values})
}
