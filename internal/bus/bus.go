// Package bus sends stage messages to the next stage's queue.
//
// Sender is what the pipeline calls. ServiceBus sends through azservicebus, which, unlike the
// Functions output binding, can set MessageID (so that Service Bus duplicate detection absorbs a
// resend), ScheduledEnqueueTime (so that a wait holds no worker) and application properties.
// Local sends to the in-memory queues of `handler local` over loopback HTTP.
package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/vmrescue/vmrescue/internal/incident"
)

// sendTimeout bounds one send, including the SDK's own retries.
const sendTimeout = 30 * time.Second

// Sender sends a stage message to the queue of msg.Stage.
type Sender interface {
	Send(ctx context.Context, msg incident.Message, opts SendOptions) error
}

// SendOptions are the optional parts of a send.
type SendOptions struct {
	// Attempt > 0 marks a deliberate re-run of the same stage (waiting for capacity); it becomes
	// part of the MessageID so duplicate detection does not absorb it.
	Attempt int
	// ScheduledAt delays delivery until then; zero delivers now.
	ScheduledAt time.Time
}

// Envelope is a stage message with the broker properties vmrescue sets. It is the shape the local
// bus posts, and what ServiceBus maps onto an azservicebus.Message.
type Envelope struct {
	Queue                 string            `json:"queue"`
	MessageID             string            `json:"messageId"`
	ContentType           string            `json:"contentType"`
	CorrelationID         string            `json:"correlationId"`
	Subject               string            `json:"subject"`
	ScheduledEnqueueTime  *time.Time        `json:"scheduledEnqueueTime,omitempty"`
	ApplicationProperties map[string]string `json:"applicationProperties"`
	Body                  json.RawMessage   `json:"body"`
}

// NewEnvelope validates msg and builds its envelope.
func NewEnvelope(msg incident.Message, opts SendOptions) (Envelope, error) {
	if !msg.Stage.Valid() {
		return Envelope{}, fmt.Errorf("send: unknown stage %q", msg.Stage)
	}
	if !incident.ValidID(msg.IncidentID) {
		return Envelope{}, fmt.Errorf("send: invalid incident id %q", msg.IncidentID)
	}
	if msg.Version == 0 {
		msg.Version = incident.MessageVersion
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return Envelope{}, fmt.Errorf("send: encode message: %w", err)
	}
	env := Envelope{
		Queue:         msg.Stage.Queue(),
		MessageID:     incident.MessageID(msg.IncidentID, msg.Stage, opts.Attempt),
		ContentType:   "application/json",
		CorrelationID: msg.IncidentID,
		Subject:       string(msg.Stage),
		ApplicationProperties: map[string]string{
			"incidentId": msg.IncidentID,
			"stage":      string(msg.Stage),
		},
		Body: body,
	}
	if !opts.ScheduledAt.IsZero() {
		t := opts.ScheduledAt.UTC()
		env.ScheduledEnqueueTime = &t
	}
	return env, nil
}
