package agent

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// session is the attached disk while one command works on it: online, with letters on the
// partitions the agent needs, its identity changed if it collided. close undoes all of it.
type session struct {
	a        *Agent
	disk     DiskInfo
	incident string

	wasOffline bool
	collision  *Collision // set when the identity was changed (or found changed) to bring it online
	origID     string     // the disk's identity when the agent found it
	assigned   []assigned // letters the agent added

	win      PartitionInfo // the Windows partition
	winVol   string        // its letter, "F:"
	boot     PartitionInfo // the partition holding the BCD store
	bootVol  string
	bcdStore string
	hive     string // F:\Windows\System32\config\SYSTEM
	volumes  []PartitionInfo
}

type assigned struct {
	partition int
	letter    string
}

// Paths on the Windows volume.
var (
	systemHivePath = JoinPath("Windows", "System32", "config", "SYSTEM")
	winloadEXE     = JoinPath("Windows", "System32", "winload.exe")
	winloadEFI     = JoinPath("Windows", "System32", "winload.efi")
	bcdGen1        = JoinPath("Boot", "BCD")
	bcdGen2        = JoinPath("EFI", "Microsoft", "Boot", "BCD")
)

// open finds the disk at the request's LUN, brings it online (resolving an identity collision),
// and finds the Windows partition and the BCD store, adding letters where needed. On error the
// returned session, if not nil, must still be closed.
func (a *Agent) open(ctx context.Context, req Request, res *Result) (*session, error) {
	disks, err := a.disks(ctx)
	if err != nil {
		return nil, err
	}
	d, err := FindDisk(disks, req.LUN, req.DiskSizeGB)
	if err != nil {
		return nil, err
	}
	res.Disk = &DiskResult{
		Number: d.Number, LUN: req.LUN, SizeBytes: d.Size, PartitionStyle: d.PartitionStyle,
		Generation: d.Generation(), WasOffline: d.IsOffline, OfflineReason: d.OfflineReason,
	}
	s := &session{a: a, disk: d, wasOffline: d.IsOffline, origID: d.Identity(), incident: req.IncidentID}
	log := a.log().With("disk", d.Number, "lun", req.LUN)

	// An earlier run that changed the identity and then died left a record of the original.
	if rec, ok := s.readIdentityRecord(); ok {
		if d.Identity() == rec.Original {
			s.dropIdentityRecord()
		} else {
			log.Warn("disk still has the temporary identity of an earlier run", "identity", d.Identity(), "original", rec.Original)
			s.origID = rec.Original
			s.collision = &Collision{WithDisk: rec.WithDisk, Kind: rec.Kind, Original: rec.Original, Temporary: d.Identity()}
			res.Disk.Collision = s.collision
		}
	}
	clash, err := FindClash(disks, d)
	if err != nil && s.collision == nil {
		return nil, err
	}
	if s.collision != nil {
		clash = nil // resolved already; only the restore at close is left
	}

	if clash != nil {
		if clash.With.IsBoot || clash.With.IsSystem || !clash.With.IsOffline {
			log.Warn("disk identity collides", "with", clash.With.Number, "kind", clash.Kind, "identity", clash.Identity)
		}
		tmp, err := s.newIdentity(disks)
		if err != nil {
			return nil, err
		}
		s.collision = &Collision{WithDisk: clash.With.Number, Kind: clash.Kind, Original: clash.Identity, Temporary: tmp}
		res.Disk.Collision = s.collision
		if err := s.writeIdentityRecord(); err != nil {
			return nil, fmt.Errorf("record the original identity before changing it: %w", err)
		}
		if err := s.setIdentity(ctx, tmp); err != nil {
			// Some Windows versions refuse to rewrite an offline disk; they give the disk a new
			// identity of their own when it is brought online. Both end the same way: the
			// original identity is written back and checked at close.
			log.Warn("cannot change the identity of the offline disk; trying to bring it online", "err", err)
			s.collision.Temporary = ""
		}
	}
	if d.IsOffline {
		if err := a.Win.SetDiskOffline(ctx, d.Number, false); err != nil {
			return s, fmt.Errorf("bring disk %d online: %w", d.Number, err)
		}
	}
	if d.IsReadOnly {
		if err := a.Win.SetDiskReadOnly(ctx, d.Number, false); err != nil {
			return s, fmt.Errorf("clear read-only on disk %d: %w", d.Number, err)
		}
	}
	if err := s.refresh(ctx); err != nil {
		return s, err
	}
	if s.disk.IsOffline {
		return s, fmt.Errorf("disk %d is still offline (%s) after bringing it online", d.Number, s.disk.OfflineReason)
	}
	if s.collision != nil {
		now := s.disk.Identity()
		switch {
		case now == s.collision.Original:
			return s, refuse("disk %d is online with the %s it shares with disk %d; refusing to work on a disk whose identity collides", d.Number, identityWord(d), s.collision.WithDisk)
		case s.collision.Temporary == "":
			s.collision.Temporary = now // Windows chose it
		case now != s.collision.Temporary:
			return s, refuse("disk %d came online with identity %s, not the %s the agent wrote", d.Number, now, s.collision.Temporary)
		}
	}
	if s.collision == nil && s.origID != "" && s.disk.Identity() != s.origID {
		// Windows gave the disk a new identity of its own accord when it came online. The boot
		// store refers to the old one, so it is written back at close like any other.
		kind := CollisionMBRSignature
		if d.PartitionStyle == "GPT" {
			kind = CollisionGPTGUID
		}
		s.collision = &Collision{WithDisk: -1, Kind: kind, Original: s.origID, Temporary: s.disk.Identity()}
		res.Disk.Collision = s.collision
		if err := s.writeIdentityRecord(); err != nil {
			return s, fmt.Errorf("record the original identity: %w", err)
		}
	}
	if err := s.findWindows(ctx, res); err != nil {
		return s, err
	}
	return s, nil
}

