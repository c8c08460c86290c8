// Package lifecycle publishes an incident's lifecycle as CloudEvents 1.0 to an Event Grid custom
// topic (azeventgrid), for whoever subscribes: an incident closed (ticketed, recovered, refused),
// failed or rolled back. Without a topic, nothing is published.
package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// API is the part of *azeventgrid.Client vmrescue calls.
type API interface {
	PublishCloudEvents(ctx context.Context, events []messaging.CloudEvent, options *azeventgrid.PublishCloudEventsOptions) (azeventgrid.PublishCloudEventsResponse, error)
}

var _ API = (*azeventgrid.Client)(nil)

// Event types.
const (
	TypeClosed     = "vmrescue.incident.closed"
	TypeFailed     = "vmrescue.incident.failed"
	TypeRolledBack = "vmrescue.incident.rolledback"
)

// Source is the CloudEvents source of vmrescue's events.
const Source = "/vmrescue"

// publishTimeout bounds one publish, the SDK's retries included.
const publishTimeout = 30 * time.Second

// Data is the payload of every lifecycle event.
type Data struct {
	IncidentID   string             `json:"incidentId"`
	VMResourceID string             `json:"vmResourceId"`
	State        string             `json:"state"`
	Outcome      string             `json:"outcome,omitempty"`
	Reason       string             `json:"reason,omitempty"`
	Artifacts    incident.Artifacts `json:"artifacts"`
	Time         time.Time          `json:"time"`
}

// Publisher publishes lifecycle events. A nil *Publisher, or one without a client, publishes
// nothing.
type Publisher struct {
	Client API
}

// Publish sends one event. The event id is derived from the incident and the type, so a retried
// publish is recognisable as the same event.
func (p *Publisher) Publish(ctx context.Context, typ string, d Data) error {
	if p == nil || p.Client == nil {
		return nil
	}
	ev, err := messaging.NewCloudEvent(Source, typ, d, &messaging.CloudEventOptions{
		DataContentType: ptr("application/json"),
		Subject:         ptr(d.VMResourceID),
		Time:            ptr(d.Time),
	})
	if err != nil {
		return fmt.Errorf("lifecycle event: %w", err)
	}
	ev.ID = d.IncidentID + "/" + typ
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if _, err := p.Client.PublishCloudEvents(ctx, []messaging.CloudEvent{ev}, nil); err != nil {
		return fmt.Errorf("publish %s for %s: %w", typ, d.IncidentID, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
