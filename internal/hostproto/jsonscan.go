package hostproto

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// The helpers here walk JSON that json.Valid has already accepted, without building a tree: an
// invocation is decoded with a few dozen allocations. They still check every index, so a caller
// that skips validation gets "not found", never a panic.

// maxEncodingDepth bounds how many string or base64 layers payload removes. The host adds at most
// two; the bound only stops pathological inputs.
const maxEncodingDepth = 4

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func trimSpace(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// kind names the JSON type of a value, for error messages.
func kind(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// stringEnd returns the index just past the string literal starting at b[i] == '"', or -1.
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// valueEnd returns the index just past the JSON value starting at b[i], or -1.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				e := stringEnd(b, i)
				if e < 0 {
					return -1
				}
				i = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return i
}

// members calls fn with the raw key (quotes included) and raw value of each member of the JSON
// object obj, in order, until fn returns false. It reports false if obj is not an object.
func members(obj []byte, fn func(key, val []byte) bool) bool {
	obj = trimSpace(obj)
	if len(obj) < 2 || obj[0] != '{' {
		return false
	}
	i := skipSpace(obj, 1)
	for i < len(obj) && obj[i] != '}' {
		if obj[i] != '"' {
			return false
		}
		ke := stringEnd(obj, i)
		if ke < 0 {
			return false
		}
		key := obj[i:ke]
		i = skipSpace(obj, ke)
		if i >= len(obj) || obj[i] != ':' {
			return false
		}
		i = skipSpace(obj, i+1)
		ve := valueEnd(obj, i)
		if ve <= i {
			return false
		}
		if !fn(key, obj[i:ve]) {
			return true
		}
		i = skipSpace(obj, ve)
		if i < len(obj) && obj[i] == ',' {
			i = skipSpace(obj, i+1)
		}
	}
	return true
}

// elements calls fn with each raw element of the JSON array arr, in order, until fn returns false.
// It reports false if arr is not an array.
func elements(arr []byte, fn func(i int, val []byte) bool) bool {
	arr = trimSpace(arr)
	if len(arr) < 2 || arr[0] != '[' {
		return false
	}
	i := skipSpace(arr, 1)
	for n := 0; i < len(arr) && arr[i] != ']'; n++ {
		ve := valueEnd(arr, i)
		if ve < 0 || ve == i {
			return false
		}
		if !fn(n, arr[i:ve]) {
			return true
		}
		i = skipSpace(arr, ve)
		if i < len(arr) && arr[i] == ',' {
			i = skipSpace(arr, i+1)
		}
	}
	return true
}

// member returns the value of the first member of obj whose key equals name under case folding.
func member(obj []byte, name string) ([]byte, bool) {
	var found []byte
	members(obj, func(key, val []byte) bool {
		if keyIs(key, name) {
			found = val
			return false
		}
		return true
	})
	return found, found != nil
}

// keyIs reports whether the raw key token equals name under case folding.
func keyIs(key []byte, name string) bool {
	if len(key) < 2 {
		return false
	}
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return len(inner) == len(name) && strings.EqualFold(string(inner), name)
	}
	s, ok := unquote(key)
	return ok && strings.EqualFold(string(s), name)
}

// knownKeys are the keys the host always sends; keyString returns these without allocating.
var knownKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Data", "Metadata", "sys", "MethodName", "UtcNow", "RandGuid", "data",
		"DeliveryCount", "LockToken", "MessageId", "SequenceNumber", "ContentType",
		"EnqueuedTimeUtc", "EnqueuedTime", "ExpiresAtUtc", "ExpiresAt", "ApplicationProperties",
		"UserProperties", "CorrelationId", "SessionId", "ReplyTo", "ReplyToSessionId", "To",
		"Label", "Subject", "DeadLetterSource", "PartitionKey", "TransactionPartitionKey",
		"MessageReceiver", "MessageSession", "MessageActions", "SessionActions", "Client",
		"ReceiveActions", "LockedUntil", "State",
		"message", "event", "timer", "req",
		"version", "incidentId", "vmResourceId", "stage", "trigger", "dryRun", "artifacts",
	} {
		m[k] = k
	}
	return m
}()

// keyString returns the unquoted key.
func keyString(key []byte) string {
	inner := key
	if len(key) >= 2 {
		inner = key[1 : len(key)-1]
	}
	if bytes.IndexByte(inner, '\\') < 0 {
		if k, ok := knownKeys[string(inner)]; ok { // no allocation for the lookup
			return k
		}
		return string(inner)
	}
	s, _ := unquote(key)
	return string(s)
}

// unquote decodes a JSON string literal the way encoding/json does (invalid UTF-8 and lone
// surrogates become U+FFFD). The result aliases s when s holds no escapes.
func unquote(s []byte) ([]byte, bool) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return nil, false
	}
	s = s[1 : len(s)-1]
	i := 0
	for i < len(s) {
		c := s[i]
		if c == '\\' || c == '"' || c < ' ' {
			break
		}
		if c < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		i += size
	}
	if i == len(s) {
		return s, true
	}
	b := make([]byte, i, len(s)+2*utf8.UTFMax)
	copy(b, s)
	for i < len(s) {
		c := s[i]
		switch {
		case c == '\\':
			i++
			if i >= len(s) {
				return nil, false
			}
			switch s[i] {
			case '"', '\\', '/':
				b = append(b, s[i])
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				r := hex4(s[i+1:])
				if r < 0 {
					return nil, false
				}
				i += 4
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if i+2 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
						r2 = hex4(s[i+3:])
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						i += 6
						r = dec
					} else {
						r = utf8.RuneError
					}
				}
				b = utf8.AppendRune(b, r)
			default:
				return nil, false
			}
			i++
		case c == '"' || c < ' ':
			return nil, false
		case c < utf8.RuneSelf:
			b = append(b, c)
			i++
		default:
			r, size := utf8.DecodeRune(s[i:])
			i += size
			b = utf8.AppendRune(b, r)
		}
	}
	return b, true
}