func (a *Agent) disks(ctx context.Context) ([]DiskInfo, error) {
	raw, err := a.Win.ListDisks(ctx)
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	return ParseDisks(raw)
}

// refresh re-reads the session's disk.
func (s *session) refresh(ctx context.Context) error {
	disks, err := s.a.disks(ctx)
	if err != nil {
		return err
	}
	for _, d := range disks {
		if d.Number == s.disk.Number {
			s.disk = d
			return nil
		}
	}
	return fmt.Errorf("disk %d disappeared", s.disk.Number)
}

func (s *session) partition(n int) (PartitionInfo, bool) {
	for _, p := range s.disk.Partitions {
		if p.PartitionNumber == n {
			return p, true
		}
	}
	return PartitionInfo{}, false
}

// newIdentity draws an identity that no disk has.
func (s *session) newIdentity(disks []DiskInfo) (string, error) {
	taken := map[string]bool{}
	for _, d := range disks {
		taken[d.Identity()] = true
	}
	for range 16 {
		var b [16]byte
		if _, err := io.ReadFull(s.a.rand(), b[:]); err != nil {
			return "", fmt.Errorf("draw a disk identity: %w", err)
		}
		var id string
		if s.disk.PartitionStyle == "GPT" {
			b[6] = b[6]&0x0F | 0x40 // version 4
			b[8] = b[8]&0x3F | 0x80 // RFC 4122 variant
			id = fmt.Sprintf("{%08x-%04x-%04x-%04x-%012x}", binary.BigEndian.Uint32(b[0:4]), b[4:6], b[6:8], b[8:10], b[10:16])
		} else {
			sig := binary.LittleEndian.Uint32(b[:4])
			if sig == 0 {
				continue
			}
			id = fmt.Sprintf("%08X", sig)
		}
		if !taken[id] {
			return id, nil
		}
	}
	return "", errors.New("draw a disk identity: no free identity after 16 draws")
}

func (s *session) setIdentity(ctx context.Context, id string) error {
	sig, guid, err := ParseIdentity(s.disk.PartitionStyle, id)
	if err != nil {
		return err
	}
	if s.disk.PartitionStyle == "GPT" {
		return s.a.Win.SetDiskGUID(ctx, s.disk.Number, guid)
	}
	return s.a.Win.SetDiskSignature(ctx, s.disk.Number, sig)
}

