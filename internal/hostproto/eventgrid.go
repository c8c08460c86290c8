package hostproto

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Event schemas, as Event.Schema names them.
const (
	SchemaEventGrid   = "eventgrid"
	SchemaCloudEvents = "cloudevents"
)

// SubscriptionValidationEventType is the event Event Grid sends to a new webhook subscription; the
// endpoint proves it wants the events by echoing the event's validation code.
const SubscriptionValidationEventType = "Microsoft.EventGrid.SubscriptionValidationEvent"

// Event is one Event Grid event in either schema, reduced to the fields vmrescue reads.
type Event struct {
	ID          string          `json:"id"`
	Type        string          `json:"type"` // eventType (Event Grid schema) or type (CloudEvents)
	Subject     string          `json:"subject"`
	Source      string          `json:"source"` // topic (Event Grid schema) or source (CloudEvents)
	Time        time.Time       `json:"time"`   // eventTime or time, UTC; zero if absent
	DataVersion string          `json:"dataVersion,omitempty"`
	Schema      string          `json:"schema"` // SchemaEventGrid or SchemaCloudEvents
	Data        json.RawMessage `json:"data,omitempty"`
}

// Events decodes the Event Grid trigger bound to binding: one event or an array of them, in the
// Event Grid schema or CloudEvents 1.0, given as an object or as a JSON string holding one.
func (r *Request) Events(binding string) ([]Event, error) {
	doc, err := r.Payload(binding)
	if err != nil {
		return nil, err
	}
	events, err := parseEvents(doc)
	if err != nil {
		return nil, fmt.Errorf("binding %q: %w", binding, err)
	}
	return events, nil
}

// ParseEvents decodes a body POSTed to an Event Grid webhook: an array of Event Grid schema events,
// a single CloudEvent, or a CloudEvents batch (an array). Each event is checked for the members
// its schema requires; any malformed event fails the whole body with an error wrapping
// ErrBadRequest. Event.Data aliases body.
func ParseEvents(body []byte) ([]Event, error) {
	if !json.Valid(body) {
		return nil, fmt.Errorf("%w: events are not valid JSON", ErrBadRequest)
	}
	return parseEvents(trimSpace(body))
}

func parseEvents(doc []byte) ([]Event, error) {
	switch doc[0] {
	case '{':
		e, err := parseEvent(doc)
		if err != nil {
			return nil, err
		}
		return []Event{e}, nil
	case '[':
		var (
			events []Event
			err    error
		)
		elements(doc, func(i int, val []byte) bool {
			var e Event
			if e, err = parseEvent(val); err != nil {
				err = fmt.Errorf("event %d: %w", i, err)
				return false
			}
			events = append(events, e)
			return true
		})
		if err != nil {
			return nil, err
		}
		if len(events) == 0 {
			return nil, fmt.Errorf("%w: no events", ErrBadRequest)
		}
		return events, nil
	}
	return nil, fmt.Errorf("%w: events are a JSON %s, not an object or array", ErrBadRequest, kind(doc))
}

// eventMembers are the members of both schemas that vmrescue reads; which ones are set tells the
// schema apart.
type eventMembers struct {
	id, subject                            string
	topic, eventType, eventTime, dataVer   string // Event Grid schema
	specVersion, typ, source, time, data64 string // CloudEvents 1.0
	data                                   []byte
}

