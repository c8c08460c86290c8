package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// DiskInfo is one disk of the listing that ListDisks returns: properties of Get-Disk, with the
// SCSI address from Win32_DiskDrive (same Index as the disk Number) and the partitions from
// Get-Partition. The field names are the cmdlets' own.
type DiskInfo struct {
	Number         int             `json:"Number"`
	Lun            *int            `json:"Lun"`        // Win32_DiskDrive.SCSILogicalUnit
	ScsiPort       *int            `json:"ScsiPort"`   // Win32_DiskDrive.SCSIPort (the controller)
	ScsiTarget     *int            `json:"ScsiTarget"` // Win32_DiskDrive.SCSITargetId
	BusType        string          `json:"BusType"`
	Size           int64           `json:"Size"`
	PartitionStyle string          `json:"PartitionStyle"` // MBR, GPT or RAW
	Signature      *uint32         `json:"Signature"`      // MBR disks
	GUID           string          `json:"Guid"`           // GPT disks, {...}
	IsOffline      bool            `json:"IsOffline"`
	OfflineReason  string          `json:"OfflineReason"` // Policy, Collision, ... (or its number)
	IsReadOnly     bool            `json:"IsReadOnly"`
	IsBoot         bool            `json:"IsBoot"`
	IsSystem       bool            `json:"IsSystem"`
	FriendlyName   string          `json:"FriendlyName"`
	Location       string          `json:"Location"`
	Partitions     []PartitionInfo `json:"Partitions"`
}

// PartitionInfo is one partition of a disk (Get-Partition).
type PartitionInfo struct {
	PartitionNumber int    `json:"PartitionNumber"`
	DriveLetter     string `json:"DriveLetter"` // "F", or "" without a letter
	Offset          int64  `json:"Offset"`
	Size            int64  `json:"Size"`
	MbrType         *int   `json:"MbrType"` // MBR: 7 for NTFS/IFS
	GptType         string `json:"GptType"` // GPT: partition type GUID
	GUID            string `json:"Guid"`    // GPT: the partition's own GUID
	IsActive        bool   `json:"IsActive"`
	IsBoot          bool   `json:"IsBoot"`
	IsSystem        bool   `json:"IsSystem"`
	IsHidden        bool   `json:"IsHidden"`
}

// GPT partition types that matter here.
const (
	GPTTypeESP      = "{c12a7328-f81f-11d2-ba4b-00a0c93ec93b}" // EFI system partition
	GPTTypeMSR      = "{e3c9e316-0b5c-4db8-817d-f92df00215ae}" // Microsoft reserved
	GPTTypeBasic    = "{ebd0a0a2-b9e5-4433-87c0-68b6b72699c7}" // basic data (NTFS volumes)
	GPTTypeRecovery = "{de94bba4-06d1-4d40-a16a-bfd50179d6ac}" // Windows RE
)

// MBRTypeIFS is the MBR partition type of NTFS volumes.
const MBRTypeIFS = 7

// Letter returns the partition's drive letter as "F:", or "".
func (p PartitionInfo) Letter() string { return Letter(p.DriveLetter) }

// IsESP reports whether p is an EFI system partition.
func (p PartitionInfo) IsESP() bool { return strings.EqualFold(p.GptType, GPTTypeESP) }

// IsDataVolume reports whether p can hold a Windows installation or a boot store: a GPT basic
// data partition or an MBR NTFS partition.
func (p PartitionInfo) IsDataVolume() bool {
	if p.GptType != "" {
		return strings.EqualFold(p.GptType, GPTTypeBasic)
	}
	return p.MbrType != nil && *p.MbrType == MBRTypeIFS
}

