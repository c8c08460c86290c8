package bench

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/demo"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// newSubscription is a fresh subscription id for each run's fleet, so that runs sharing one
// Azurite (the tests) never see each other's incidents.
func newSubscription() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	x := hex.EncodeToString(b[:])
	return x[0:8] + "-" + x[8:12] + "-4" + x[13:16] + "-8" + x[17:20] + "-" + x[20:32]
}

// Rescue sizes: rescueSize has MaxDataDiskCount 8, the capacity scenario's limit; wideRescue has
// 32 and keeps LUN capacity out of the way of scenarios that measure something else.
const (
	rescueSize = "Standard_D4s_v5"
	wideRescue = "Standard_D16s_v5"
)

// makeFleet is vms crashing Windows VMs (alternating Gen2 and Gen1, some with a dump already on
// disk) and rescue VMs of the given size, all in one region and without zones.
func makeFleet(vms, rescues int, size string) (*azsim.Fleet, error) {
	f := &azsim.Fleet{SubscriptionID: newSubscription(), Location: "westeurope"}
	for i := range rescues {
		f.RescueVMs = append(f.RescueVMs, azsim.RescueVMSpec{Name: fmt.Sprintf("rescue-%02d", i+1),
			ResourceGroup: "rg-vmrescue", Size: size, HyperVGeneration: "V2"})
	}
	codes := []azsim.BugCheckCode{0x7E, 0xD1, 0x3B, 0x50, 0x1E}
	for i := range vms {
		gen := "V2"
		if i%4 == 3 {
			gen = "V1"
		}
		f.VMs = append(f.VMs, azsim.VMSpec{
			Name: fmt.Sprintf("vm-%05d", i+1), ResourceGroup: fmt.Sprintf("rg-app-%02d", i%10),
			Size: "Standard_D2s_v5", OSType: "Windows", HyperVGeneration: gen,
			OSDiskSizeGB: 127, OSDiskFreeGB: 40, BugCheck: codes[i%len(codes)],
			DumpPresent: i%7 == 5, Behaviour: azsim.BehaviourCrashOnBoot,
		})
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("bench fleet: %w", err)
	}
	return f, nil
}

// Accounting is what all incidents of a run left behind.
type Accounting struct {
	Incidents   int            // incidents opened (rejected alerts not counted)
	ByState     map[string]int // incidents by final state
	PerVM       map[string]int // incidents per VM (lower-cased id)
	Tickets     int
	DupTickets  []string // VMs with more than one support ticket
	ChainErrors []string
	// Orphans are tagged resources that are neither a retained backup snapshot nor the patched
	// disk a VM boots from.
	Orphans          []string
	Retained         int
	InUse            int
	OriginalsChanged []string
	Violations       []string
	// Unfinished are incidents still active.
	Unfinished []string
	// FailedNotRolledBack are failed incidents whose VM does not boot from its original OS disk
	// again (or from the patched disk).
	FailedNotRolledBack []string
	// LastClosed is the time of the latest record that ended an incident: closed, or rolled back.
	LastClosed time.Time
}

