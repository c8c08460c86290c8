// Package hostproto is the wire protocol between the Azure Functions host and vmrescue's custom
// handler: it decodes the invocation request the host POSTs to /<FunctionName> and writes the
// response the host expects back.
//
// The host's payloads carry quirks that every decoder here survives:
//   - trigger values that are strings arrive JSON-encoded once more, sometimes twice
//     ("\"{\\\"a\\\":1}\"");
//   - Service Bus metadata integers arrive as strings ("DeliveryCount":"1") and string metadata
//     arrives quoted ("MessageId":"\"x\"");
//   - the top-level fields of a JSON message body are copied into Metadata, where they can shadow
//     the host's own keys;
//   - a binary trigger ("dataType": "binary") delivers its value base64-encoded.
//
// Decoding never panics on any input; every malformed input yields an error wrapping
// ErrBadRequest or ErrTooLarge.
package hostproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// MaxBody is the largest invocation request accepted, in bytes.
const MaxBody = 1 << 20

// Error kinds, for errors.Is.
var (
	// ErrBadRequest marks an invocation that cannot be decoded: malformed JSON, wrong types, or a
	// missing part. Retrying it cannot help.
	ErrBadRequest = errors.New("bad invocation request")
	// ErrTooLarge marks an invocation body over MaxBody.
	ErrTooLarge = errors.New("invocation request too large")
	// ErrUnknownFunction marks an invocation for a function vmrescue does not define.
	ErrUnknownFunction = errors.New("unknown function")
)

// initialReadSize is the first buffer size for reading a request: large enough for the usual
// invocation in one read.
const initialReadSize = 4 << 10

// Request is one invocation as the host sends it: trigger and input binding values in Data, keyed
// by binding name, and trigger metadata in Metadata. The values are raw JSON that alias the request
// body; use the typed accessors (ServiceBus, Events, Timer, Sys) to read them.
//
// When a key occurs twice in Data or Metadata, the first occurrence is kept: the host writes its
// own metadata before the fields it copies from a message body.
type Request struct {
	Data     map[string]json.RawMessage
	Metadata map[string]json.RawMessage
}

// DecodeRequest reads and decodes one invocation request. A body over MaxBody yields an error
// wrapping ErrTooLarge; malformed JSON, a body that is not an object, or a missing or non-object
// Data yield an error wrapping ErrBadRequest.
func DecodeRequest(r io.Reader) (*Request, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	return decodeRequest(body)
}

func readBody(r io.Reader) ([]byte, error) {
	buf := make([]byte, 0, initialReadSize)
	lr := io.LimitReader(r, MaxBody+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > MaxBody {
			return nil, fmt.Errorf("%w: body over %d bytes", ErrTooLarge, MaxBody)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return nil, fmt.Errorf("%w: %w", ErrTooLarge, err)
			}
			return nil, fmt.Errorf("read invocation request: %w", err)
		}
	}
}

func decodeRequest(body []byte) (*Request, error) {
	if !json.Valid(body) {
		return nil, fmt.Errorf("%w: body is not valid JSON", ErrBadRequest)
	}
	v := trimSpace(body)
	if v[0] != '{' {
		return nil, fmt.Errorf("%w: body is a JSON %s, not an object", ErrBadRequest, kind(v))
	}
	var data, meta []byte
	members(v, func(key, val []byte) bool {
		switch {
		case data == nil && keyIs(key, "Data"):
			data = val
		case meta == nil && keyIs(key, "Metadata"):
			meta = val
		}
		return true
	})
	if data == nil || data[0] == 'n' {
		return nil, fmt.Errorf("%w: missing Data", ErrBadRequest)
	}
	if data[0] != '{' {
		return nil, fmt.Errorf("%w: Data is a JSON %s, not an object", ErrBadRequest, kind(data))
	}
	req := &Request{Data: objectMap(data)}
	if meta != nil && meta[0] != 'n' {
		if meta[0] != '{' {
			return nil, fmt.Errorf("%w: Metadata is a JSON %s, not an object", ErrBadRequest, kind(meta))
		}
		req.Metadata = objectMap(meta)
	}
	return req, nil
}

