package pipeline

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport"
	"github.com/vmrescue/vmrescue/internal/armclient"
	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/bugcheck"
	"github.com/vmrescue/vmrescue/internal/fault"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/vms"
)

// maxTitle is the support API's limit on a ticket title; maxDescription keeps the description
// within what the portal shows.
const (
	maxTitle       = 200
	maxDescription = 5000
)

// supportTicket is the SupportTicket stage: open the ticket (its name derives from the incident,
// so a retry finds its own), leave the VM deallocated unless configured otherwise, and close the
// incident.
func (p *Pipeline) supportTicket(ctx context.Context, r *run) error {
	a := r.msg.Artifacts
	if !p.Config.Support.Enabled {
		if err := p.afterTicket(ctx, r); err != nil {
			return err
		}
		outcome := incident.OutcomeHarvested
		if r.dry {
			outcome = incident.OutcomeDryRun
		}
		return r.close(ctx, outcome, "support tickets are turned off")
	}
	cl, err := p.Azure.Classifier.Classify(ctx)
	if err != nil {
		return fmt.Errorf("problem classification: %w", err)
	}
	az, err := p.in(r.vm.SubscriptionID)
	if err != nil {
		return err
	}
	name := incident.TicketName(r.msg.IncidentID)
	tid := ticketID(r.vm.SubscriptionID, r.msg.IncidentID)

	// A POST: ARM counts it against the write budget.
	if !r.dry {
		if err := p.paceWrite(ctx, r.vm.SubscriptionID, "Tickets.CheckNameAvailability", r.stage); err != nil {
			return err
		}
	}
	avail, err := armclient.Call(ctx, callTimeout, func(ctx context.Context) (armsupport.TicketsClientCheckNameAvailabilityResponse, error) {
		return az.Tickets.CheckNameAvailability(ctx, armsupport.CheckNameAvailabilityInput{
			Name: &name, Type: ptr(armsupport.TypeMicrosoftSupportSupportTickets),
		}, nil)
	})
	if err != nil {
		return fmt.Errorf("check ticket name: %w", err)
	}
	if !val(avail.NameAvailable) {
		if got, err := p.findTicket(ctx, az, name); err != nil {
			return err
		} else if got != "" {
			tid = got
			if err := r.found(ctx, "Tickets.BeginCreate", tid); err != nil {
				return err
			}
		} else {
			return fault.Terminal(fmt.Errorf("ticket name %s is not available: %s", name, val(avail.Message)))
		}
	} else {
		body := p.ticketDetails(r, cl.ServiceID, cl.ClassificationID, a)
		var made armsupport.TicketsClientCreateResponse
		err := r.write(ctx, "Tickets.BeginCreate", tid, func(ctx context.Context) error {
			var err error
			made, err = armclientLRO(ctx, func(ctx context.Context) (*runtime.Poller[armsupport.TicketsClientCreateResponse], error) {
				return az.Tickets.BeginCreate(ctx, name, body, nil)
			})
			return err
		})
		if armerr.IsConflict(err) {
			if got, gerr := p.findTicket(ctx, az, name); gerr == nil && got != "" {
				tid, err = got, nil
			}
		}
		if err != nil {
			return fmt.Errorf("create ticket: %w", err)
		}
		if made.ID != nil {
			tid = *made.ID
		}
	}
	r.made.TicketID = tid
	if err := p.afterTicket(ctx, r); err != nil {
		return err
	}
	outcome := incident.OutcomeTicketed
	if r.dry {
		outcome = incident.OutcomeDryRun
	}
	return r.close(ctx, outcome, "support ticket "+name+" is open")
}

// findTicket reads the incident's ticket; "" when it does not exist.
func (p *Pipeline) findTicket(ctx context.Context, az *Azure, name string) (string, error) {
	resp, err := armclient.Call(ctx, callTimeout, func(ctx context.Context) (armsupport.TicketsClientGetResponse, error) {
		return az.Tickets.Get(ctx, name, nil)
	})
	if armerr.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read ticket %s: %w", name, err)
	}
	return val(resp.ID), nil
}

// afterTicket starts the VM again when configured to; by default it stays deallocated.
func (p *Pipeline) afterTicket(ctx context.Context, r *run) error {
	if p.Config.LeaveDeallocated {
		return nil
	}
	vm, err := p.getVM(ctx, r.vm, true)
	if err != nil {
		return fmt.Errorf("read VM: %w", err)
	}
	if vm.Power == vms.PowerRunning || vm.Power == vms.PowerStarting {
		return nil
	}
	return r.start(ctx, r.vm)
}

// ticketDetails builds the ticket. Its text holds values read from Azure and the trail; it is
// data for people, never script text.
func (p *Pipeline) ticketDetails(r *run, serviceID, classificationID string, a incident.Artifacts) armsupport.TicketDetails {
	s := p.Config.Support
	opened := r.began
	if len(r.recs) > 0 {
		opened = r.recs[0].Time
	}
	return armsupport.TicketDetails{Properties: &armsupport.TicketDetailsProperties{
		Title:                   ptr(TicketTitle(r.vm.Name, a.BugCheck)),
		Description:             ptr(TicketDescription(r.msg, a, r.recs, p.Config.DumpsContainer, p.Blobs.URL, p.now())),
		ServiceID:               &serviceID,
		ProblemClassificationID: &classificationID,
		Severity:                ptr(armsupport.SeverityLevel(s.Severity)),
		ProblemStartTime:        &opened,
		TechnicalTicketDetails:  &armsupport.TechnicalTicketDetails{ResourceID: ptr(r.msg.VMResourceID)},
		ContactDetails: &armsupport.ContactProfile{
			FirstName: ptr(s.FirstName), LastName: ptr(s.LastName), PrimaryEmailAddress: ptr(s.Email),
			PreferredContactMethod: ptr(armsupport.PreferredContactMethodEmail), PreferredTimeZone: ptr(s.TimeZone),
			Country: ptr(s.Country), PreferredSupportLanguage: ptr(s.Language),
		},
	}}
}

