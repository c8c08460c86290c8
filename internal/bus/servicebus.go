package bus

import (
	"context"
	"fmt"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// QueueSender is the part of *azservicebus.Sender that ServiceBus uses. Following the azservicebus
// guidance for testing without a namespace, the code depends on this consumer-side interface and
// tests supply their own implementation.
type QueueSender interface {
	SendMessage(ctx context.Context, message *azservicebus.Message, options *azservicebus.SendMessageOptions) error
	Close(ctx context.Context) error
}

var _ QueueSender = (*azservicebus.Sender)(nil)

// ServiceBus sends stage messages through Azure Service Bus.
type ServiceBus struct {
	newSender func(queue string) (QueueSender, error)

	mu      sync.Mutex
	senders map[string]QueueSender
}

// NewServiceBus sends through client, one sender per queue, opened on first use.
func NewServiceBus(client *azservicebus.Client) *ServiceBus {
	return NewServiceBusWith(func(queue string) (QueueSender, error) {
		return client.NewSender(queue, nil)
	})
}

// NewServiceBusWith takes the function that opens a queue's sender; tests pass their own.
func NewServiceBusWith(newSender func(queue string) (QueueSender, error)) *ServiceBus {
	return &ServiceBus{newSender: newSender, senders: map[string]QueueSender{}}
}

// Send implements Sender.
func (s *ServiceBus) Send(ctx context.Context, msg incident.Message, opts SendOptions) error {
	env, err := NewEnvelope(msg, opts)
	if err != nil {
		return err
	}
	sender, err := s.sender(env.Queue)
	if err != nil {
		return fmt.Errorf("send %s to %s: %w", env.MessageID, env.Queue, err)
	}
	props := make(map[string]any, len(env.ApplicationProperties))
	for k, v := range env.ApplicationProperties {
		props[k] = v
	}
	m := &azservicebus.Message{
		MessageID:             &env.MessageID,
		ContentType:           &env.ContentType,
		CorrelationID:         &env.CorrelationID,
		Subject:               &env.Subject,
		ScheduledEnqueueTime:  env.ScheduledEnqueueTime,
		ApplicationProperties: props,
		Body:                  env.Body,
	}
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	if err := sender.SendMessage(ctx, m, nil); err != nil {
		return fmt.Errorf("send %s to %s: %w", env.MessageID, env.Queue, err)
	}
	return nil
}

func (s *ServiceBus) sender(queue string) (QueueSender, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if snd, ok := s.senders[queue]; ok {
		return snd, nil
	}
	snd, err := s.newSender(queue)
	if err != nil {
		return nil, err
	}
	s.senders[queue] = snd
	return snd, nil
}

// Close closes every sender opened.
func (s *ServiceBus) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for q, snd := range s.senders {
		if err := snd.Close(ctx); err != nil && first == nil {
			first = err
		}
		delete(s.senders, q)
	}
	return first
}
