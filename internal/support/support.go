// Package support opens Azure support tickets through armsupport: the narrow client interfaces
// of the calls vmrescue makes, and the problem classification lookup, cached and overridable.
package support

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/support/armsupport"
)

// TicketsAPI is the part of *armsupport.TicketsClient vmrescue calls.
type TicketsAPI interface {
	CheckNameAvailability(ctx context.Context, checkNameAvailabilityInput armsupport.CheckNameAvailabilityInput, options *armsupport.TicketsClientCheckNameAvailabilityOptions) (armsupport.TicketsClientCheckNameAvailabilityResponse, error)
	BeginCreate(ctx context.Context, supportTicketName string, createSupportTicketParameters armsupport.TicketDetails, options *armsupport.TicketsClientBeginCreateOptions) (*runtime.Poller[armsupport.TicketsClientCreateResponse], error)
	Get(ctx context.Context, supportTicketName string, options *armsupport.TicketsClientGetOptions) (armsupport.TicketsClientGetResponse, error)
}

// ServicesAPI is the part of *armsupport.ServicesClient vmrescue calls.
type ServicesAPI interface {
	NewListPager(options *armsupport.ServicesClientListOptions) *runtime.Pager[armsupport.ServicesClientListResponse]
}

// ClassificationsAPI is the part of *armsupport.ProblemClassificationsClient vmrescue calls.
type ClassificationsAPI interface {
	NewListPager(serviceName string, options *armsupport.ProblemClassificationsClientListOptions) *runtime.Pager[armsupport.ProblemClassificationsClientListResponse]
}

var (
	_ TicketsAPI         = (*armsupport.TicketsClient)(nil)
	_ ServicesAPI        = (*armsupport.ServicesClient)(nil)
	_ ClassificationsAPI = (*armsupport.ProblemClassificationsClient)(nil)
)

// ServiceDisplayName is the support service of a Windows VM that does not boot.
const ServiceDisplayName = "Virtual Machine running Windows"

// lookupTimeout bounds the classification lookup, all pages.
const lookupTimeout = time.Minute

// Classification is the service and problem classification of a ticket.
type Classification struct {
	ServiceID        string // /providers/Microsoft.Support/services/{service}
	ClassificationID string // {ServiceID}/problemClassifications/{classification}
	DisplayName      string
}

// preferences rank problem classifications of the service by their display name: the first
// fragment found wins. A Windows VM that stops at boot is "not booting" with a stop error.
var preferences = []string{"stop error", "blue screen", "bugcheck", "not booting", "boot"}

// ErrNoClassification is wrapped when the service or a fitting classification cannot be found.
var ErrNoClassification = errors.New("no problem classification for the support ticket")

// Classifier finds, once per process, the problem classification of vmrescue's tickets.
type Classifier struct {
	Services        ServicesAPI
	Classifications ClassificationsAPI
	// Override, when set, is a problem classification id used as is (config).
	Override string

	mu     sync.Mutex
	cached *Classification
}

// Classify returns the classification: the override, or the one looked up (and cached).
func (c *Classifier) Classify(ctx context.Context) (Classification, error) {
	if c.Override != "" {
		return FromID(c.Override)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cached != nil {
		return *c.cached, nil
	}
	cl, err := c.lookup(ctx)
	if err != nil {
		return Classification{}, err
	}
	c.cached = &cl
	return cl, nil
}

// FromID splits a problem classification id into service and classification.
func FromID(id string) (Classification, error) {
	svc, _, ok := strings.Cut(id, "/problemClassifications/")
	if !ok || !strings.HasPrefix(strings.ToLower(svc), "/providers/microsoft.support/services/") {
		return Classification{}, fmt.Errorf("%w: %q is not a problem classification id", ErrNoClassification, id)
	}
	return Classification{ServiceID: svc, ClassificationID: id}, nil
}

func (c *Classifier) lookup(ctx context.Context) (Classification, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	var svcID, svcName string
	pager := c.Services.NewListPager(nil)
	for pager.More() && svcName == "" {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return Classification{}, fmt.Errorf("list support services: %w", err)
		}
		for _, s := range page.Value {
			if s != nil && s.Properties != nil && strings.EqualFold(val(s.Properties.DisplayName), ServiceDisplayName) {
				svcID, svcName = val(s.ID), val(s.Name)
				break
			}
		}
	}
	if svcName == "" {
		return Classification{}, fmt.Errorf("%w: no service %q", ErrNoClassification, ServiceDisplayName)
	}
	var all []Classification
	cp := c.Classifications.NewListPager(svcName, nil)
	for cp.More() {
		page, err := cp.NextPage(ctx)
		if err != nil {
			return Classification{}, fmt.Errorf("list problem classifications: %w", err)
		}
		for _, pc := range page.Value {
			if pc == nil || pc.ID == nil {
				continue
			}
			cl := Classification{ServiceID: svcID, ClassificationID: *pc.ID}
			if pc.Properties != nil {
				cl.DisplayName = val(pc.Properties.DisplayName)
			}
			all = append(all, cl)
		}
	}
	for _, want := range preferences {
		for _, cl := range all {
			if strings.Contains(strings.ToLower(cl.DisplayName), want) {
				return cl, nil
			}
		}
	}
	return Classification{}, fmt.Errorf("%w: none of the %d classifications of %q is about a VM that does not boot",
		ErrNoClassification, len(all), ServiceDisplayName)
}

func val[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
