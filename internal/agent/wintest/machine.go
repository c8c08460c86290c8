package wintest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/agent"
)

// Where the Machine puts disks.
const (
	osPort   = 0 // the rescue VM's OS and temporary disks
	dataPort = 3 // data disks, as on Azure
)

var errNoSpace = errors.New("There is not enough space on the disk.")

// Machine is a simulated rescue VM. It implements agent.Windows. All methods are safe for
// concurrent use.
type Machine struct {
	// UnloadFailures makes the next reg unload calls fail ("Access is denied."), as when a handle
	// into the hive is still open.
	UnloadFailures int
	// ResignOnOnline makes bringing a colliding disk online give it a new identity (as Disk
	// Management does) instead of failing.
	ResignOnOnline bool
	// AlwaysResign makes bringing any disk online give it a new identity.
	AlwaysResign bool
	// RefuseOfflineIdentityChange makes writing the identity of an offline disk fail.
	RefuseOfflineIdentityChange bool
	// AutoMount gives basic data partitions a letter when their disk comes online (true from
	// NewMachine).
	AutoMount bool
	// Now stamps written files; time.Now when nil.
	Now func() time.Time

	mu     sync.Mutex
	disks  []*Disk
	loaded map[string]*File // upper-case HKLM subkey name → hive file
	faults []fault
	calls  []string
	rnd    *rand.Rand
}

type fault struct {
	pattern string
	skip    int
	times   int
	msg     string
}

// NewMachine returns a rescue VM with its own Gen1 OS disk (disk 0, C:, MBR signature
// 0x5EED0001) and temporary disk (disk 1, D:), both on the OS controller.
func NewMachine() *Machine {
	m := &Machine{AutoMount: true, loaded: map[string]*File{}, rnd: rand.New(rand.NewPCG(1, 2))}
	osDisk := &Disk{Size: 127 << 30, Style: "MBR", Signature: RescueSignature, Partitions: []*Partition{
		{Number: 1, Size: 500 << 20, Free: 400 << 20, MBRType: 7, Active: true},
		{Number: 2, Size: 126 << 30, Free: 100 << 30, MBRType: 7, letter: "C:"},
	}}
	tmp := &Disk{Size: 16 << 30, Style: "MBR", Signature: 0x7E3D0002, Partitions: []*Partition{
		{Number: 1, Size: 16 << 30, Free: 15 << 30, MBRType: 7, letter: "D:"},
	}}
	m.place(osDisk, 0, osPort, false)
	osDisk.boot = true
	m.place(tmp, 1, osPort, false)
	return m
}

// RescueSignature is the MBR signature of NewMachine's OS disk: a Gen1 disk copied from the
// same image collides with it.
const RescueSignature = 0x5EED0001

func (m *Machine) place(d *Disk, lun, port int, offline bool) {
	n := 0
	for _, o := range m.disks {
		if o.number >= n {
			n = o.number + 1
		}
	}
	d.number, d.lun, d.port, d.attached = n, lun, port, true
	d.offline, d.offlineReason = offline, ""
	if offline {
		d.offlineReason = "Policy"
	}
	m.disks = append(m.disks, d)
}

// Attach attaches a disk at a LUN of the data controller. Like a new data disk under Azure's
// SAN policy it comes up offline; if its identity collides with an online disk's, the offline
// reason is Collision. It returns the disk number.
func (m *Machine) Attach(d *Disk, lun int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.disks {
		if o == d {
			return 0, errors.New("disk already attached")
		}
		if o.port == dataPort && o.lun == lun {
			return 0, fmt.Errorf("LUN %d is taken", lun)
		}
	}
	for _, p := range d.Partitions {
		p.letter = ""
	}
	m.place(d, lun, dataPort, true)
	if m.collides(d) {
		d.offlineReason = agent.OfflineCollision
	}
	return d.number, nil
}

// Detach removes the disk at a LUN and returns it.
func (m *Machine) Detach(lun int) *Disk {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, d := range m.disks {
		if d.port == dataPort && d.lun == lun {
			m.disks = append(m.disks[:i], m.disks[i+1:]...)
			for _, p := range d.Partitions {
				p.letter = ""
			}
			d.attached = false
			return d
		}
	}
	return nil
}