// ensureLetter returns the partition's letter, adding a free one when it has none.
func (s *session) ensureLetter(ctx context.Context, p PartitionInfo, res *Result) (string, error) {
	if l := p.Letter(); l != "" {
		return l, nil
	}
	used, err := s.a.Win.UsedLetters(ctx)
	if err != nil {
		return "", fmt.Errorf("list drive letters: %w", err)
	}
	free := FreeLetters(used)
	if len(free) == 0 {
		return "", errors.New("no free drive letter on the rescue VM")
	}
	l := free[0]
	if err := s.a.Win.AddAccessPath(ctx, s.disk.Number, p.PartitionNumber, l); err != nil {
		return "", fmt.Errorf("add letter %s to partition %d of disk %d: %w", l, p.PartitionNumber, s.disk.Number, err)
	}
	s.assigned = append(s.assigned, assigned{p.PartitionNumber, l})
	if res.Windows != nil {
		res.Windows.TempLetters = append(res.Windows.TempLetters, l)
	}
	if err := s.refresh(ctx); err != nil {
		return "", err
	}
	if q, ok := s.partition(p.PartitionNumber); !ok || q.Letter() != l {
		return "", fmt.Errorf("partition %d of disk %d did not take letter %s", p.PartitionNumber, s.disk.Number, l)
	}
	return l, nil
}

func (s *session) exists(path string) bool {
	_, err := s.a.Win.Stat(path)
	return err == nil
}

// findWindows finds the Windows partition (it holds config\SYSTEM and winload) and the BCD store
// (gen1: \Boot\BCD on the active System Reserved partition, or on the Windows partition when
// there is none; gen2: \EFI\Microsoft\Boot\BCD on the EFI system partition).
func (s *session) findWindows(ctx context.Context, res *Result) error {
	res.Windows = &WindowsResult{}
	parts := append([]PartitionInfo(nil), s.disk.Partitions...)
	sort.SliceStable(parts, func(i, j int) bool { return parts[i].Size > parts[j].Size })
	var found []PartitionInfo
	letters := map[int]string{}
	for _, p := range parts {
		if !p.IsDataVolume() {
			continue
		}
		l, err := s.ensureLetter(ctx, p, res)
		if err != nil {
			return err
		}
		letters[p.PartitionNumber] = l
		p, _ = s.partition(p.PartitionNumber)
		s.volumes = append(s.volumes, p)
		if s.exists(JoinPath(l, systemHivePath)) && (s.exists(JoinPath(l, winloadEXE)) || s.exists(JoinPath(l, winloadEFI))) {
			found = append(found, p)
		}
	}
	switch len(found) {
	case 0:
		return refuse("disk %d has no Windows partition (none holds %s and winload)", s.disk.Number, systemHivePath)
	case 1:
	default:
		return refuse("disk %d holds %d Windows installations; refusing to choose", s.disk.Number, len(found))
	}
	s.win, s.winVol = found[0], letters[found[0].PartitionNumber]
	s.hive = JoinPath(s.winVol, systemHivePath)
	res.Windows.Volume, res.Windows.Partition, res.Windows.SystemHive = s.winVol, s.win.PartitionNumber, s.hive
	res.Windows.Loader = "winload.exe"
	if s.exists(JoinPath(s.winVol, winloadEFI)) && (s.disk.PartitionStyle == "GPT" || !s.exists(JoinPath(s.winVol, winloadEXE))) {
		res.Windows.Loader = "winload.efi"
	}

	if s.disk.PartitionStyle == "GPT" {
		var esps []PartitionInfo
		for _, p := range s.disk.Partitions {
			if p.IsESP() {
				esps = append(esps, p)
			}
		}
		if len(esps) != 1 {
			return refuse("GPT disk %d has %d EFI system partitions, want one", s.disk.Number, len(esps))
		}
		l, err := s.ensureLetter(ctx, esps[0], res)
		if err != nil {
			return err
		}
		if !s.exists(JoinPath(l, bcdGen2)) {
			return refuse("the EFI system partition of disk %d has no %s", s.disk.Number, bcdGen2)
		}
		s.boot, s.bootVol, s.bcdStore = esps[0], l, JoinPath(l, bcdGen2)
	} else {
		var candidates []PartitionInfo
		for _, p := range s.disk.Partitions {
			if p.IsActive {
				candidates = append(candidates, p)
			}
		}
		if len(candidates) == 0 {
			candidates = []PartitionInfo{s.win} // no System Reserved: the store is on the Windows volume
		}
		for _, p := range candidates {
			l, err := s.ensureLetter(ctx, p, res)
			if err != nil {
				return err
			}
			if s.exists(JoinPath(l, bcdGen1)) {
				s.boot, s.bootVol, s.bcdStore = p, l, JoinPath(l, bcdGen1)
				break
			}
		}
		if s.bcdStore == "" {
			return refuse("MBR disk %d has no %s on its active partition", s.disk.Number, bcdGen1)
		}
	}
	res.Windows.BootPartition, res.Windows.BCDStore = s.boot.PartitionNumber, s.bcdStore
	return nil
}