// ParseDisks decodes the disk listing. PowerShell's ConvertTo-Json writes a single object,
// not an array, when there is one disk; both are accepted.
func ParseDisks(data []byte) ([]DiskInfo, error) {
	data = bytes.TrimSpace(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))
	if len(data) == 0 {
		return nil, fmt.Errorf("disk listing is empty")
	}
	var disks []DiskInfo
	if data[0] == '{' {
		var d DiskInfo
		if err := json.Unmarshal(data, &d); err != nil {
			return nil, fmt.Errorf("decode disk listing: %w", err)
		}
		disks = []DiskInfo{d}
	} else if err := json.Unmarshal(data, &disks); err != nil {
		return nil, fmt.Errorf("decode disk listing: %w", err)
	}
	for i := range disks {
		d := &disks[i]
		d.PartitionStyle = strings.ToUpper(strings.TrimSpace(d.PartitionStyle))
		switch d.PartitionStyle { // the CIM numbers, should the cmdlet give them raw
		case "1":
			d.PartitionStyle = "MBR"
		case "2":
			d.PartitionStyle = "GPT"
		case "0", "":
			d.PartitionStyle = "RAW"
		}
		d.OfflineReason = offlineReasonName(d.OfflineReason)
		d.GUID = normalizeGUID(d.GUID)
		for j := range d.Partitions {
			p := &d.Partitions[j]
			p.DriveLetter = strings.TrimSuffix(Letter(p.DriveLetter), ":")
			p.GptType = normalizeGUID(p.GptType)
			p.GUID = normalizeGUID(p.GUID)
		}
		sort.Slice(d.Partitions, func(a, b int) bool { return d.Partitions[a].PartitionNumber < d.Partitions[b].PartitionNumber })
	}
	sort.Slice(disks, func(a, b int) bool { return disks[a].Number < disks[b].Number })
	return disks, nil
}

// MSFT_Disk.OfflineReason values.
var offlineReasons = map[string]string{
	"1": "Policy", "2": "RedundantPath", "3": "Snapshot", "4": "Collision",
	"5": "ResourceExhaustion", "6": "CriticalWriteFailures", "7": "DataIntegrityScanRequired",
}

// OfflineCollision is the offline reason Windows gives a disk whose identity clashes.
const OfflineCollision = "Collision"

func offlineReasonName(s string) string {
	s = strings.TrimSpace(s)
	if n, ok := offlineReasons[s]; ok {
		return n
	}
	if strings.Contains(strings.ToLower(s), "collision") {
		return OfflineCollision
	}
	if s == "0" {
		return ""
	}
	return strings.ReplaceAll(s, " ", "")
}

func normalizeGUID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return ""
	}
	if !strings.HasPrefix(s, "{") {
		s = "{" + s + "}"
	}
	return s
}

// Identity is a disk's MBR signature (8 hex digits) or GPT GUID ({...}), or "" when it has none.
func (d DiskInfo) Identity() string {
	switch d.PartitionStyle {
	case "MBR":
		if d.Signature != nil && *d.Signature != 0 {
			return fmt.Sprintf("%08X", *d.Signature)
		}
	case "GPT":
		return d.GUID
	}
	return ""
}

// Generation is gen1 for MBR disks (BIOS boot) and gen2 for GPT disks (UEFI boot).
func (d DiskInfo) Generation() string {
	if d.PartitionStyle == "GPT" {
		return Gen2
	}
	return Gen1
}

// RefusedError is a terminal refusal: the disk is unsafe or unsupported as it stands.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

func refuse(format string, args ...any) error {
	return &RefusedError{Reason: fmt.Sprintf(format, args...)}
}

