package localhost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/vmrescue/vmrescue/internal/functions"
	"github.com/vmrescue/vmrescue/internal/hostproto"
)

// Event Grid webhook headers.
const (
	headerEventType     = "aeg-event-type"
	headerRequestOrigin = "WebHook-Request-Origin"
	headerAllowedOrigin = "WebHook-Allowed-Origin"
	headerRequestRate   = "WebHook-Request-Rate"
	headerAllowedRate   = "WebHook-Allowed-Rate"
)

// serveEventGrid is the Event Grid extension's webhook,
// /runtime/webhooks/eventgrid?functionName=<name>:
//
//   - OPTIONS with WebHook-Request-Origin is the CloudEvents 1.0 abuse-protection handshake: the
//     answer allows the origin in WebHook-Allowed-Origin;
//   - POST with aeg-event-type: SubscriptionValidation is the Event Grid schema handshake: the
//     answer is {"validationResponse": <validationCode>};
//   - POST with aeg-event-type: Notification (or none) carries events: an array in the Event Grid
//     schema, a single CloudEvent, or a CloudEvents batch. Each event is one invocation, run
//     concurrently; the answer is 202 when all succeeded, else 500 so that Event Grid retries;
//   - POST with aeg-event-type: Unsubscribe is acknowledged with 202.
func (h *Host) serveEventGrid(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("functionName")
	fn, ok := h.app.Function(name)
	if !ok || fn.Trigger != functions.EventGrid {
		writeProblem(w, r, http.StatusNotFound, fmt.Sprintf("cannot find function: '%s'", name))
		return
	}
	switch r.Method {
	case http.MethodOptions:
		origin := r.Header.Get(headerRequestOrigin)
		if origin == "" {
			writeProblem(w, r, http.StatusBadRequest, "OPTIONS needs a WebHook-Request-Origin header (CloudEvents webhook validation)")
			return
		}
		w.Header().Set(headerAllowedOrigin, origin)
		if r.Header.Get(headerRequestRate) != "" {
			w.Header().Set(headerAllowedRate, "*")
		}
		w.Header().Set("Allow", "OPTIONS, POST")
		w.WriteHeader(http.StatusOK)
		return
	case http.MethodPost:
	default:
		w.Header().Set("Allow", "OPTIONS, POST")
		writeProblem(w, r, http.StatusMethodNotAllowed, "the Event Grid webhook takes POST and OPTIONS")
		return
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, hostproto.MaxBody))
	if err != nil {
		writeProblem(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("events over %d bytes", hostproto.MaxBody))
		return
	}
	kind := strings.ToLower(r.Header.Get(headerEventType))
	switch kind {
	case "unsubscribe":
		w.WriteHeader(http.StatusAccepted)
		return
	case "subscriptionvalidation", "notification", "":
	default:
		writeProblem(w, r, http.StatusBadRequest, fmt.Sprintf("unknown aeg-event-type %q", r.Header.Get(headerEventType)))
		return
	}
	events, err := hostproto.ParseEvents(body)
	if err != nil {
		writeProblem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	if kind == "subscriptionvalidation" || (kind == "" && len(events) == 1) {
		if code, ok := hostproto.IsSubscriptionValidation(events[0]); ok {
			h.log.Info("Event Grid subscription validated", "function", fn.Name)
			writeJSON(w, http.StatusOK, map[string]string{"validationResponse": code})
			return
		}
		if kind == "subscriptionvalidation" {
			writeProblem(w, r, http.StatusBadRequest, "aeg-event-type SubscriptionValidation without a validation event carrying data.validationCode")
			return
		}
	}
	if err := h.deliverEvents(r.Context(), fn, body); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// DeliverEvents delivers events to an eventGridTrigger function as the webhook does, without the
// handshakes: body is an Event Grid schema array, a CloudEvent or a CloudEvents batch. It is how
// the simulator posts the Resource Health events it raises.
func (h *Host) DeliverEvents(ctx context.Context, function string, body []byte) error {
	fn, ok := h.app.Function(function)
	if !ok || fn.Trigger != functions.EventGrid {
		return fmt.Errorf("no eventGridTrigger function %q", function)
	}
	if _, err := hostproto.ParseEvents(body); err != nil {
		return err
	}
	return h.deliverEvents(ctx, fn, body)
}

func (h *Host) deliverEvents(ctx context.Context, fn Function, body []byte) error {
	raws, err := splitEvents(body)
	if err != nil {
		return err
	}
	events, err := hostproto.ParseEvents(body)
	if err != nil {
		return err
	}
	// The invocations outlive a caller that hangs up, as the host's do, within functionTimeout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.app.Host.FunctionTimeout)
	defer cancel()
	errs := make([]error, len(raws))
	var wg sync.WaitGroup
	for i, raw := range raws {
		wg.Go(func() {
			payload, err := EventGridInvocation(fn.Binding, raw, newSys(fn.Name, nowUTC()))
			if err != nil {
				errs[i] = err
				return
			}
			rec := Invocation{Function: fn.Name, Trigger: fn.Trigger}
			if i < len(events) {
				rec.EventID, rec.EventType, rec.Subject = events[i].ID, events[i].Type, events[i].Subject
			}
			if err := h.invoke(ctx, fn, payload, rec); err != nil {
				errs[i] = fmt.Errorf("event %s: %w", rec.EventID, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// splitEvents returns the raw JSON of each event of a webhook body: the elements of an array, or
// the body itself when it is one object.
func splitEvents(body []byte) ([]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '{' {
		return []json.RawMessage{body}, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, fmt.Errorf("%w: events are not a JSON object or array: %w", hostproto.ErrBadRequest, err)
	}
	if len(raws) == 0 {
		return nil, fmt.Errorf("%w: no events", hostproto.ErrBadRequest)
	}
	return raws, nil
}