// account reads every incident's audit trail and the simulator's state.
func account(ctx context.Context, env *demo.Env) (Accounting, error) {
	a := Accounting{ByState: map[string]int{}, PerVM: map[string]int{}}
	blobs, err := azblob.NewClientFromConnectionString(env.Stack.StorageConnectionString, nil)
	if err != nil {
		return a, err
	}
	trail := audit.New(blobs, audit.DefaultContainer)
	ids, err := trail.List(ctx, "")
	if err != nil {
		return a, err
	}
	st := env.Stack.Sim.State()
	mine := "/subscriptions/" + strings.ToLower(env.Fleet.SubscriptionID) + "/"
	for _, id := range ids {
		state, err := trail.State(ctx, id)
		if err != nil {
			return a, fmt.Errorf("state of %s: %w", id, err)
		}
		if state == incident.StateRejected {
			continue
		}
		recs, err := trail.Read(ctx, id)
		if errors.Is(err, audit.ErrNotFound) {
			a.ChainErrors = append(a.ChainErrors, id+": blob without a record")
			continue
		}
		if err != nil {
			return a, fmt.Errorf("read %s: %w", id, err)
		}
		if len(recs) == 0 || !strings.HasPrefix(strings.ToLower(recs[0].VMResourceID), mine) {
			continue // another run's incident in a shared Azurite
		}
		a.Incidents++
		a.ByState[state]++
		if len(recs) > 0 {
			a.PerVM[strings.ToLower(recs[0].VMResourceID)]++
		}
		if _, err := audit.VerifyIncident(ctx, trail, id); err != nil {
			a.ChainErrors = append(a.ChainErrors, fmt.Sprintf("%s: %v", id, err))
		}
		for _, r := range recs {
			if (r.Event == incident.EventClosed || r.Event == incident.EventRolledBack) && r.Time.After(a.LastClosed) {
				a.LastClosed = r.Time
			}
		}
		switch state {
		case incident.StateActive:
			a.Unfinished = append(a.Unfinished, id)
		case incident.StateFailed:
			if len(recs) > 0 {
				if vm, ok := st.VM(recs[0].VMResourceID); ok {
					d, _ := st.Disk(vm.OSDiskID)
					if !d.Original && d.Tags[incident.TagIncident] != id {
						a.FailedNotRolledBack = append(a.FailedNotRolledBack, id)
					}
				}
			}
		}
	}
	perVMTickets := map[string]int{}
	for _, t := range st.Tickets() {
		a.Tickets++
		k := strings.ToLower(t.ResourceID)
		perVMTickets[k]++
		if perVMTickets[k] == 2 {
			a.DupTickets = append(a.DupTickets, t.ResourceID)
		}
	}
	for _, id := range st.Tagged(incident.TagIncident) {
		var tags map[string]string
		usedBy := ""
		if d, ok := st.Disk(id); ok {
			tags, usedBy = d.Tags, d.ManagedBy
		} else if s, ok := st.Snapshot(id); ok {
			tags = s.Tags
		} else if vm, ok := st.VM(id); ok {
			tags = vm.Tags
			if vm.Rescue {
				continue // a rescue VM carries vmrescue tags of its own
			}
		}
		role := tags[incident.TagRole]
		switch {
		case role == incident.RoleBackupSnapshot:
			a.Retained++
		case role == incident.RoleRescueDisk && usedBy != "" && isOSDiskOf(st, usedBy, id):
			a.InUse++
		default:
			a.Orphans = append(a.Orphans, fmt.Sprintf("%s (role %q, incident %s, managedBy %q)", id, role, tags[incident.TagIncident], usedBy))
		}
	}
	a.OriginalsChanged = st.ChangedOriginalDisks()
	for _, v := range st.Violations() {
		a.Violations = append(a.Violations, fmt.Sprint(v))
	}
	return a, nil
}

func isOSDiskOf(st *azsim.State, vmID, diskID string) bool {
	vm, ok := st.VM(vmID)
	return ok && strings.EqualFold(vm.OSDiskID, diskID)
}

// checkSafety adds the invariants every scenario holds to r.
func (a Accounting) checkSafety(r *Result) {
	r.check("every audit chain verifies", len(a.ChainErrors) == 0, listDetail(a.ChainErrors, fmt.Sprintf("%d chains", a.Incidents)))
	r.check("no orphaned resources", len(a.Orphans) == 0,
		listDetail(a.Orphans, fmt.Sprintf("%d retained backups, %d patched disks in use, nothing else", a.Retained, a.InUse)))
	r.check("original OS disks unchanged", len(a.OriginalsChanged) == 0, listDetail(a.OriginalsChanged, "ChangedOriginalDisks() empty"))
	r.check("no safety violations", len(a.Violations) == 0, listDetail(a.Violations, "Violations() empty"))
	r.check("no incident left active", len(a.Unfinished) == 0, listDetail(a.Unfinished, "none"))
	r.check("no duplicate ticket", len(a.DupTickets) == 0, listDetail(a.DupTickets, fmt.Sprintf("%d tickets, at most one per VM", a.Tickets)))
	r.check("failed incidents rolled back", len(a.FailedNotRolledBack) == 0, listDetail(a.FailedNotRolledBack, fmt.Sprintf("%d failed", a.ByState[incident.StateFailed])))
}

func listDetail(items []string, ok string) string {
	if len(items) == 0 {
		return ok
	}
	const show = 5
	if len(items) > show {
		return fmt.Sprintf("%d: %s, ...", len(items), strings.Join(items[:show], "; "))
	}
	return fmt.Sprintf("%d: %s", len(items), strings.Join(items, "; "))
}