// TicketTitle is the ticket's title: the VM and the stop code with its name.
func TicketTitle(vmName string, bc *incident.BugCheck) string {
	var t string
	if bc != nil {
		t = fmt.Sprintf("%s: Windows stop error %s at boot", vmName, bugcheck.Describe(bc.Code))
	} else {
		t = fmt.Sprintf("%s: Windows stops at boot (no crash dump captured)", vmName)
	}
	return cutUTF8(t, maxTitle)
}

// cutUTF8 returns the longest prefix of s of at most n bytes that does not split a UTF-8
// character (n bytes is also at most n characters).
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// TicketDescription is the ticket's description: the incident, its times, the steps done, and
// where the dump is with its size and SHA-256.
func TicketDescription(msg incident.Message, a incident.Artifacts, recs []audit.Record, dumps string, blobURL func(container, blob string) string, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "vmrescue incident %s for VM %s.\n", msg.IncidentID, msg.VMResourceID)
	fmt.Fprintf(&b, "The VM stops with a blue screen at boot. vmrescue followed Azure's procedure for it (backup snapshot, offline patch on a rescue VM to enable crash dumps and the serial console, reboot to reproduce, dump harvest) without changing the original OS disk.\n\n")
	if len(recs) > 0 {
		fmt.Fprintf(&b, "Opened: %s\n", recs[0].Time.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "Ticket opened: %s\n", now.UTC().Format(time.RFC3339))
	if msg.Trigger.Kind != "" {
		fmt.Fprintf(&b, "Trigger: %s %s\n", msg.Trigger.Kind, strings.TrimSpace(msg.Trigger.Annotation+" "+msg.Trigger.Reason))
	}
	if bc := a.BugCheck; bc != nil {
		fmt.Fprintf(&b, "\nStop code: %s", bugcheck.Hex(bc.Code))
		if n := bugcheck.Name(bc.Code); n != "" {
			fmt.Fprintf(&b, " %s", n)
		}
		fmt.Fprintf(&b, "\nParameters: 0x%X 0x%X 0x%X 0x%X\n", bc.Parameters[0], bc.Parameters[1], bc.Parameters[2], bc.Parameters[3])
	}
	if a.DumpLocation != "" {
		container, blob, _ := strings.Cut(a.DumpLocation, "/")
		url := a.DumpLocation
		if blobURL != nil {
			url = blobURL(container, blob)
		}
		fmt.Fprintf(&b, "\nCrash dump: %s\nSize: %d bytes\nSHA-256: %s\n", url, a.DumpSize, a.DumpSHA256)
		fmt.Fprintf(&b, "Manifest: %s\n", manifestURL(blobURL, dumps, msg.IncidentID))
	} else {
		fmt.Fprintf(&b, "\nNo crash dump was written after the patch and reboot.\n")
	}
	if a.BootDiagnostics != "" {
		fmt.Fprintf(&b, "Boot screenshot and serial log: %s\n", a.BootDiagnostics)
	}
	if a.OriginalOSDiskID != "" {
		fmt.Fprintf(&b, "Original OS disk (unchanged): %s\n", a.OriginalOSDiskID)
	}
	if a.SnapshotID != "" {
		fmt.Fprintf(&b, "Backup snapshot: %s\n", a.SnapshotID)
	}
	if steps := stepsDone(recs); len(steps) > 0 {
		fmt.Fprintf(&b, "\nSteps done:\n")
		for _, s := range steps {
			fmt.Fprintf(&b, "- %s\n", s)
		}
	}
	if d := b.String(); len(d) > maxDescription {
		return clip(d, maxDescription-len("…"))
	}
	return b.String()
}

func manifestURL(blobURL func(string, string) string, dumps, id string) string {
	if blobURL == nil {
		return dumps + "/" + id + "/manifest.json"
	}
	return blobURL(dumps, id+"/manifest.json")
}

// stepsDone lists the completed stages and the ARM writes made, with their times. A write names
// its resource by name only: full ids (above for the VM, its disk and snapshot) made the list of
// an incident that rebooted and harvested overflow maxDescription and lose its last steps.
func stepsDone(recs []audit.Record) []string {
	var out []string
	for _, rec := range recs {
		if rec.Event != incident.EventSucceeded {
			continue
		}
		d := detailOf(rec)
		switch {
		case d.Completed:
			out = append(out, fmt.Sprintf("%s %s completed", rec.Time.UTC().Format(time.RFC3339), rec.Stage))
		case d.Operation != "":
			out = append(out, fmt.Sprintf("%s %s %s (%d ms)", rec.Time.UTC().Format(time.RFC3339), d.Operation, resourceName(d.ResourceID), val(d.DurationMS)))
		}
	}
	return out
}

// resourceName is the last segment of a resource id.
func resourceName(id string) string { return id[strings.LastIndexByte(id, '/')+1:] }
