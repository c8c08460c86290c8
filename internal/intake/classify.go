// Package intake turns Resource Health alerts and manual requests into incidents: it decides
// whether an event calls for a remediation, applies the scope policy, keeps one active incident
// per VM, records the decision in the audit trail, and sends the first stage message.
package intake

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// Event types and values from the Microsoft.ResourceNotifications.HealthResources system topic.
const (
	TypeAnnotated     = "Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated"
	TypeAvailability  = "Microsoft.ResourceNotifications.HealthResources.AvailabilityStatusChanged"
	AnnotationCrashed = "VirtualMachineCrashed"
	StateUnavailable  = "Unavailable"
	VMResourceType    = "Microsoft.Compute/virtualMachines"
)

// healthData is the part of a HealthResources event's data that intake reads.
type healthData struct {
	ResourceInfo struct {
		ID         string `json:"id"`
		Properties struct {
			TargetResourceID   string `json:"targetResourceId"`
			TargetResourceType string `json:"targetResourceType"`
			OccurredTime       string `json:"occurredTime"`
			AnnotationName     string `json:"annotationName"`
			AvailabilityState  string `json:"availabilityState"`
			Reason             string `json:"reason"`
			Context            string `json:"context"`
		} `json:"properties"`
	} `json:"resourceInfo"`
}

// Decision is what an event calls for.
type Decision struct {
	Act bool
	// VMResourceID is the target resource, as given (possibly not a VM when Act is false).
	VMResourceID string
	VM           resourceid.ID // set when Act
	Trigger      incident.Trigger
	// Reason explains a refusal; empty when Act.
	Reason string
	// Strong is true for a guest OS crash annotation, false for the weaker availability signal.
	Strong bool
}

// Classify decides what a Resource Health event calls for. It never fails: an event it cannot act
// on comes back with Act false and the reason, to be recorded.
func Classify(id, eventType string, eventTime time.Time, data json.RawMessage) Decision {
	d := Decision{Trigger: incident.Trigger{Kind: incident.TriggerAlert, EventID: id, EventType: eventType}}
	var hd healthData
	if len(data) == 0 || string(data) == "null" {
		d.Reason = "event has no data"
		return d
	}
	if err := json.Unmarshal(data, &hd); err != nil {
		d.Reason = fmt.Sprintf("event data is not a Resource Health payload: %v", err)
		return d
	}
	p := hd.ResourceInfo.Properties
	d.VMResourceID = p.TargetResourceID
	switch eventType {
	case TypeAnnotated:
		d.Trigger.Annotation = p.AnnotationName
		if p.AnnotationName != AnnotationCrashed {
			d.Reason = fmt.Sprintf("annotation %q is not a guest OS crash", clip(p.AnnotationName))
			return d
		}
	case TypeAvailability:
		d.Trigger.Annotation = p.AvailabilityState
		if !strings.EqualFold(p.AvailabilityState, StateUnavailable) {
			d.Reason = fmt.Sprintf("availability state %q is not Unavailable", clip(p.AvailabilityState))
			return d
		}
	default:
		d.Reason = fmt.Sprintf("event type %q is not a Resource Health VM event", clip(eventType))
		return d
	}
	if !strings.EqualFold(p.TargetResourceType, VMResourceType) {
		d.Reason = fmt.Sprintf("resource type %q is not a virtual machine", clip(p.TargetResourceType))
		return d
	}
	vm, err := resourceid.ParseVM(p.TargetResourceID)
	if err != nil {
		d.Reason = fmt.Sprintf("target resource id: %v", err)
		d.VMResourceID = clip(p.TargetResourceID)
		return d
	}
	d.Act, d.VM, d.VMResourceID = true, vm, vm.String()
	d.Strong = eventType == TypeAnnotated
	return d
}

// clip bounds a value from an event before it is recorded.
func clip(s string) string {
	const max = 256
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
