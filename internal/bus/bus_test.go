package bus

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/vmrescue/vmrescue/internal/incident"
)

func message(stage incident.Stage) incident.Message {
	return incident.Message{
		IncidentID:   "inc-20261120-031407-7f3c",
		VMResourceID: "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-erp/providers/Microsoft.Compute/virtualMachines/erp-app-01",
		Stage:        stage,
		Trigger:      incident.Trigger{Kind: incident.TriggerAlert, EventID: "e1"},
	}
}

// recordingSender is a QueueSender that keeps what it was given.
type recordingSender struct {
	mu     sync.Mutex
	queue  string
	sent   []*azservicebus.Message
	fail   error
	closed bool
}

func (r *recordingSender) SendMessage(_ context.Context, m *azservicebus.Message, _ *azservicebus.SendMessageOptions) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.sent = append(r.sent, m)
	return nil
}

func (r *recordingSender) Close(context.Context) error { r.closed = true; return nil }

func TestServiceBusSetsBrokerProperties(t *testing.T) {
	senders := map[string]*recordingSender{}
	sb := NewServiceBusWith(func(q string) (QueueSender, error) {
		s := &recordingSender{queue: q}
		senders[q] = s
		return s, nil
	})
	at := time.Date(2026, 11, 20, 3, 30, 0, 0, time.FixedZone("x", 3600))
	tests := []struct {
		name      string
		stage     incident.Stage
		opts      SendOptions
		wantID    string
		wantSched bool
	}{
		{"first send", incident.StageSnapshot, SendOptions{}, "inc-20261120-031407-7f3c:snapshot", false},
		{"scheduled", incident.StageHarvestDump, SendOptions{ScheduledAt: at}, "inc-20261120-031407-7f3c:harvest-dump", true},
		{"deliberate re-run", incident.StageRescueAttach, SendOptions{Attempt: 3}, "inc-20261120-031407-7f3c:rescue-attach:3", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := sb.Send(context.Background(), message(tc.stage), tc.opts); err != nil {
				t.Fatal(err)
			}
			s := senders[string(tc.stage)]
			if s == nil || len(s.sent) != 1 {
				t.Fatalf("queue %s got %v", tc.stage, s)
			}
			m := s.sent[0]
			if *m.MessageID != tc.wantID || *m.ContentType != "application/json" || *m.CorrelationID != "inc-20261120-031407-7f3c" {
				t.Errorf("properties: id=%s type=%s corr=%s", *m.MessageID, *m.ContentType, *m.CorrelationID)
			}
			if tc.wantSched != (m.ScheduledEnqueueTime != nil) || (tc.wantSched && !m.ScheduledEnqueueTime.Equal(at)) {
				t.Errorf("ScheduledEnqueueTime = %v, want %v", m.ScheduledEnqueueTime, tc.wantSched)
			}
			if m.ApplicationProperties["stage"] != string(tc.stage) || m.ApplicationProperties["incidentId"] != "inc-20261120-031407-7f3c" {
				t.Errorf("application properties = %v", m.ApplicationProperties)
			}
			var got incident.Message
			if err := json.Unmarshal(m.Body, &got); err != nil || got.Version != incident.MessageVersion || got.Stage != tc.stage {
				t.Errorf("body %s: %v", m.Body, err)
			}
		})
	}
	if err := sb.Close(context.Background()); err != nil || !senders["snapshot"].closed {
		t.Fatalf("Close: %v", err)
	}
}

func TestServiceBusRefusesBadMessages(t *testing.T) {
	sb := NewServiceBusWith(func(string) (QueueSender, error) { return &recordingSender{}, nil })
	bad := message(incident.StageSnapshot)
	bad.IncidentID = "../../etc"
	if err := sb.Send(context.Background(), bad, SendOptions{}); err == nil {
		t.Error("invalid incident id accepted")
	}
	bad = message("reboot-now")
	if err := sb.Send(context.Background(), bad, SendOptions{}); err == nil {
		t.Error("unknown stage accepted")
	}
	boom := errors.New("amqp link detached")
	sb = NewServiceBusWith(func(string) (QueueSender, error) { return &recordingSender{fail: boom}, nil })
	if err := sb.Send(context.Background(), message(incident.StageSnapshot), SendOptions{}); !errors.Is(err, boom) {
		t.Errorf("send error not wrapped: %v", err)
	}
}

func TestLocalPostsEnvelope(t *testing.T) {
	var got []Envelope
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/runtime/bus"+LocalPath || r.Method != http.MethodPost {
			http.Error(w, "wrong route", http.StatusNotFound)
			return
		}
		var env Envelope
		if err := json.NewDecoder(r.Body).Decode(&env); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if env.Queue == "failed" {
			http.Error(w, "queue full", http.StatusServiceUnavailable)
			return
		}
		got = append(got, env)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	l, err := NewLocal(srv.URL+"/runtime/bus", nil)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(time.Minute)
	if err := l.Send(context.Background(), message(incident.StageHarvestDump), SendOptions{ScheduledAt: at}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Queue != "harvest-dump" || got[0].MessageID != "inc-20261120-031407-7f3c:harvest-dump" ||
		got[0].ScheduledEnqueueTime == nil || !got[0].ScheduledEnqueueTime.Equal(at.UTC()) {
		t.Fatalf("local host received %+v", got)
	}
	if err := l.Send(context.Background(), message(incident.StageFailed), SendOptions{}); err == nil {
		t.Fatal("a 503 from the local host was not reported")
	}
}