// close removes the letters the agent added, writes back the original identity of a disk that
// collided, takes the disk offline, and checks both. Every step is tried; errors are joined.
func (s *session) close(ctx context.Context, res *Result) error {
	// Cleanup runs even when the command's context is done.
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for i := len(s.assigned) - 1; i >= 0; i-- {
		as := s.assigned[i]
		if err := s.a.Win.RemoveAccessPath(ctx, s.disk.Number, as.partition, as.letter); err != nil {
			errs = append(errs, fmt.Errorf("remove letter %s: %w", as.letter, err))
		}
	}
	if s.collision != nil {
		if err := s.setIdentity(ctx, s.collision.Original); err != nil {
			errs = append(errs, fmt.Errorf("restore the identity of disk %d: %w", s.disk.Number, err))
		}
	}
	if err := s.a.Win.SetDiskOffline(ctx, s.disk.Number, true); err != nil {
		errs = append(errs, fmt.Errorf("take disk %d offline: %w", s.disk.Number, err))
	}
	if err := s.refresh(ctx); err != nil {
		errs = append(errs, err)
	} else {
		if res.Disk != nil {
			res.Disk.LeftOffline = s.disk.IsOffline
		}
		if !s.disk.IsOffline {
			errs = append(errs, fmt.Errorf("disk %d is still online", s.disk.Number))
		}
		if now := s.disk.Identity(); s.collision != nil || now != s.origID {
			if now != s.origID {
				errs = append(errs, fmt.Errorf("disk %d has identity %s, not its original %s: its boot store would not match", s.disk.Number, now, s.origID))
			} else if s.collision != nil {
				s.collision.Restored = true
				s.dropIdentityRecord()
			}
		}
		for _, as := range s.assigned {
			if p, ok := s.partition(as.partition); ok && strings.EqualFold(p.Letter(), as.letter) {
				errs = append(errs, fmt.Errorf("letter %s is still on partition %d", as.letter, as.partition))
			}
		}
	}
	return errors.Join(errs...)
}

// The identity record keeps a collided disk's original identity on the rescue VM's own disk
// while the agent works, so that a run that dies half-way is finished by the next one.
const identityDir = `C:\ProgramData\vmrescue`

type identityRecord struct {
	Disk     int    `json:"disk"`
	WithDisk int    `json:"withDisk"`
	Kind     string `json:"kind"`
	Original string `json:"original"`
}

func (s *session) identityPath() string {
	if s.incident == "" {
		return JoinPath(identityDir, fmt.Sprintf("identity-disk%d.json", s.disk.Number))
	}
	return JoinPath(identityDir, "identity-"+s.incident+".json")
}

func (s *session) readIdentityRecord() (identityRecord, bool) {
	b, err := s.a.Win.ReadFile(s.identityPath())
	if err != nil {
		return identityRecord{}, false
	}
	var rec identityRecord
	if json.Unmarshal(b, &rec) != nil || rec.Original == "" {
		return identityRecord{}, false
	}
	return rec, true
}

func (s *session) writeIdentityRecord() error {
	b, _ := json.Marshal(identityRecord{Disk: s.disk.Number, WithDisk: s.collision.WithDisk, Kind: s.collision.Kind, Original: s.collision.Original})
	if err := s.a.Win.MkdirAll(identityDir); err != nil {
		return err
	}
	return s.a.Win.WriteFile(s.identityPath(), b)
}

func (s *session) dropIdentityRecord() {
	if err := s.a.Win.Remove(s.identityPath()); err != nil && !IsNotFound(err) {
		s.a.log().Warn("cannot remove the identity record", "err", err)
	}
}