// FindDisk picks the disk attached at lun. Data disks of an Azure VM sit on their own SCSI
// controller, so a disk on the controller of the rescue VM's boot disk (the OS and temporary
// disks, which have LUNs of their own) never matches. More than one match, a match that is the
// boot or system disk, or a size other than sizeGB (when given) is refused.
func FindDisk(disks []DiskInfo, lun int, sizeGB int) (DiskInfo, error) {
	bootPort := -1
	for _, d := range disks {
		if (d.IsBoot || d.IsSystem) && d.ScsiPort != nil {
			bootPort = *d.ScsiPort
		}
	}
	var found []DiskInfo
	for _, d := range disks {
		if d.Lun == nil || *d.Lun != lun {
			continue
		}
		if d.ScsiPort != nil && *d.ScsiPort == bootPort {
			continue // the OS or temporary disk, on the boot disk's controller
		}
		found = append(found, d)
	}
	switch len(found) {
	case 0:
		return DiskInfo{}, fmt.Errorf("no disk at LUN %d (is it attached?)", lun)
	case 1:
	default:
		nums := make([]string, len(found))
		for i, d := range found {
			nums[i] = strconv.Itoa(d.Number)
		}
		return DiskInfo{}, refuse("disks %s all sit at LUN %d; refusing to guess", strings.Join(nums, ", "), lun)
	}
	d := found[0]
	if d.IsBoot || d.IsSystem {
		return DiskInfo{}, refuse("the disk at LUN %d is the rescue VM's own boot disk", lun)
	}
	if sizeGB > 0 && d.Size != int64(sizeGB)<<30 {
		return DiskInfo{}, refuse("the disk at LUN %d has %d bytes, not the %d GiB of the attached copy", lun, d.Size, sizeGB)
	}
	switch d.PartitionStyle {
	case "MBR", "GPT":
	default:
		return DiskInfo{}, refuse("disk %d at LUN %d has no partition table (%s)", d.Number, lun, d.PartitionStyle)
	}
	return d, nil
}

// Clash is another disk whose identity equals the target's.
type Clash struct {
	With     DiskInfo
	Kind     string // CollisionMBRSignature or CollisionGPTGUID
	Identity string
}

// FindClash looks for another disk with the target's MBR signature or GPT GUID. It refuses
// when Windows reports a collision that the listing does not show, or when the target has no
// identity to compare: in both cases the agent cannot know what it would have to restore.
func FindClash(disks []DiskInfo, target DiskInfo) (*Clash, error) {
	id := target.Identity()
	if id == "" {
		if target.IsOffline && target.OfflineReason == OfflineCollision {
			return nil, refuse("disk %d is offline for a collision but has no %s to compare", target.Number, identityWord(target))
		}
		return nil, nil
	}
	for _, d := range disks {
		if d.Number == target.Number || d.PartitionStyle != target.PartitionStyle {
			continue
		}
		if d.Identity() == id {
			kind := CollisionMBRSignature
			if target.PartitionStyle == "GPT" {
				kind = CollisionGPTGUID
			}
			return &Clash{With: d, Kind: kind, Identity: id}, nil
		}
	}
	if target.IsOffline && target.OfflineReason == OfflineCollision {
		return nil, refuse("Windows reports a collision for disk %d but no disk shares its %s %s", target.Number, identityWord(target), id)
	}
	return nil, nil
}

func identityWord(d DiskInfo) string {
	if d.PartitionStyle == "GPT" {
		return "GPT GUID"
	}
	return "MBR signature"
}

// FreeLetters returns the letters from Z: down to E: that nothing uses. A, B, C and D are
// never handed out (floppies, the rescue VM's OS disk, Azure's temporary disk).
func FreeLetters(used []string) []string {
	in := map[string]bool{}
	for _, u := range used {
		if l := Letter(u); l != "" {
			in[l] = true
		}
	}
	var free []string
	for c := 'Z'; c >= 'E'; c-- {
		l := string(c) + ":"
		if !in[l] {
			free = append(free, l)
		}
	}
	return free
}

// ParseIdentity reads an identity as Identity prints it.
func ParseIdentity(style, id string) (sig uint32, guid string, err error) {
	if style == "GPT" {
		g := normalizeGUID(id)
		if len(g) != 38 {
			return 0, "", fmt.Errorf("GPT GUID %q is malformed", id)
		}
		return 0, g, nil
	}
	v, err := strconv.ParseUint(id, 16, 32)
	if err != nil || v == 0 {
		return 0, "", fmt.Errorf("MBR signature %q is malformed", id)
	}
	return uint32(v), "", nil
}
