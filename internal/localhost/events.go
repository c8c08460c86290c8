package localhost

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/vmrescue/vmrescue/internal/hostproto"
	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// Resource Health event vocabulary.
const (
	resourceAnnotatedType = "Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated"
	vmCrashedAnnotation   = "VirtualMachineCrashed"
)

// CrashEvent is the Resource Health event that Azure publishes when a VM's guest OS crashes: a
// ResourceAnnotated event with annotationName VirtualMachineCrashed from the system topic
// Microsoft.ResourceNotifications.HealthResources. With schema hostproto.SchemaEventGrid it is an
// Event Grid schema array of one event; with hostproto.SchemaCloudEvents a single CloudEvent. The
// body is what Event Grid POSTs to the webhook (`make demo` posts it; the simulator's crash loop
// delivers it with Host.DeliverEvents).
func CrashEvent(vmID, eventID string, at time.Time, schema string) ([]byte, error) {
	vm, err := resourceid.ParseVM(vmID)
	if err != nil {
		return nil, fmt.Errorf("crash event: %w", err)
	}
	when := at.UTC().Format("2006-01-02T15:04:05.0000000Z")
	topic := "/subscriptions/" + vm.SubscriptionID
	data := map[string]any{
		"resourceInfo": map[string]any{
			"id":   vmID + "/providers/Microsoft.ResourceHealth/resourceAnnotations/" + eventID,
			"name": eventID,
			"type": "Microsoft.ResourceHealth/resourceAnnotations",
			"properties": map[string]any{
				"targetResourceId":   vmID,
				"targetResourceType": "Microsoft.Compute/virtualMachines",
				"occurredTime":       when,
				"annotationName":     vmCrashedAnnotation,
				"reason":             "Virtual machine crashed",
				"summary":            "The virtual machine rebooted because the guest operating system crashed.",
				"context":            "VM Initiated",
				"category":           "Not Applicable",
			},
		},
		"operationalInfo": map[string]any{"resourceEventTime": when},
		"apiVersion":      "2022-08-01",
	}
	switch schema {
	case hostproto.SchemaEventGrid:
		return json.Marshal([]map[string]any{{
			"id": eventID, "topic": topic, "subject": vmID, "data": data, "eventType": resourceAnnotatedType,
			"dataVersion": "1", "metadataVersion": "1", "eventTime": when,
		}})
	case hostproto.SchemaCloudEvents:
		return json.Marshal(map[string]any{
			"id": eventID, "source": topic, "subject": vmID, "data": data, "type": resourceAnnotatedType,
			"specversion": "1.0", "time": when,
		})
	}
	return nil, fmt.Errorf("crash event: unknown schema %q", schema)
}
