// Package incident holds the vocabulary shared by every part of vmrescue: incident ids, the stages
// and their queues, the stage message that travels between them, and the names of the Azure
// resources an incident makes. It does no I/O.
package incident

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// MessageVersion is the only stage message version this build understands.
const MessageVersion = 1

// Stage names a pipeline step. Its value is also the name of the Service Bus queue that triggers it.
type Stage string

// The stages in pipeline order, then the dead-letter sink.
const (
	StageSnapshot       Stage = "snapshot"
	StageRescueAttach   Stage = "rescue-attach"
	StageOfflinePatch   Stage = "offline-patch"
	StageReattachReboot Stage = "reattach-reboot"
	StageHarvestDump    Stage = "harvest-dump"
	StageSupportTicket  Stage = "support-ticket"
	StageFailed         Stage = "failed"
)

// Stages lists the six remediation stages in order.
var Stages = []Stage{
	StageSnapshot, StageRescueAttach, StageOfflinePatch,
	StageReattachReboot, StageHarvestDump, StageSupportTicket,
}

// Queues lists every Service Bus queue of the contract: the six stages and "failed".
var Queues = append(append([]Stage(nil), Stages...), StageFailed)

// Function is the Azure Functions name of the function that consumes the stage's queue.
func (s Stage) Function() string {
	switch s {
	case StageSnapshot:
		return "Snapshot"
	case StageRescueAttach:
		return "RescueAttach"
	case StageOfflinePatch:
		return "OfflinePatch"
	case StageReattachReboot:
		return "ReattachReboot"
	case StageHarvestDump:
		return "HarvestDump"
	case StageSupportTicket:
		return "SupportTicket"
	case StageFailed:
		return "Failed"
	}
	return ""
}

// Queue is the name of the Service Bus queue that triggers the stage.
func (s Stage) Queue() string { return string(s) }

// Valid reports whether s is one of the contract's queues.
func (s Stage) Valid() bool { return s.Function() != "" }

// Next is the stage that normally follows s, or "" after the last one.
func (s Stage) Next() Stage {
	for i, st := range Stages {
		if st == s && i+1 < len(Stages) {
			return Stages[i+1]
		}
	}
	return ""
}

// Trigger kinds.
const (
	TriggerAlert  = "alert"
	TriggerManual = "manual"
)

// Trigger says what opened the incident.
type Trigger struct {
	Kind       string `json:"kind"`                 // alert or manual
	EventID    string `json:"eventId,omitempty"`    // the Resource Health event id, for alerts
	EventType  string `json:"eventType,omitempty"`  // the Event Grid event type, for alerts
	Annotation string `json:"annotation,omitempty"` // annotationName or availabilityState
	Reason     string `json:"reason,omitempty"`     // free text, for manual requests
}

// BugCheck is a stop code and its four parameters as read from a dump header.
type BugCheck struct {
	Code       uint32    `json:"code"`
	Name       string    `json:"name,omitempty"`
	Parameters [4]uint64 `json:"parameters"`
}

// Artifacts is what earlier stages made. Every field is optional; a stage adds what it made.
type Artifacts struct {
	OriginalOSDiskID string    `json:"originalOsDiskId,omitempty"`
	SnapshotID       string    `json:"snapshotId,omitempty"`
	RescueDiskID     string    `json:"rescueDiskId,omitempty"`
	RescueVMID       string    `json:"rescueVmId,omitempty"`
	LUN              *int32    `json:"lun,omitempty"`
	PatchedOSDiskID  string    `json:"patchedOsDiskId,omitempty"`
	Swapped          bool      `json:"swapped,omitempty"`
	HarvestSnapID    string    `json:"harvestSnapshotId,omitempty"`
	HarvestDiskID    string    `json:"harvestDiskId,omitempty"`
	MemoryGB         float64   `json:"memoryGB,omitempty"`
	DumpLocation     string    `json:"dumpLocation,omitempty"`
	DumpSize         int64     `json:"dumpSize,omitempty"`
	DumpSHA256       string    `json:"dumpSha256,omitempty"`
	BugCheck         *BugCheck `json:"bugCheck,omitempty"`
	TicketID         string    `json:"ticketId,omitempty"`
	Outcome          string    `json:"outcome,omitempty"`
	// Location and Zone are the VM's region and zone ("" when regional), read by Snapshot so that
	// later stages place disks without reading the VM again.
	Location string `json:"location,omitempty"`
	Zone     string `json:"zone,omitempty"`
	// BootDiagnostics is where the boot screenshot and serial log were stored (container/prefix).
	BootDiagnostics string `json:"bootDiagnostics,omitempty"`
}

// Message is the body of every stage message (contract: version, incidentId, vmResourceId, stage,
// trigger, dryRun, artifacts).
type Message struct {
	Version      int       `json:"version"`
	IncidentID   string    `json:"incidentId"`
	VMResourceID string    `json:"vmResourceId"`
	Stage        Stage     `json:"stage"`
	Trigger      Trigger   `json:"trigger"`
	DryRun       bool      `json:"dryRun"`
	Artifacts    Artifacts `json:"artifacts"`
}

