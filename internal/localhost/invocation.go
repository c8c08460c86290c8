package localhost

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/localhost/queue"
)

// The invocation payloads below are what the Functions host POSTs to a custom handler, quirks
// included; internal/hostproto/testdata/invocations holds the same payloads as golden files, and
// the tests check these builders against them.

// Sys is the host's own invocation metadata (Metadata.sys).
type Sys struct {
	MethodName string
	UtcNow     time.Time
	RandGuid   string
}

// newSys returns the sys metadata of an invocation of fn made now.
func newSys(fn string, now time.Time) Sys {
	return Sys{MethodName: fn, UtcNow: now, RandGuid: queue.NewUUID()}
}

func (s Sys) member() member {
	var b object
	b.set("MethodName", jsonString(s.MethodName))
	b.set("UtcNow", jsonString(hostTime(s.UtcNow)))
	b.set("RandGuid", jsonString(s.RandGuid))
	return member{"sys", b.bytes()}
}

// hostTime writes a time as the host writes a DateTime with a UTC kind: RFC 3339 with up to seven
// fractional digits.
func hostTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.9999999Z07:00") }

// hostDateTime writes a Service Bus DateTime as the host writes it: UTC without a zone designator.
func hostDateTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.9999999") }

// maxDateTime is .NET's DateTime.MaxValue to the second, the ExpiresAtUtc of a message without a
// time to live.
const maxDateTime = "9999-12-31T23:59:59"

// EventGridInvocation is the invocation of an eventGridTrigger function for one event (either
// schema), given as its raw JSON object: Data.<binding> is the event, Metadata.data repeats the
// event's data.
func EventGridInvocation(binding string, event []byte, sys Sys) ([]byte, error) {
	ev, err := compact(event)
	if err != nil || ev[0] != '{' {
		return nil, fmt.Errorf("event is not a JSON object")
	}
	var data, meta object
	data.set(binding, ev)
	var evm map[string]json.RawMessage
	if err := json.Unmarshal(ev, &evm); err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	if d, ok := evm["data"]; ok {
		meta.set("data", d)
	}
	meta.members = append(meta.members, sys.member())
	return invocation(data, meta), nil
}

// ServiceBusInvocation is the invocation of a serviceBusTrigger function for one delivery.
//
// The host's quirks, reproduced: Data.<binding> holds the body JSON-encoded once more as a string
// (base64 with dataType binary); integer metadata arrives as strings ("DeliveryCount":"1");
// string metadata arrives quoted ("MessageId":"\"id\""); ApplicationProperties (and its old name
// UserProperties) arrive as objects; and each top-level field of a JSON object body is copied into
// Metadata (strings quoted, numbers and booleans as strings, objects as they are), replacing a
// host key of the same name.
func ServiceBusInvocation(binding, dataType string, msg queue.Message, sys Sys) ([]byte, error) {
	var data, meta object
	if dataType == "binary" {
		data.set(binding, jsonString(base64.StdEncoding.EncodeToString(msg.Body)))
	} else {
		data.set(binding, jsonString(string(jsonString(string(msg.Body)))))
	}
	meta.set("DeliveryCount", jsonString(strconv.Itoa(msg.DeliveryCount)))
	meta.set("LockToken", quoted(msg.LockToken))
	meta.set("MessageId", quoted(msg.MessageID))
	meta.set("SequenceNumber", jsonString(strconv.FormatInt(msg.SequenceNumber, 10)))
	meta.set("ContentType", quoted(msg.ContentType))
	meta.set("EnqueuedTimeUtc", jsonString(hostDateTime(msg.EnqueuedTime)))
	meta.set("ExpiresAtUtc", jsonString(maxDateTime))
	if msg.CorrelationID != "" {
		meta.set("CorrelationId", quoted(msg.CorrelationID))
	}
	if msg.DeadLetterSource != "" {
		meta.set("DeadLetterSource", quoted(msg.DeadLetterSource))
	}
	var props object
	for _, k := range slices.Sorted(maps.Keys(msg.ApplicationProperties)) {
		props.set(k, jsonString(msg.ApplicationProperties[k]))
	}
	meta.set("ApplicationProperties", props.bytes())
	meta.set("UserProperties", props.bytes())
	if body := bytes.TrimSpace(msg.Body); len(body) > 0 && body[0] == '{' && json.Valid(body) {
		if err := copyBodyFields(&meta, body); err != nil {
			return nil, err
		}
	}
	// The host's own sys comes last and wins over a body field of that name.
	meta.members = slices.DeleteFunc(meta.members, func(m member) bool { return strings.EqualFold(m.key, "sys") })
	meta.members = append(meta.members, sys.member())
	return invocation(data, meta), nil
}

// copyBodyFields copies the body's top-level fields into meta as the host does.
func copyBodyFields(meta *object, body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		var v []byte
		switch raw[0] {
		case '{', '[', 'n':
			v, _ = compact(raw)
		default: // string, number, boolean: their JSON text, as a string
			v = jsonString(string(raw))
		}
		meta.setFold(key, v)
	}
	return nil
}

// TimerStatus is the schedule monitor's record of a timer (ScheduleStatus).
type TimerStatus struct {
	Last, Next, LastUpdated time.Time
}

// TimerInvocation is the invocation of a timerTrigger function. A nil status is sent as null, as
// the host does for a timer without a schedule monitor record.
func TimerInvocation(binding string, status *TimerStatus, pastDue bool, sys Sys) []byte {
	var timer, schedule object
	schedule.set("AdjustForDST", []byte("true"))
	timer.set("Schedule", schedule.bytes())
	if status == nil {
		timer.set("ScheduleStatus", []byte("null"))
	} else {
		var st object
		st.set("Last", jsonString(hostTime(status.Last)))
		st.set("Next", jsonString(hostTime(status.Next)))
		st.set("LastUpdated", jsonString(hostTime(status.LastUpdated)))
		timer.set("ScheduleStatus", st.bytes())
	}
	timer.set("IsPastDue", strconv.AppendBool(nil, pastDue))
	var data, meta object
	data.set(binding, timer.bytes())
	meta.members = append(meta.members, sys.member())
	return invocation(data, meta)
}

func invocation(data, meta object) []byte {
	var inv object
	inv.set("Data", data.bytes())
	inv.set("Metadata", meta.bytes())
	return inv.bytes()
}

// object is a JSON object that keeps its members in order.
type object struct{ members []member }

type member struct {
	key   string
	value []byte
}

func (o *object) set(key string, value []byte) {
	for i := range o.members {
		if o.members[i].key == key {
			o.members[i].value = value
			return
		}
	}
	o.members = append(o.members, member{key, value})
}

// setFold replaces the value of a member whose key is equal under case folding, keeping the
// existing key's spelling (the host's metadata dictionary ignores case), or adds the member.
func (o *object) setFold(key string, value []byte) {
	for i := range o.members {
		if strings.EqualFold(o.members[i].key, key) {
			o.members[i].value = value
			return
		}
	}
	o.members = append(o.members, member{key, value})
}

func (o *object) bytes() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o.members {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(jsonString(m.key))
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// jsonString encodes s as a JSON string, without HTML escaping.
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// quoted is a string metadata value as the host sends it: JSON-encoded, then as a JSON string.
func quoted(s string) []byte { return jsonString(string(jsonString(s))) }

func compact(raw []byte) ([]byte, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, err
	}
	if b.Len() == 0 {
		return nil, fmt.Errorf("empty JSON")
	}
	return b.Bytes(), nil
}