// objectMap indexes the members of a valid JSON object, keeping the first of duplicate keys.
func objectMap(obj []byte) map[string]json.RawMessage {
	n := 0
	members(obj, func(_, _ []byte) bool { n++; return true })
	m := make(map[string]json.RawMessage, n)
	members(obj, func(key, val []byte) bool {
		k := keyString(key)
		if _, dup := m[k]; !dup {
			m[k] = val
		}
		return true
	})
	return m
}

// binding returns the raw value of a Data binding.
func (r *Request) binding(name string) ([]byte, error) {
	raw, ok := r.Data[name]
	if !ok {
		for k, v := range r.Data {
			if strings.EqualFold(k, name) {
				raw, ok = v, true
				break
			}
		}
	}
	if !ok || len(raw) == 0 {
		return nil, fmt.Errorf("%w: no binding %q in Data", ErrBadRequest, name)
	}
	return raw, nil
}

// Payload returns the JSON object or array a trigger binding carries, with the host's extra
// string encodings and base64 removed.
func (r *Request) Payload(binding string) ([]byte, error) {
	raw, err := r.binding(binding)
	if err != nil {
		return nil, err
	}
	doc, err := payload(raw)
	if err != nil {
		return nil, fmt.Errorf("binding %q: %w", binding, err)
	}
	return doc, nil
}

// meta finds a Metadata value: the key as spelled first, then any key equal under case folding
// (the host's metadata keys are case-insensitive).
func (r *Request) meta(key string) ([]byte, bool) {
	if raw, ok := r.Metadata[key]; ok && len(raw) > 0 {
		return raw, true
	}
	for k, v := range r.Metadata {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// Sys is the host's own invocation metadata (Metadata.sys).
type Sys struct {
	MethodName string    // the function name
	UtcNow     time.Time // when the host dispatched the invocation
	RandGuid   string    // a random id the host draws for each invocation
}

// Sys returns Metadata.sys; fields that are missing or malformed are left zero.
func (r *Request) Sys() Sys {
	var s Sys
	raw, ok := r.meta("sys")
	if !ok {
		return s
	}
	obj, ok := metaObject(raw)
	if !ok {
		return s
	}
	members(obj, func(key, val []byte) bool {
		switch {
		case keyIs(key, "MethodName"):
			s.MethodName, _ = metaString(val)
		case keyIs(key, "UtcNow"):
			s.UtcNow, _ = metaTime(val)
		case keyIs(key, "RandGuid"):
			s.RandGuid, _ = metaString(val)
		}
		return true
	})
	return s
}

// Response is what the handler answers to an invocation. The host reads Outputs by output binding
// name, writes Logs to the function's log, and uses ReturnValue for a $return binding.
//
// A string output that happens to be valid base64 is decoded by the host before it reaches the
// binding, so outputs are always JSON objects, never bare strings.
type Response struct {
	Outputs     map[string]any `json:"Outputs"`
	Logs        []string       `json:"Logs"`
	ReturnValue any            `json:"ReturnValue"`
}

// Write sends resp with the given status and Content-Type application/json. Outputs and Logs are
// written as {} and [] when empty, never null. A status outside 200..599 is sent as 500; a 2xx
// acknowledges the invocation, anything else makes the host fail it (and Service Bus redeliver).
// If resp cannot be encoded, Write answers 500 with the encoding error in Logs.
func Write(w http.ResponseWriter, status int, resp Response) {
	if status < 200 || status > 599 {
		resp.Logs = append(resp.Logs[:len(resp.Logs):len(resp.Logs)], fmt.Sprintf("hostproto: invalid response status %d", status))
		status = http.StatusInternalServerError
	}
	if resp.Outputs == nil {
		resp.Outputs = map[string]any{}
	}
	if resp.Logs == nil {
		resp.Logs = []string{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(resp); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		fallback := Response{
			Outputs: map[string]any{},
			Logs:    append(resp.Logs[:len(resp.Logs):len(resp.Logs)], "hostproto: encode response: "+err.Error()),
		}
		_ = enc.Encode(fallback) // strings and an empty map always encode
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes()) // the host has gone if this fails; nothing is left to tell it
}