func hex4(s []byte) rune {
	if len(s) < 4 {
		return -1
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// payload returns the JSON object or array that a trigger value carries. The host hands the same
// document over as the object itself, as a JSON string holding it, as a string holding that string
// (encoded twice), or as base64 of its bytes (dataType binary); payload peels those layers off.
func payload(raw []byte) ([]byte, error) {
	v := trimSpace(raw)
	valid := false // whether v is known to be valid JSON
	for range maxEncodingDepth {
		if len(v) == 0 {
			return nil, fmt.Errorf("%w: empty value", ErrBadRequest)
		}
		switch v[0] {
		case '{', '[':
			if !valid && !json.Valid(v) {
				return nil, fmt.Errorf("%w: value is not valid JSON", ErrBadRequest)
			}
			return v, nil
		case '"':
			s, ok := unquote(v)
			if !ok {
				return nil, fmt.Errorf("%w: value is not a valid JSON string", ErrBadRequest)
			}
			s = trimSpace(s)
			if json.Valid(s) {
				v, valid = s, true
				continue
			}
			if dec, ok := decodeBase64(s); ok {
				v, valid = trimSpace(dec), true
				continue
			}
			return nil, fmt.Errorf("%w: value is a string holding neither JSON nor base64-encoded JSON", ErrBadRequest)
		default:
			return nil, fmt.Errorf("%w: value is a JSON %s, not an object or array", ErrBadRequest, kind(v))
		}
	}
	return nil, fmt.Errorf("%w: value is encoded more than %d times", ErrBadRequest, maxEncodingDepth)
}

// decodeBase64 decodes standard base64, padded or not, and accepts the result only if it is JSON.
func decodeBase64(s []byte) ([]byte, bool) {
	if len(s) == 0 {
		return nil, false
	}
	enc := base64.StdEncoding
	if len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	dec := make([]byte, enc.DecodedLen(len(s)))
	n, err := enc.Decode(dec, s)
	if err != nil || !json.Valid(dec[:n]) {
		return nil, false
	}
	return dec[:n], true
}

// metaString reads a metadata value as text. Strings arrive quoted once more ("\"x\""); that
// extra layer is removed. Numbers and booleans are returned as written; objects, arrays and null
// are not text.
func metaString(raw []byte) (string, bool) {
	b, ok := metaText(raw)
	return string(b), ok
}

func metaText(raw []byte) ([]byte, bool) {
	v := trimSpace(raw)
	if len(v) == 0 {
		return nil, false
	}
	switch v[0] {
	case '"':
		s, ok := unquote(v)
		if !ok {
			return nil, false
		}
		if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
			if inner, ok := unquote(s); ok {
				return inner, true
			}
		}
		return s, true
	case '{', '[', 'n':
		return nil, false
	}
	return v, true
}

// metaInt reads an integer that may arrive as a number or as a string holding one.
func metaInt(raw []byte) (int64, bool) {
	s, ok := metaText(raw)
	if !ok {
		return 0, false
	}
	s = trimSpace(s)
	if n, err := strconv.ParseInt(string(s), 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(string(s), 64)
	if err != nil || f != float64(int64(f)) {
		return 0, false
	}
	return int64(f), true
}

// metaBool reads a boolean that may arrive as true/false or as a string holding one.
func metaBool(raw []byte) (bool, bool) {
	s, ok := metaText(raw)
	if !ok {
		return false, false
	}
	b, err := strconv.ParseBool(string(trimSpace(s)))
	return b, err == nil
}

// metaTime reads a time that may arrive quoted, with or without a zone (no zone means UTC).
func metaTime(raw []byte) (time.Time, bool) {
	s, ok := metaText(raw)
	if !ok {
		return time.Time{}, false
	}
	return parseTime(string(trimSpace(s)))
}

// timeLayouts are the forms the host and Event Grid write times in: RFC 3339 with up to seven
// fractional digits, or the same without a zone for .NET DateTime values in UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
}

func parseTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// metaObject reads a metadata value that should be an object and may arrive as a string holding
// one.
func metaObject(raw []byte) ([]byte, bool) {
	v := trimSpace(raw)
	for range 2 {
		if len(v) == 0 {
			return nil, false
		}
		switch v[0] {
		case '{':
			return v, true
		case '"':
			s, ok := unquote(v)
			if !ok || !json.Valid(s) {
				return nil, false
			}
			v = trimSpace(s)
		default:
			return nil, false
		}
	}
	return nil, false
}

// sameValue reports whether two raw values carry the same value once the host's re-encodings
// (quoting, numbers as strings) are taken off: the test for a body field that may have overwritten
// a metadata key.
func sameValue(a, b []byte) bool {
	if sa, ok := metaText(a); ok {
		sb, ok := metaText(b)
		return ok && bytes.Equal(sa, sb)
	}
	oa, okA := metaObject(a)
	ob, okB := metaObject(b)
	if okA && okB {
		return compactEqual(oa, ob)
	}
	return bytes.Equal(trimSpace(a), trimSpace(b))
}

func compactEqual(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}
