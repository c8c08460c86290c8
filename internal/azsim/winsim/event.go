package winsim

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/vmrescue/vmrescue/internal/resourceid"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/vmrescue/vmrescue/internal/hostproto"
)

// Resource Health vocabulary of the crash event.
const (
	// ResourceAnnotatedType is the event type of a Resource Health annotation on the system topic
	// Microsoft.ResourceNotifications.HealthResources.
	ResourceAnnotatedType = "Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated"
	// AnnotationVMCrashed is the annotation Azure raises when a VM's guest OS crashes.
	AnnotationVMCrashed = "VirtualMachineCrashed"
)

// eventTimeLayout is how Resource Health writes times: seven fractional digits, Z.
const eventTimeLayout = "2006-01-02T15:04:05.0000000Z"

type annotationProperties struct {
	TargetResourceID   string `json:"targetResourceId"`
	TargetResourceType string `json:"targetResourceType"`
	OccurredTime       string `json:"occurredTime"`
	AnnotationName     string `json:"annotationName"`
	Reason             string `json:"reason"`
	Summary            string `json:"summary"`
	Context            string `json:"context"`
	Category           string `json:"category"`
}

type resourceInfo struct {
	ID         string               `json:"id"`
	Name       string               `json:"name"`
	Type       string               `json:"type"`
	Properties annotationProperties `json:"properties"`
}

type healthData struct {
	ResourceInfo    resourceInfo `json:"resourceInfo"`
	OperationalInfo struct {
		ResourceEventTime string `json:"resourceEventTime"`
	} `json:"operationalInfo"`
	APIVersion string `json:"apiVersion"`
}

type eventGridEvent struct {
	ID              string     `json:"id"`
	Topic           string     `json:"topic"`
	Subject         string     `json:"subject"`
	Data            healthData `json:"data"`
	EventType       string     `json:"eventType"`
	DataVersion     string     `json:"dataVersion"`
	MetadataVersion string     `json:"metadataVersion"`
	EventTime       string     `json:"eventTime"`
}

type cloudEvent struct {
	ID          string     `json:"id"`
	Source      string     `json:"source"`
	Subject     string     `json:"subject"`
	Data        healthData `json:"data"`
	Type        string     `json:"type"`
	SpecVersion string     `json:"specversion"`
	Time        string     `json:"time"`
}

// CrashEvent is the body Event Grid POSTs to a webhook when Resource Health annotates a VM with
// VirtualMachineCrashed: with hostproto.SchemaEventGrid an array of one Event Grid schema event,
// with hostproto.SchemaCloudEvents one CloudEvents 1.0 event. The shape is that of
// shared/fixtures/events/resource-annotated-crashed.*.json.
func CrashEvent(vmID, eventID string, at time.Time, schema string) ([]byte, error) {
	vm, err := resourceid.ParseVM(vmID)
	if err != nil {
		return nil, fmt.Errorf("crash event: %w", err)
	}
	sub := vm.SubscriptionID
	when := at.UTC().Format(eventTimeLayout)
	data := healthData{
		ResourceInfo: resourceInfo{
			ID:   vmID + "/providers/Microsoft.ResourceHealth/resourceAnnotations/" + eventID,
			Name: eventID, Type: "Microsoft.ResourceHealth/resourceAnnotations",
			Properties: annotationProperties{
				TargetResourceID: vmID, TargetResourceType: "Microsoft.Compute/virtualMachines",
				OccurredTime: when, AnnotationName: AnnotationVMCrashed, Reason: "Virtual machine crashed",
				Summary: "The virtual machine rebooted because the guest operating system crashed.",
				Context: "VM Initiated", Category: "Not Applicable",
			},
		},
		APIVersion: "2022-08-01",
	}
	data.OperationalInfo.ResourceEventTime = when
	topic := "/subscriptions/" + sub
	switch schema {
	case "", hostproto.SchemaEventGrid:
		return json.Marshal([]eventGridEvent{{ID: eventID, Topic: topic, Subject: vmID, Data: data,
			EventType: ResourceAnnotatedType, DataVersion: "1", MetadataVersion: "1", EventTime: when}})
	case hostproto.SchemaCloudEvents:
		return json.Marshal(cloudEvent{ID: eventID, Source: topic, Subject: vmID, Data: data,
			Type: ResourceAnnotatedType, SpecVersion: "1.0", Time: when})
	}
	return nil, fmt.Errorf("crash event: unknown schema %q", schema)
}

// newEventID is a random UUID, as Resource Health's annotation ids are.
func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// EventPoster delivers one webhook body. attempt counts from 1 (Event Grid's aeg-delivery-count
// is attempt-1).
type EventPoster func(ctx context.Context, body []byte, attempt int) error

// PermanentError is a delivery failure that Event Grid does not retry: the webhook answered 400,
// 401, 403 or 413.
type PermanentError struct{ Status int }

func (e *PermanentError) Error() string {
	return "webhook refused the event: " + strconv.Itoa(e.Status) + " " + http.StatusText(e.Status)
}

// postTimeout bounds one delivery attempt: Event Grid waits 30 seconds for the webhook's answer.
const postTimeout = 30 * time.Second

// PostTo returns an EventPoster that POSTs to url as Event Grid delivers to a webhook: JSON body,
// aeg-event-type Notification, the subscription name and the delivery count. A 2xx answer is
// success; 400, 401, 403 and 413 are a PermanentError; anything else is retried.
func PostTo(url string, client *http.Client, schema string) EventPoster {
	if client == nil {
		client = &http.Client{Timeout: postTimeout}
	}
	return func(ctx context.Context, body []byte, attempt int) error {
		ctx, cancel := context.WithTimeout(ctx, postTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("crash event: %w", err)
		}
		if schema == hostproto.SchemaCloudEvents {
			req.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
		} else {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("aeg-event-type", "Notification")
			req.Header.Set("aeg-subscription-name", "VMRESCUE-HEALTHALERT")
			req.Header.Set("aeg-data-version", "1")
			req.Header.Set("aeg-metadata-version", "1")
			req.Header.Set("aeg-delivery-count", strconv.Itoa(attempt-1))
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("crash event: %w", err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return nil
		case resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusUnauthorized,
			resp.StatusCode == http.StatusForbidden, resp.StatusCode == http.StatusRequestEntityTooLarge:
			return &PermanentError{Status: resp.StatusCode}
		}
		return fmt.Errorf("crash event: webhook answered %s", resp.Status)
	}
}

// deliver posts body with Event Grid's retries (scaled). It returns the attempts made.
func (w *World) deliver(ctx context.Context, body []byte) (int, error) {
	var err error
	for attempt := 1; ; attempt++ {
		if err = w.post(ctx, body, attempt); err == nil {
			return attempt, nil
		}
		var pe *PermanentError
		if errors.As(err, &pe) || attempt > len(eventRetries) || ctx.Err() != nil {
			return attempt, err
		}
		w.log.Warn("winsim: crash event delivery failed; retrying", "attempt", attempt, "err", err)
		if serr := sleep(ctx, max(w.timing.scaled(eventRetries[attempt-1]), minRetryWait)); serr != nil {
			return attempt, err
		}
	}
}
