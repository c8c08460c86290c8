package hostproto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// ServiceBusMessage is the message of a Service Bus trigger, with the host's encodings removed.
type ServiceBusMessage struct {
	// Body is the message body as raw JSON bytes: an object or an array. It may alias the request.
	Body                  []byte
	MessageID             string
	DeliveryCount         int
	SequenceNumber        int64
	EnqueuedTime          time.Time // UTC
	ContentType           string
	ApplicationProperties map[string]string // string values as is; other values as JSON text
	LockToken             string
	// Shadowed lists the metadata keys whose value may be a copy of the body's same-named top-level
	// field rather than the host's: the host copies body fields into Metadata, overwriting its own
	// keys. The field above then holds the best value available, or zero if none parsed.
	Shadowed []string
}

// Service Bus metadata keys, as the host spells them.
var (
	sbMessageID      = []string{"MessageId"}
	sbDeliveryCount  = []string{"DeliveryCount"}
	sbSequenceNumber = []string{"SequenceNumber"}
	sbEnqueuedTime   = []string{"EnqueuedTimeUtc", "EnqueuedTime"}
	sbContentType    = []string{"ContentType"}
	sbLockToken      = []string{"LockToken"}
	sbProperties     = []string{"ApplicationProperties", "UserProperties"}
)

// ServiceBus decodes the Service Bus trigger bound to binding. The body is accepted as an object,
// as a JSON string holding it (once or twice), or as base64 (dataType binary). Metadata integers
// may arrive as strings and strings quoted; a metadata value that does not parse is left zero
// rather than failing the decode.
//
// A body that is not a JSON object or array yields an error wrapping ErrBadRequest; the returned
// message then still carries the metadata, for logging the message that is being rejected.
func (r *Request) ServiceBus(binding string) (ServiceBusMessage, error) {
	var m ServiceBusMessage
	raw, err := r.binding(binding)
	if err != nil {
		return m, err
	}
	body, bodyErr := payload(raw)
	if bodyErr == nil {
		m.Body = body
	}
	r.resolve(&m, body, sbMessageID, func(v []byte) bool {
		s, ok := metaString(v)
		m.MessageID = s
		return ok
	})
	r.resolve(&m, body, sbDeliveryCount, func(v []byte) bool {
		n, ok := metaInt(v)
		ok = ok && n >= 0 && n <= math.MaxInt32
		if ok {
			m.DeliveryCount = int(n)
		}
		return ok
	})
	r.resolve(&m, body, sbSequenceNumber, func(v []byte) bool {
		n, ok := metaInt(v)
		if ok {
			m.SequenceNumber = n
		}
		return ok
	})
	r.resolve(&m, body, sbEnqueuedTime, func(v []byte) bool {
		t, ok := metaTime(v)
		if ok {
			m.EnqueuedTime = t
		}
		return ok
	})
	r.resolve(&m, body, sbContentType, func(v []byte) bool {
		s, ok := metaString(v)
		m.ContentType = s
		return ok
	})
	r.resolve(&m, body, sbLockToken, func(v []byte) bool {
		s, ok := metaString(v)
		m.LockToken = s
		return ok
	})
	r.resolve(&m, body, sbProperties, func(v []byte) bool {
		p, ok := properties(v)
		if ok {
			m.ApplicationProperties = p
		}
		return ok
	})
	if bodyErr != nil {
		return m, fmt.Errorf("binding %q: message body: %w", binding, bodyErr)
	}
	return m, nil
}

// resolve sets one field of m from the first of keys whose metadata value parses and is not a
// copy of the body's same-named field; if there is none, from the first copy that parses. Keys
// whose value is such a copy, or does not parse while the body has a same-named field, are
// recorded in m.Shadowed.
func (r *Request) resolve(m *ServiceBusMessage, body []byte, keys []string, parse func([]byte) bool) {
	var copies [][]byte
	done := false
	for _, k := range keys {
		raw, ok := r.meta(k)
		if !ok {
			continue
		}
		bv, inBody := member(body, k)
		switch {
		case inBody && sameValue(raw, bv):
			copies = append(copies, raw)
			m.Shadowed = append(m.Shadowed, k)
		case done:
		case parse(raw):
			done = true
		case inBody:
			m.Shadowed = append(m.Shadowed, k)
		}
	}
	for _, raw := range copies {
		if done {
			break
		}
		done = parse(raw)
	}
}

// properties reads application properties: an object, or a string holding one.
func properties(raw []byte) (map[string]string, bool) {
	obj, ok := metaObject(raw)
	if !ok {
		return nil, false
	}
	p := map[string]string{}
	members(obj, func(key, val []byte) bool {
		k := keyString(key)
		if _, dup := p[k]; dup {
			return true
		}
		switch val[0] {
		case '"':
			s, _ := unquote(val)
			p[k] = string(s)
		case 'n':
			p[k] = ""
		case '{', '[':
			var buf bytes.Buffer
			if json.Compact(&buf, val) == nil {
				p[k] = buf.String()
			}
		default:
			p[k] = string(val)
		}
		return true
	})
	return p, true
}
