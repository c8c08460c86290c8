package lifecycle_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"
	"github.com/vmrescue/vmrescue/internal/lifecycle"
)

// TestPublish sends one event with the real azeventgrid client to a topic on loopback TLS and
// checks the CloudEvent that arrives.
func TestPublish(t *testing.T) {
	t.Parallel()
	got := make(chan []map[string]any, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []map[string]any
		if r.Header.Get("aeg-sas-key") != "k" || json.NewDecoder(r.Body).Decode(&batch) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		got <- batch
	}))
	defer srv.Close()
	c, err := azeventgrid.NewClientWithSharedKeyCredential(srv.URL+"/api/events", azcore.NewKeyCredential("k"),
		&azeventgrid.ClientOptions{ClientOptions: policy.ClientOptions{Transport: srv.Client()}})
	if err != nil {
		t.Fatal(err)
	}
	p := &lifecycle.Publisher{Client: c}
	d := lifecycle.Data{IncidentID: "inc-20261120-031407-7f3c", VMResourceID: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
		State: "closed", Outcome: "ticketed", Time: time.Date(2026, 11, 20, 3, 30, 0, 0, time.UTC)}
	if err := p.Publish(context.Background(), lifecycle.TypeClosed, d); err != nil {
		t.Fatal(err)
	}
	batch := <-got
	if len(batch) != 1 {
		t.Fatalf("%d events", len(batch))
	}
	ev := batch[0]
	data, _ := ev["data"].(map[string]any)
	if ev["type"] != lifecycle.TypeClosed || ev["source"] != lifecycle.Source || ev["specversion"] != "1.0" ||
		ev["id"] != d.IncidentID+"/"+lifecycle.TypeClosed || ev["subject"] != d.VMResourceID || data["outcome"] != "ticketed" {
		t.Errorf("event %v", ev)
	}
}

func TestNoTopicPublishesNothing(t *testing.T) {
	t.Parallel()
	var p *lifecycle.Publisher
	if err := p.Publish(context.Background(), lifecycle.TypeFailed, lifecycle.Data{}); err != nil {
		t.Error(err)
	}
	if err := (&lifecycle.Publisher{}).Publish(context.Background(), lifecycle.TypeFailed, lifecycle.Data{}); err != nil {
		t.Error(err)
	}
}
