package azsim_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport"
	"github.com/vmrescue/vmrescue/internal/azsim"
)

// windowsVMTicket finds the service and a classification the way the SupportTicket stage does,
// and returns a ticket for the web VM.
func windowsVMTicket(t *testing.T, sim *azsim.Sim, c clients) armsupport.TicketDetails {
	t.Helper()
	ctx := ctxT(t)
	var svc *armsupport.Service
	pager := c.services.NewListPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page.Value {
			if *s.Properties.DisplayName == azsim.WindowsVMServiceDisplayName {
				svc = s
			}
		}
	}
	if svc == nil {
		t.Fatal("no Windows VM service")
	}
	var pcID string
	pcs := c.classes.NewListPager(*svc.Name, nil)
	for pcs.More() {
		page, err := pcs.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, pc := range page.Value {
			if strings.Contains(*pc.Properties.DisplayName, "Blue screen") {
				pcID = *pc.ID
			}
		}
	}
	if pcID == "" {
		t.Fatal("no blue screen classification")
	}
	return armsupport.TicketDetails{Properties: &armsupport.TicketDetailsProperties{
		ServiceID: svc.ID, ProblemClassificationID: to.Ptr(pcID), Severity: to.Ptr(armsupport.SeverityLevelModerate),
		Title:       to.Ptr("app-web-01: stop 0x0000007E SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"),
		Description: to.Ptr("incident inc-20261120-031407-7f3c; dump at dumps/inc-20261120-031407-7f3c/MEMORY.DMP"),
		ContactDetails: &armsupport.ContactProfile{
			FirstName: to.Ptr("Ops"), LastName: to.Ptr("Team"), PrimaryEmailAddress: to.Ptr("ops@example.com"),
			PreferredContactMethod: to.Ptr(armsupport.PreferredContactMethodEmail), PreferredTimeZone: to.Ptr("UTC"),
			Country: to.Ptr("USA"), PreferredSupportLanguage: to.Ptr("en-US"),
		},
		TechnicalTicketDetails: &armsupport.TechnicalTicketDetails{ResourceID: to.Ptr(sim.Fleet().VMID(webVM))},
	}}
}

func TestSupportTicketLifecycle(t *testing.T) {
	t.Parallel()
	sim, c := newSim(t, azsim.Options{})
	ctx := ctxT(t)
	const name = "vmrescue-inc-20261120-031407-7f3c"
	avail := func() bool {
		r, err := c.tickets.CheckNameAvailability(ctx, armsupport.CheckNameAvailabilityInput{Name: to.Ptr(name),
			Type: to.Ptr(armsupport.TypeMicrosoftSupportSupportTickets)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return *r.NameAvailable
	}
	if !avail() {
		t.Fatal("name taken before any ticket")
	}
	body := windowsVMTicket(t, sim, c)
	p, err := c.tickets.BeginCreate(ctx, name, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	created, err := p.PollUntilDone(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id := *created.Properties.SupportTicketID; len(id) != 16 {
		t.Errorf("support ticket id %q is not 16 digits", id)
	}
	if avail() {
		t.Error("name still available after create")
	}
	got, err := c.tickets.Get(ctx, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Properties.Status != "Open" || *got.Properties.ServiceDisplayName != azsim.WindowsVMServiceDisplayName ||
		!strings.EqualFold(*got.Properties.TechnicalTicketDetails.ResourceID, sim.Fleet().VMID(webVM)) {
		t.Errorf("ticket: %+v", got.Properties)
	}
	_, err = c.tickets.BeginCreate(ctx, name, body, nil)
	wantCode(t, err, azsim.CodeConflict, http.StatusConflict)
	if n := len(sim.State().Tickets()); n != 1 {
		t.Errorf("%d tickets, want 1", n)
	}
}

func TestSupportTicketValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		mod  func(*armsupport.TicketDetails)
	}{
		{"classification of another service", func(d *armsupport.TicketDetails) {
			d.Properties.ProblemClassificationID = to.Ptr(*d.Properties.ServiceID + "/problemClassifications/00000000-0000-0000-0000-000000000000")
		}},
		{"unknown service", func(d *armsupport.TicketDetails) {
			d.Properties.ServiceID = to.Ptr("/providers/Microsoft.Support/services/nope")
		}},
		{"bad severity", func(d *armsupport.TicketDetails) { d.Properties.Severity = to.Ptr(armsupport.SeverityLevel("urgent")) }},
		{"no contact email", func(d *armsupport.TicketDetails) { d.Properties.ContactDetails.PrimaryEmailAddress = nil }},
		{"unknown resource", func(d *armsupport.TicketDetails) {
			d.Properties.TechnicalTicketDetails.ResourceID = to.Ptr(sim0.Fleet().VMID(webVM) + "x")
		}},
		{"empty title", func(d *armsupport.TicketDetails) { d.Properties.Title = to.Ptr(" ") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, c := newSim(t, azsim.Options{})
			body := windowsVMTicket(t, sim, c)
			tc.mod(&body)
			_, err := c.tickets.BeginCreate(ctxT(t), "t1", body, nil)
			wantCode(t, err, azsim.CodeInvalidParameter, http.StatusBadRequest)
			if n := len(sim.State().Tickets()); n != 0 {
				t.Errorf("%d tickets filed by a refused request", n)
			}
		})
	}
}

var sim0 = func() *azsim.Sim {
	s, err := azsim.New(nil, azsim.Options{})
	if err != nil {
		panic(err)
	}
	return s
}()