func parseEvent(raw []byte) (Event, error) {
	if len(raw) == 0 || raw[0] != '{' {
		return Event{}, fmt.Errorf("%w: event is a JSON %s, not an object", ErrBadRequest, kind(raw))
	}
	var w eventMembers
	fields := []struct {
		name string
		dst  *string
	}{
		{"id", &w.id}, {"subject", &w.subject}, {"topic", &w.topic}, {"eventType", &w.eventType},
		{"eventTime", &w.eventTime}, {"dataVersion", &w.dataVer}, {"specversion", &w.specVersion},
		{"type", &w.typ}, {"source", &w.source}, {"time", &w.time}, {"data_base64", &w.data64},
	}
	var err error
	members(raw, func(key, val []byte) bool {
		if w.data == nil && keyIs(key, "data") {
			w.data = val
			return true
		}
		for _, f := range fields {
			if !keyIs(key, f.name) {
				continue
			}
			switch val[0] {
			case '"':
				s, ok := unquote(val)
				if !ok {
					err = fmt.Errorf("%w: event member %s is not a valid string", ErrBadRequest, f.name)
					return false
				}
				*f.dst = string(s)
			case 'n':
			default:
				err = fmt.Errorf("%w: event member %s is a JSON %s, not a string", ErrBadRequest, f.name, kind(val))
				return false
			}
			break
		}
		return true
	})
	if err != nil {
		return Event{}, err
	}
	e := Event{ID: w.id, Subject: w.subject, Data: w.data}
	var when string
	var missing []string
	if w.specVersion != "" {
		if !strings.HasPrefix(w.specVersion, "1.") {
			return Event{}, fmt.Errorf("%w: unsupported CloudEvents specversion %q", ErrBadRequest, w.specVersion)
		}
		e.Schema, e.Type, e.Source, when = SchemaCloudEvents, w.typ, w.source, w.time
		if w.source == "" {
			missing = append(missing, "source")
		}
		if w.data64 != "" && len(w.data) == 0 {
			if dec, ok := decodeBase64([]byte(w.data64)); ok {
				e.Data = dec
			} else {
				e.Data, _ = json.Marshal(w.data64)
			}
		}
	} else {
		e.Schema, e.Type, e.Source, when = SchemaEventGrid, w.eventType, w.topic, w.eventTime
		e.DataVersion = w.dataVer
	}
	if e.ID == "" {
		missing = append(missing, "id")
	}
	if e.Type == "" {
		missing = append(missing, map[string]string{SchemaEventGrid: "eventType", SchemaCloudEvents: "type"}[e.Schema])
	}
	if len(missing) > 0 {
		return Event{}, fmt.Errorf("%w: %s event lacks %s", ErrBadRequest, e.Schema, strings.Join(missing, ", "))
	}
	if when != "" {
		t, ok := parseTime(when)
		if !ok {
			return Event{}, fmt.Errorf("%w: event %s: time %q is not RFC 3339", ErrBadRequest, e.ID, when)
		}
		e.Time = t
	}
	if string(e.Data) == "null" {
		e.Data = nil
	}
	return e, nil
}

// IsSubscriptionValidation reports whether e is Event Grid's subscription validation handshake
// and, if so, returns the validation code that the endpoint must echo as
// {"validationResponse": code}.
func IsSubscriptionValidation(e Event) (code string, ok bool) {
	if !strings.EqualFold(e.Type, SubscriptionValidationEventType) {
		return "", false
	}
	raw, found := member(e.Data, "validationCode")
	if !found {
		return "", false
	}
	code, ok = metaString(raw)
	return code, ok && code != ""
}

// Timer is a timer trigger's value.
type Timer struct {
	IsPastDue bool      // the invocation runs later than scheduled
	Last      time.Time // the previous scheduled occurrence, UTC; zero on the first run
	Next      time.Time // the next scheduled occurrence, UTC
}

// Timer decodes the timer trigger bound to binding.
func (r *Request) Timer(binding string) (Timer, error) {
	var t Timer
	doc, err := r.Payload(binding)
	if err != nil {
		return t, err
	}
	if doc[0] != '{' {
		return t, fmt.Errorf("%w: binding %q: timer is a JSON %s, not an object", ErrBadRequest, binding, kind(doc))
	}
	if raw, ok := member(doc, "IsPastDue"); ok && raw[0] != 'n' {
		if t.IsPastDue, ok = metaBool(raw); !ok {
			return t, fmt.Errorf("%w: binding %q: IsPastDue is not a boolean", ErrBadRequest, binding)
		}
	}
	status, ok := member(doc, "ScheduleStatus")
	if !ok || status[0] == 'n' {
		return t, nil
	}
	obj, ok := metaObject(status)
	if !ok {
		return t, fmt.Errorf("%w: binding %q: ScheduleStatus is a JSON %s, not an object", ErrBadRequest, binding, kind(status))
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"Last", &t.Last}, {"Next", &t.Next}} {
		raw, ok := member(obj, f.name)
		if !ok || raw[0] == 'n' {
			continue
		}
		if *f.dst, ok = metaTime(raw); !ok {
			return t, fmt.Errorf("%w: binding %q: ScheduleStatus.%s is not a time", ErrBadRequest, binding, f.name)
		}
	}
	return t, nil
}
