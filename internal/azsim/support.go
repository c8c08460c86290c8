package azsim

import (
	"cmp"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport"
)

// SupportService is a service of the support catalog, with its problem classifications.
type SupportService struct {
	Name            string // GUID, the service's resource name
	DisplayName     string
	ResourceTypes   []string
	Classifications []ProblemClassification
}

// ProblemClassification is a problem classification of a support service.
type ProblemClassification struct {
	Name        string // GUID
	DisplayName string
}

// WindowsVMServiceDisplayName is the support service vmrescue files its tickets under.
const WindowsVMServiceDisplayName = "Virtual Machine running Windows"

// SupportCatalog is the simulated service and problem classification catalog. The display names
// follow the Azure portal's "Virtual Machine running Windows" problem types; the GUIDs are the
// simulator's own (derived from the names), so code must look them up, never hard-code them.
var SupportCatalog = func() []SupportService {
	svc := func(display string, types []string, classes ...string) SupportService {
		s := SupportService{Name: stableUUID("service|" + display), DisplayName: display, ResourceTypes: types}
		for _, c := range classes {
			s.Classifications = append(s.Classifications, ProblemClassification{Name: stableUUID("class|" + display + "|" + c), DisplayName: c})
		}
		return s
	}
	vmTypes := []string{"MICROSOFT.CLASSICCOMPUTE/VIRTUALMACHINES", "MICROSOFT.COMPUTE/VIRTUALMACHINES"}
	return []SupportService{
		svc(WindowsVMServiceDisplayName, vmTypes,
			"Cannot start or stop my VM / My VM is not booting",
			"Cannot start or stop my VM / Blue screen or stop error at boot",
			"Cannot connect to my VM / Troubleshoot my RDP connection",
			"VM Performance / High CPU or memory usage",
			"Guest OS issues / Windows Update or patching failures"),
		svc("Virtual Machine running Linux", vmTypes,
			"Cannot start or stop my VM / My VM is not booting",
			"Cannot connect to my VM / Troubleshoot my SSH connection"),
		svc("Billing", nil,
			"Refund request / Refund for an outage"),
	}
}()

// Ticket is a support ticket filed in the simulator.
type Ticket struct {
	Name                    string
	ID                      string
	SupportTicketID         string
	Title                   string
	Description             string
	ServiceID               string
	ProblemClassificationID string
	Severity                string
	ResourceID              string // technicalTicketDetails.resourceId
	Contact                 armsupport.ContactProfile
	ProblemStartTime        time.Time
	Status                  string
	Created                 time.Time
}

func serviceID(name string) string { return "/providers/Microsoft.Support/services/" + name }

func classificationID(svc, name string) string {
	return serviceID(svc) + "/problemClassifications/" + name
}

func serviceARM(s SupportService) *armsupport.Service {
	var types []*string
	for _, t := range s.ResourceTypes {
		types = append(types, to.Ptr(t))
	}
	return &armsupport.Service{ID: to.Ptr(serviceID(s.Name)), Name: to.Ptr(s.Name), Type: to.Ptr("Microsoft.Support/services"),
		Properties: &armsupport.ServiceProperties{DisplayName: to.Ptr(s.DisplayName), ResourceTypes: types}}
}

func classificationARM(s SupportService, c ProblemClassification) *armsupport.ProblemClassification {
	return &armsupport.ProblemClassification{ID: to.Ptr(classificationID(s.Name, c.Name)), Name: to.Ptr(c.Name),
		Type:       to.Ptr("Microsoft.Support/problemClassifications"),
		Properties: &armsupport.ProblemClassificationProperties{DisplayName: to.Ptr(c.DisplayName)}}
}

func lookupService(name string) (SupportService, bool) {
	i := slices.IndexFunc(SupportCatalog, func(s SupportService) bool { return strings.EqualFold(s.Name, name) })
	if i < 0 {
		return SupportService{}, false
	}
	return SupportCatalog[i], true
}

func serviceNotFound(name string) *armError {
	return newARMError(http.StatusNotFound, CodeResourceNotFound, "Service '%s' was not found.", name)
}

var ticketNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$`)

func ticketID(sub, name string) string {
	return fmt.Sprintf("/subscriptions/%s/providers/Microsoft.Support/supportTickets/%s", sub, name)
}

func (st *State) ticketARMLocked(t *Ticket) armsupport.TicketDetails {
	svcName := lastSegment(t.ServiceID)
	svc, _ := lookupService(svcName)
	var pcDisplay string
	for _, c := range svc.Classifications {
		if strings.EqualFold(classificationID(svc.Name, c.Name), t.ProblemClassificationID) {
			pcDisplay = c.DisplayName
		}
	}
	contact := t.Contact
	props := &armsupport.TicketDetailsProperties{
		Title: to.Ptr(t.Title), Description: to.Ptr(t.Description), ServiceID: to.Ptr(t.ServiceID),
		ProblemClassificationID: to.Ptr(t.ProblemClassificationID), Severity: to.Ptr(armsupport.SeverityLevel(t.Severity)),
		ContactDetails: &contact, SupportTicketID: to.Ptr(t.SupportTicketID), Status: to.Ptr(t.Status),
		CreatedDate: to.Ptr(t.Created), ModifiedDate: to.Ptr(t.Created), ServiceDisplayName: to.Ptr(svc.DisplayName),
		ProblemClassificationDisplayName: to.Ptr(pcDisplay), SupportPlanType: to.Ptr("Premier"),
	}
	if t.ResourceID != "" {
		props.TechnicalTicketDetails = &armsupport.TechnicalTicketDetails{ResourceID: to.Ptr(t.ResourceID)}
	}
	if !t.ProblemStartTime.IsZero() {
		props.ProblemStartTime = to.Ptr(t.ProblemStartTime)
	}
	return armsupport.TicketDetails{ID: to.Ptr(t.ID), Name: to.Ptr(t.Name), Type: to.Ptr("Microsoft.Support/supportTickets"), Properties: props}
}

// Tickets lists the filed support tickets, oldest first.
func (st *State) Tickets() []Ticket {
	st.lock()
	defer st.unlock()
	var out []Ticket
	for _, t := range st.tickets {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Ticket) int { return cmp.Compare(a.SupportTicketID, b.SupportTicketID) })
	return out
}

func (st *State) checkTicketName(in armsupport.CheckNameAvailabilityInput) (armsupport.CheckNameAvailabilityOutput, *armError) {
	st.lock()
	defer st.unlock()
	if in.Type == nil || *in.Type != armsupport.TypeMicrosoftSupportSupportTickets {
		return armsupport.CheckNameAvailabilityOutput{}, newARMError(http.StatusBadRequest, CodeInvalidParameter,
			"The type must be '%s'.", armsupport.TypeMicrosoftSupportSupportTickets).withTarget("type")
	}
	name := ptrVal(in.Name)
	if !ticketNameRE.MatchString(name) {
		return armsupport.CheckNameAvailabilityOutput{NameAvailable: to.Ptr(false), Reason: to.Ptr("Invalid"),
			Message: to.Ptr("The name is not valid.")}, nil
	}
	if _, ok := st.tickets[key(name)]; ok {
		return armsupport.CheckNameAvailabilityOutput{NameAvailable: to.Ptr(false), Reason: to.Ptr("AlreadyExists"),
			Message: to.Ptr("Name is already in use.")}, nil
	}
	return armsupport.CheckNameAvailabilityOutput{NameAvailable: to.Ptr(true)}, nil
}

func (st *State) getTicket(name string) (armsupport.TicketDetails, *armError) {
	st.lock()
	defer st.unlock()
	t, ok := st.tickets[key(name)]
	if !ok {
		return armsupport.TicketDetails{}, newARMError(http.StatusNotFound, CodeResourceNotFound,
			"The support ticket '%s' was not found.", name)
	}
	return st.ticketARMLocked(t), nil
}

func (st *State) listTickets() []*armsupport.TicketDetails {
	st.lock()
	defer st.unlock()
	var out []*armsupport.TicketDetails
	ts := make([]*Ticket, 0, len(st.tickets))
	for _, t := range st.tickets {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b *Ticket) int { return cmp.Compare(a.SupportTicketID, b.SupportTicketID) })
	for _, t := range ts {
		a := st.ticketARMLocked(t)
		out = append(out, &a)
	}
	return out
}

// createTicket validates and files a ticket. The name is the caller's idempotency key: a second
// create with a name in use is a 409.
func (st *State) createTicket(op, name string, in armsupport.TicketDetails) (armsupport.TicketDetails, *operation, *armError) {
	st.lock()
	defer st.unlock()
	bad := func(target, format string, args ...any) (armsupport.TicketDetails, *operation, *armError) {
		return armsupport.TicketDetails{}, nil, newARMError(http.StatusBadRequest, CodeInvalidParameter, format, args...).withTarget(target)
	}
	if !ticketNameRE.MatchString(name) {
		return bad("name", "The support ticket name '%s' is not valid.", name)
	}
	id := ticketID(st.sub, name)
	if err := st.busyLocked(id); err != nil {
		return armsupport.TicketDetails{}, nil, err
	}
	if _, ok := st.tickets[key(name)]; ok {
		return armsupport.TicketDetails{}, nil, newARMError(http.StatusConflict, CodeConflict,
			"A support ticket with the name '%s' already exists.", name)
	}
	p := in.Properties
	if p == nil {
		return bad("properties", "Required property 'properties' is missing.")
	}
	svcID := ptrVal(p.ServiceID)
	svc, ok := lookupService(lastSegment(svcID))
	if !ok || !strings.EqualFold(svcID, serviceID(svc.Name)) {
		return bad("properties.serviceId", "The service id '%s' is not valid.", svcID)
	}
	pcID := ptrVal(p.ProblemClassificationID)
	if !slices.ContainsFunc(svc.Classifications, func(c ProblemClassification) bool {
		return strings.EqualFold(classificationID(svc.Name, c.Name), pcID)
	}) {
		return bad("properties.problemClassificationId", "The problem classification id '%s' is not valid for service '%s'.", pcID, svc.DisplayName)
	}
	switch sev := ptrVal(p.Severity); sev {
	case armsupport.SeverityLevelMinimal, armsupport.SeverityLevelModerate, armsupport.SeverityLevelCritical, armsupport.SeverityLevelHighestcriticalimpact:
	default:
		return bad("properties.severity", "The severity '%s' is not valid.", sev)
	}
	if strings.TrimSpace(ptrVal(p.Title)) == "" || len(ptrVal(p.Title)) > 200 {
		return bad("properties.title", "The title must have 1 to 200 characters.")
	}
	if strings.TrimSpace(ptrVal(p.Description)) == "" {
		return bad("properties.description", "Required property 'description' is missing.")
	}
	c := p.ContactDetails
	if c == nil {
		return bad("properties.contactDetails", "Required property 'contactDetails' is missing.")
	}
	for field, v := range map[string]*string{
		"firstName": c.FirstName, "lastName": c.LastName, "primaryEmailAddress": c.PrimaryEmailAddress,
		"preferredTimeZone": c.PreferredTimeZone, "country": c.Country, "preferredSupportLanguage": c.PreferredSupportLanguage,
	} {
		if strings.TrimSpace(ptrVal(v)) == "" {
			return bad("properties.contactDetails."+field, "Required property '%s' is missing.", field)
		}
	}
	if c.PreferredContactMethod == nil {
		return bad("properties.contactDetails.preferredContactMethod", "Required property 'preferredContactMethod' is missing.")
	}
	var resourceID string
	if p.TechnicalTicketDetails != nil && p.TechnicalTicketDetails.ResourceID != nil {
		resourceID = *p.TechnicalTicketDetails.ResourceID
		if _, ok := st.vms[key(resourceID)]; !ok {
			return bad("properties.technicalTicketDetails.resourceId", "The resource '%s' was not found in subscription '%s'.", resourceID, st.sub)
		}
	}
	st.ticketSeq++
	now := st.now()
	t := &Ticket{
		Name: name, ID: id, SupportTicketID: fmt.Sprintf("2%s%09d", now.UTC().Format("060102"), st.ticketSeq),
		Title: *p.Title, Description: *p.Description, ServiceID: serviceID(svc.Name), ProblemClassificationID: pcID,
		Severity: string(*p.Severity), ResourceID: resourceID, Contact: *c, Status: "Open", Created: now,
	}
	if p.ProblemStartTime != nil {
		t.ProblemStartTime = *p.ProblemStartTime
	}
	st.tickets[key(name)] = t
	o := st.beginLocked(op, id, st.timing.of(op, LatencyWrite), nil)
	return st.ticketARMLocked(t), o, nil
}