// MessageID is the Service Bus MessageId of a stage message: derived from the incident and the
// stage so that duplicate detection absorbs a resend. attempt > 0 marks a deliberate re-run of the
// same stage (a wait for capacity), which must not be absorbed.
func MessageID(incidentID string, stage Stage, attempt int) string {
	if attempt > 0 {
		return fmt.Sprintf("%s:%s:%d", incidentID, stage, attempt)
	}
	return incidentID + ":" + string(stage)
}

var idPattern = regexp.MustCompile(`^inc-[0-9]{8}-[0-9]{6}-[0-9a-f]{4,12}$`)

// NewID makes an incident id such as inc-20261120-031407-7f3c: sortable by opening time, short
// enough to fit in every Azure resource name derived from it.
func NewID(now time.Time) string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return "inc-" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// OpenedAt is the opening time an incident id carries (to the second); ok is false for an id of
// another shape.
func OpenedAt(id string) (time.Time, bool) {
	if !ValidID(id) {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102-150405", id[len("inc-"):len("inc-20060102-150405")])
	return t, err == nil
}

// ValidID reports whether id has the shape NewID makes. Ids reach blob names, resource names and
// URLs, so nothing else is accepted.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// VMKey is the canonical key of a VM: the SHA-256 of its lower-cased resource id, in hex. Resource
// ids compare case-insensitively and may hold characters that blob names and index tags refuse, so
// locks and tags use the key, never the raw id.
func VMKey(vmResourceID string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(vmResourceID)))
	return hex.EncodeToString(sum[:])
}

// Resource names derived from the incident, so that a retried stage finds its own work.
// All are within the 80-character limit of managed disk and snapshot names.

// BackupSnapshotName is the first snapshot of the original OS disk, kept until retention ends.
func BackupSnapshotName(id string) string { return "vmrescue-" + id + "-backup" }

// RescueDiskName is the copy of the OS disk that is attached to the rescue VM and patched.
func RescueDiskName(id string) string { return "vmrescue-" + id + "-osdisk" }

// HarvestSnapshotName is the snapshot taken after the crash reproduced, to read the dump.
func HarvestSnapshotName(id string) string { return "vmrescue-" + id + "-harvest" }

// HarvestDiskName is the temporary disk made from the harvest snapshot.
func HarvestDiskName(id string) string { return "vmrescue-" + id + "-harvestdisk" }

// RunCommandName is the managed Run Command on the rescue VM for a given step (patch, harvest).
func RunCommandName(id, step string) string { return "vmrescue-" + id + "-" + step }

// TicketName is the support ticket's resource name.
func TicketName(id string) string { return "vmrescue-" + id }

// Tags put on every resource vmrescue makes.
const (
	TagIncident = "vmrescue-incident"
	TagRole     = "vmrescue-role"
	TagSource   = "vmrescue-source"
	// TagOriginalOSDisk is put on the VM (not on the disk) when its OS disk is swapped.
	TagOriginalOSDisk = "vmrescue-original-osdisk"
	// TagOptOut on a VM makes vmrescue refuse it. The name is configurable; this is the default.
	TagOptOut = "vmrescue-optout"
)

// Roles of the resources vmrescue makes (the value of TagRole).
const (
	RoleBackupSnapshot  = "backup-snapshot"
	RoleRescueDisk      = "rescue-disk"
	RoleHarvestSnapshot = "harvest-snapshot"
	RoleHarvestDisk     = "harvest-disk"
	// RoleAgentRun tags the managed Run Commands that run the rescue agent on a rescue VM.
	RoleAgentRun = "agent-run"
)

// Tags returns the tags for a resource made for an incident.
func Tags(id, role, sourceID string) map[string]*string {
	return map[string]*string{
		TagIncident: &id,
		TagRole:     &role,
		TagSource:   &sourceID,
	}
}

// Audit events (contract).
const (
	EventOpened     = "opened"
	EventStarted    = "started"
	EventSucceeded  = "succeeded"
	EventSkipped    = "skipped"
	EventRetrying   = "retrying"
	EventFailed     = "failed"
	EventRejected   = "rejected"
	EventClosed     = "closed"
	EventRolledBack = "rolled-back"
	// EventSignal records a further alert for a VM that already has an active incident.
	EventSignal = "signal"
)

// Incident states, kept in the audit blob's "state" index tag.
const (
	StateActive   = "active"
	StateClosed   = "closed"
	StateFailed   = "failed"
	StateRejected = "rejected"
)

// Outcomes of a closed incident.
const (
	OutcomeTicketed   = "ticketed"
	OutcomeRecovered  = "recovered"
	OutcomeRolledBack = "rolled-back"
	OutcomeRefused    = "refused"
	// OutcomeHarvested: the dump was harvested and support tickets are turned off.
	OutcomeHarvested = "harvested"
	// OutcomeDryRun: a dry run walked every stage and made nothing.
	OutcomeDryRun = "dry-run"
)