// Disk returns the disk with the given number, or nil.
func (m *Machine) Disk(number int) *Disk {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.disk(number)
}

func (m *Machine) disk(number int) *Disk {
	for _, d := range m.disks {
		if d.number == number {
			return d
		}
	}
	return nil
}

// DiskAt returns the disk attached at a LUN of the data controller, or nil.
func (m *Machine) DiskAt(lun int) *Disk {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range m.disks {
		if d.port == dataPort && d.lun == lun {
			return d
		}
	}
	return nil
}

// Fail makes the next `times` calls whose description contains pattern fail with msg. Calls are
// described as the program and its arguments ("reg add HKLM\...", "bcdedit /ems {...} on", the
// store path left out), or "disk online 2", "copy SRC DST", "write PATH".
func (m *Machine) Fail(pattern string, times int, msg string) { m.FailAfter(pattern, 0, times, msg) }

// FailAfter is Fail after letting the first skip matching calls succeed.
func (m *Machine) FailAfter(pattern string, skip, times int, msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.faults = append(m.faults, fault{pattern: pattern, skip: skip, times: times, msg: msg})
}

// Calls returns the description of every call so far.
func (m *Machine) Calls() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.calls...)
}

// Loaded lists the HKLM keys under which hives are loaded now.
func (m *Machine) Loaded() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for k := range m.loaded {
		out = append(out, `HKLM\`+k)
	}
	sort.Strings(out)
	return out
}

// call records a call and returns an injected fault for it, if any.
func (m *Machine) call(desc string) error {
	m.calls = append(m.calls, desc)
	for i := range m.faults {
		f := &m.faults[i]
		if f.times > 0 && strings.Contains(desc, f.pattern) {
			if f.skip > 0 {
				f.skip--
				continue
			}
			f.times--
			return errors.New(f.msg)
		}
	}
	return nil
}

func (m *Machine) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// commandError builds the error the real implementation returns for a failed program.
func commandError(program string, args []string, msg string) error {
	return &agent.CommandError{Program: program, Args: args, ExitCode: 1, Stderr: msg + "\r\n"}
}

// ---- disks ----

func (m *Machine) collides(d *Disk) bool {
	for _, o := range m.disks {
		if o != d && !o.offline && o.Style == d.Style && o.Identity() == d.Identity() {
			return true
		}
	}
	return false
}

// ListDisks renders the disks as the agent's listing script prints them.
func (m *Machine) ListDisks(ctx context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("disk list"); err != nil {
		return nil, err
	}
	out := make([]agent.DiskInfo, 0, len(m.disks))
	for _, d := range m.disks {
		lun, port, target := d.lun, d.port, 0
		di := agent.DiskInfo{
			Number: d.number, Lun: &lun, ScsiPort: &port, ScsiTarget: &target, BusType: "SCSI",
			Size: d.Size, PartitionStyle: d.Style, IsOffline: d.offline, OfflineReason: d.offlineReason,
			IsReadOnly: d.readOnly, IsBoot: d.boot, IsSystem: d.boot, FriendlyName: "Msft Virtual Disk",
			Location:   fmt.Sprintf("Integrated : Adapter %d : Port 0 : Target 0 : LUN %d", port, lun),
			Partitions: []agent.PartitionInfo{},
		}
		if d.Style == "GPT" {
			di.GUID = d.GUID
		} else {
			sig := d.Signature
			di.Signature = &sig
		}
		for _, p := range d.Partitions {
			pi := agent.PartitionInfo{PartitionNumber: p.Number, Size: p.Size, GptType: p.GPTType, GUID: p.GUID,
				IsActive: p.Active, IsHidden: p.Hidden, IsBoot: d.boot && p.letter == "C:", IsSystem: d.boot && p.Active}
			if d.Style == "MBR" {
				t := p.MBRType
				pi.MbrType = &t
			}
			if !d.offline && p.letter != "" {
				pi.DriveLetter = strings.TrimSuffix(p.letter, ":")
			}
			di.Partitions = append(di.Partitions, pi)
		}
		out = append(out, di)
	}
	return json.Marshal(out)
}

func (m *Machine) usedLetters() map[string]bool {
	used := map[string]bool{"A:": true}
	for _, d := range m.disks {
		for _, p := range d.Partitions {
			if p.letter != "" {
				used[p.letter] = true
			}
		}
	}
	return used
}

func (m *Machine) SetDiskOffline(ctx context.Context, number int, offline bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	state := "online"
	if offline {
		state = "offline"
	}
	if err := m.call(fmt.Sprintf("disk %s %d", state, number)); err != nil {
		return err
	}
	d := m.disk(number)
	if d == nil {
		return fmt.Errorf("No MSFT_Disk objects found with property 'Number' equal to '%d'.", number)
	}
	if d.boot && offline {
		return errors.New("The disk is the boot disk and cannot be taken offline.")
	}
	if offline {
		d.offline, d.offlineReason = true, "Policy"
		for _, p := range d.Partitions {
			p.letter = ""
		}
		return nil
	}
	if !d.offline {
		return nil
	}
	if m.AlwaysResign {
		m.newIdentity(d)
	} else if m.collides(d) {
		if !m.ResignOnOnline {
			d.offlineReason = agent.OfflineCollision
			return errors.New("The disk is offline because of a signature collision with another disk.")
		}
		m.newIdentity(d)
	}
	d.offline, d.offlineReason = false, ""
	if m.AutoMount {
		used := m.usedLetters()
		for _, p := range d.Partitions {
			isData := (d.Style == "MBR" && p.MBRType == 7) || strings.EqualFold(p.GPTType, agent.GPTTypeBasic)
			if !isData || p.Hidden {
				continue
			}
			for c := 'E'; c <= 'Z'; c++ {
				if l := string(c) + ":"; !used[l] {
					p.letter, used[l] = l, true
					break
				}
			}
		}
	}
	return nil
}

func (m *Machine) newIdentity(d *Disk) {
	if d.Style == "GPT" {
		d.GUID = fmt.Sprintf("{%08x-%04x-4%03x-8%03x-%012x}", m.rnd.Uint32(), m.rnd.Uint32()&0xffff,
			m.rnd.Uint32()&0xfff, m.rnd.Uint32()&0xfff, m.rnd.Uint64()&0xffffffffffff)
	} else {
		d.Signature = m.rnd.Uint32() | 1
	}
}

func (m *Machine) SetDiskReadOnly(ctx context.Context, number int, readOnly bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call(fmt.Sprintf("disk readonly %d %t", number, readOnly)); err != nil {
		return err
	}
	d := m.disk(number)
	if d == nil {
		return fmt.Errorf("no disk %d", number)
	}
	d.readOnly = readOnly
	return nil
}

func (m *Machine) setIdentity(number int, desc string, apply func(*Disk) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call(desc); err != nil {
		return err
	}
	d := m.disk(number)
	if d == nil {
		return fmt.Errorf("no disk %d", number)
	}
	if d.offline && m.RefuseOfflineIdentityChange {
		return errors.New("The disk is offline.")
	}
	if err := apply(d); err != nil {
		return err
	}
	if !d.offline && m.collides(d) { // Windows takes a disk that now collides offline
		d.offline, d.offlineReason = true, agent.OfflineCollision
		for _, p := range d.Partitions {
			p.letter = ""
		}
	}
	return nil
}

func (m *Machine) SetDiskSignature(ctx context.Context, number int, signature uint32) error {
	return m.setIdentity(number, fmt.Sprintf("disk signature %d %08X", number, signature), func(d *Disk) error {
		if d.Style != "MBR" {
			return errors.New("The disk is not an MBR disk.")
		}
		d.Signature = signature
		return nil
	})
}

func (m *Machine) SetDiskGUID(ctx context.Context, number int, guid string) error {
	return m.setIdentity(number, fmt.Sprintf("disk guid %d %s", number, guid), func(d *Disk) error {
		if d.Style != "GPT" {
			return errors.New("The disk is not a GPT disk.")
		}
		if len(guid) != 38 || guid[0] != '{' {
			return fmt.Errorf("%q is not a GUID", guid)
		}
		d.GUID = strings.ToLower(guid)
		return nil
	})
}

func (m *Machine) AddAccessPath(ctx context.Context, disk, partition int, letter string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call(fmt.Sprintf("disk addpath %d %d %s", disk, partition, letter)); err != nil {
		return err
	}
	d := m.disk(disk)
	if d == nil || d.offline {
		return fmt.Errorf("disk %d is not online", disk)
	}
	p := d.Partition(partition)
	if p == nil {
		return fmt.Errorf("no partition %d on disk %d", partition, disk)
	}
	l := agent.Letter(letter)
	if l == "" || m.usedLetters()[l] {
		return fmt.Errorf("The access path %s is already in use.", letter)
	}
	if p.letter != "" {
		return fmt.Errorf("partition %d already has %s", partition, p.letter)
	}
	p.letter = l
	return nil
}

func (m *Machine) RemoveAccessPath(ctx context.Context, disk, partition int, letter string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call(fmt.Sprintf("disk rmpath %d %d %s", disk, partition, letter)); err != nil {
		return err
	}
	d := m.disk(disk)
	if d == nil {
		return fmt.Errorf("no disk %d", disk)
	}
	p := d.Partition(partition)
	if p == nil || !strings.EqualFold(p.letter, agent.Letter(letter)) {
		return fmt.Errorf("The access path %s is not valid.", letter)
	}
	p.letter = ""
	return nil
}

func (m *Machine) UsedLetters(ctx context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for l := range m.usedLetters() {
		out = append(out, l)
	}
	sort.Strings(out)
	return out, nil
}

func (m *Machine) FreeSpace(ctx context.Context, letter string) (int64, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := m.volume(letter)
	if err != nil {
		return 0, 0, err
	}
	return p.Free, p.Size, nil
}

// ---- files ----

func (m *Machine) volume(letter string) (*Partition, error) {
	l := agent.Letter(letter)
	for _, d := range m.disks {
		for _, p := range d.Partitions {
			if p.letter != "" && p.letter == l && (!d.offline || d.boot) {
				return p, nil
			}
		}
	}
	return nil, &fs.PathError{Op: "open", Path: letter, Err: fs.ErrNotExist}
}

// resolve splits a path into its volume and the path on it.
func (m *Machine) resolve(path string) (*Partition, string, error) {
	if len(path) < 2 || path[1] != ':' {
		return nil, "", fmt.Errorf("%q is not an absolute Windows path", path)
	}
	p, err := m.volume(path[:2])
	if err != nil {
		return nil, "", &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	return p, key(path[2:]), nil
}

func (m *Machine) lockedHive(f *File) bool {
	for _, h := range m.loaded {
		if h == f {
			return true
		}
	}
	return false
}

var errInUse = errors.New("The process cannot access the file because it is being used by another process.")

func isDir(p *Partition, k string) bool {
	if k == "" || p.dirs[k] {
		return true
	}
	for fk := range p.files {
		if strings.HasPrefix(fk, k+`\`) {
			return true
		}
	}
	return false
}

func (m *Machine) Stat(path string) (agent.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, k, err := m.resolve(path)
	if err != nil {
		return agent.FileInfo{}, err
	}
	if f := p.files[k]; f != nil {
		return agent.FileInfo{Name: agent.BaseName(f.Path), Size: f.size(), Modified: f.Modified}, nil
	}
	if isDir(p, k) {
		return agent.FileInfo{Name: agent.BaseName(path), Dir: true}, nil
	}
	return agent.FileInfo{}, &fs.PathError{Op: "stat", Path: path, Err: fs.ErrNotExist}
}

func (m *Machine) ReadDir(path string) ([]agent.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, k, err := m.resolve(path)
	if err != nil {
		return nil, err
	}
	if !isDir(p, k) {
		return nil, &fs.PathError{Op: "readdir", Path: path, Err: fs.ErrNotExist}
	}
	prefix := k + `\`
	if k == "" {
		prefix = ""
	}
	seen := map[string]bool{}
	var out []agent.FileInfo
	for fk, f := range p.files {
		if !strings.HasPrefix(fk, prefix) {
			continue
		}
		rest := f.Path[len(prefix):]
		if i := strings.Index(rest, `\`); i >= 0 {
			if name := rest[:i]; !seen[strings.ToLower(name)] {
				seen[strings.ToLower(name)] = true
				out = append(out, agent.FileInfo{Name: name, Dir: true})
			}
			continue
		}
		out = append(out, agent.FileInfo{Name: rest, Size: f.size(), Modified: f.Modified})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

type openFile struct {
	head []byte
	size int64
}

func (o *openFile) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= o.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(b) && off+int64(n) < o.size {
		pos := off + int64(n)
		if pos < int64(len(o.head)) {
			n += copy(b[n:], o.head[pos:])
			continue
		}
		end := min(int64(len(b)-n), o.size-pos)
		clear(b[n : n+int(end)])
		n += int(end)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (o *openFile) Close() error { return nil }

func (m *Machine) Open(path string) (agent.File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, k, err := m.resolve(path)
	if err != nil {
		return nil, err
	}
	f := p.files[k]
	if f == nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
	}
	if m.lockedHive(f) {
		return nil, &fs.PathError{Op: "open", Path: path, Err: errInUse}
	}
	return &openFile{head: bytes.Clone(f.Bytes()), size: f.size()}, nil
}

func (m *Machine) ReadFile(path string) ([]byte, error) {
	f, err := m.Open(path)
	if err != nil {
		return nil, err
	}
	o := f.(*openFile)
	b := make([]byte, o.size)
	_, err = o.ReadAt(b, 0)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return b, err
}

func (m *Machine) WriteFile(path string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("write " + path); err != nil {
		return err
	}
	p, k, err := m.resolve(path)
	if err != nil {
		return err
	}
	if f := p.files[k]; f != nil && m.lockedHive(f) {
		return errInUse
	}
	return p.WriteFile(k, data, int64(len(data)), m.now())
}

// CopyFile copies a file's content, hive and store structures included (deep copies).
func (m *Machine) CopyFile(ctx context.Context, src, dst string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("copy " + src + " " + dst); err != nil {
		return err
	}
	sp, sk, err := m.resolve(src)
	if err != nil {
		return err
	}
	sf := sp.files[sk]
	if sf == nil {
		return &fs.PathError{Op: "open", Path: src, Err: fs.ErrNotExist}
	}
	dp, dk, err := m.resolve(dst)
	if err != nil {
		return err
	}
	if m.lockedHive(sf) || (dp.files[dk] != nil && m.lockedHive(dp.files[dk])) {
		return errInUse
	}
	c := sf.clone()
	var old int64
	if f := dp.files[dk]; f != nil {
		old = f.size()
	}
	if delta := c.size() - old; delta > dp.Free {
		return errNoSpace
	} else {
		dp.Free -= delta
	}
	if old := dp.files[dk]; old != nil {
		c.Path = old.Path
	}
	dp.Put(strings.Trim(dst[2:], `\`), c)
	return nil
}

func (m *Machine) MkdirAll(path string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, k, err := m.resolve(path)
	if err != nil {
		return err
	}
	if p.files[k] != nil {
		return fmt.Errorf("%s is a file", path)
	}
	if p.dirs == nil {
		p.dirs = map[string]bool{}
	}
	parts := strings.Split(k, `\`)
	for i := range parts {
		p.dirs[strings.Join(parts[:i+1], `\`)] = true
	}
	return nil
}

func (m *Machine) Remove(path string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.call("remove " + path); err != nil {
		return err
	}
	p, k, err := m.resolve(path)
	if err != nil {
		return err
	}
	f := p.files[k]
	if f == nil {
		return &fs.PathError{Op: "remove", Path: path, Err: fs.ErrNotExist}
	}
	if m.lockedHive(f) {
		return errInUse
	}
	p.Free += f.size()
	delete(p.files, k)
	return nil
}

func parseUint32(s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 0, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid DWORD %q", s)
	}
	return uint32(n), nil
}

var _ agent.Windows = (*Machine)(nil)
