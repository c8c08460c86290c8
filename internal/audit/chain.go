package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// GenesisHash is the prevHash of an incident's first record.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Record is one line of an incident's audit blob. Field order is the wire order.
type Record struct {
	Seq          int64           `json:"seq"`
	Time         time.Time       `json:"time"`
	IncidentID   string          `json:"incidentId"`
	VMResourceID string          `json:"vmResourceId"`
	Stage        string          `json:"stage"`
	Event        string          `json:"event"`
	Detail       json.RawMessage `json:"detail,omitempty"`
	PrevHash     string          `json:"prevHash"`
	Hash         string          `json:"hash,omitempty"`
}

// ErrBrokenChain is wrapped by every *ChainError: the records were changed, removed, reordered,
// inserted or malformed.
var ErrBrokenChain = errors.New("audit chain broken")

// ChainError names the first bad line of a chain and why it is bad.
type ChainError struct {
	Line   int   // 1-based line number (index in the records + 1)
	Seq    int64 // the seq the line carries, 0 when it could not be read
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("%v at line %d (seq %d): %s", ErrBrokenChain, e.Line, e.Seq, e.Reason)
}

func (e *ChainError) Unwrap() error { return ErrBrokenChain }

// body is the canonical JSON of r without its hash: the bytes the hash covers.
func (r Record) body() ([]byte, error) {
	r.Hash = ""
	r.Time = r.Time.UTC()
	return json.Marshal(r)
}

// chainHash is hex(SHA-256(prevHash + "\n" + body)).
func chainHash(prevHash string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(prevHash))
	h.Write([]byte{'\n'})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// ComputeHash returns the hash r must carry, given its content and PrevHash.
func (r Record) ComputeHash() (string, error) {
	b, err := r.body()
	if err != nil {
		return "", err
	}
	return chainHash(r.PrevHash, b), nil
}

// seal sets r.Hash and returns r's wire line, newline included.
func (r *Record) seal() ([]byte, error) {
	b, err := r.body()
	if err != nil {
		return nil, err
	}
	r.Hash = chainHash(r.PrevHash, b)
	return appendHash(b, r.Hash), nil
}

// appendHash turns a body {...} into the line {...,"hash":"<hex>"}\n.
func appendHash(body []byte, hash string) []byte {
	line := make([]byte, 0, len(body)+len(hash)+11)
	line = append(line, body[:len(body)-1]...)
	line = append(line, `,"hash":"`...)
	line = append(line, hash...)
	line = append(line, "\"}\n"...)
	return line
}

// MarshalLine returns r's wire line (canonical JSON, newline included) as it is stored.
func (r Record) MarshalLine() ([]byte, error) {
	b, err := r.body()
	if err != nil {
		return nil, err
	}
	return appendHash(b, r.Hash), nil
}

// verifier checks records one by one.
type verifier struct {
	line     int
	prevHash string
	incident string
}

func (v *verifier) next(r Record) error {
	v.line++
	bad := func(format string, args ...any) error {
		return &ChainError{Line: v.line, Seq: r.Seq, Reason: fmt.Sprintf(format, args...)}
	}
	if v.line == 1 {
		v.prevHash = GenesisHash
		v.incident = r.IncidentID
	}
	switch {
	case r.Seq != int64(v.line):
		return bad("seq %d where %d was expected: a line was removed, inserted or reordered", r.Seq, v.line)
	case r.IncidentID != v.incident:
		return bad("incidentId %q differs from %q of line 1", r.IncidentID, v.incident)
	case r.PrevHash != v.prevHash:
		return bad("prevHash does not match the hash of the line before: a line was removed, inserted or reordered")
	}
	want, err := r.ComputeHash()
	if err != nil {
		return bad("cannot encode record: %v", err)
	}
	if r.Hash != want {
		return bad("hash does not match the record's content: the line was changed")
	}
	v.prevHash = r.Hash
	return nil
}

// Verify checks a chain read with Store.Read: seq runs 1..n, every prevHash is the hash of the
// record before (GenesisHash for the first), every hash matches its record's content, and all
// records belong to one incident. It returns a *ChainError for the first bad record.
//
// A chain alone cannot show that lines were cut off its end; VerifyIncident also checks the head
// anchor kept in the blob's index tags.
func Verify(records []Record) error {
	var v verifier
	for _, r := range records {
		if err := v.next(r); err != nil {
			return err
		}
	}
	return nil
}

// VerifyJSONL checks the raw lines of an audit blob: each line must be a well-formed record with
// no unknown field, byte for byte in canonical form (so a hand edit that keeps the JSON valid is
// still caught), end with a newline, and chain to the one before as Verify requires. It returns
// the number of records verified, and a *ChainError for the first bad line.
func VerifyJSONL(r io.Reader) (int, error) {
	br := bufio.NewReader(r)
	var v verifier
	for {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return v.line, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return v.line, fmt.Errorf("read audit lines: %w", err)
		}
		n := v.line + 1
		if err != nil { // io.EOF before a newline
			return v.line, &ChainError{Line: n, Reason: "last line has no newline: truncated or edited"}
		}
		rec, perr := parseLine(line)
		if perr != nil {
			return v.line, &ChainError{Line: n, Seq: rec.Seq, Reason: perr.Error()}
		}
		canon, cerr := rec.MarshalLine()
		if cerr != nil || !bytes.Equal(canon, line) {
			return v.line, &ChainError{Line: n, Seq: rec.Seq, Reason: "line is not in canonical form: it was edited"}
		}
		if err := v.next(rec); err != nil {
			return v.line - 1, err
		}
	}
}

// parseLine decodes one line (newline included) strictly.
func parseLine(line []byte) (Record, error) {
	var rec Record
	trimmed := bytes.TrimSuffix(line, []byte{'\n'})
	if len(bytes.TrimSpace(trimmed)) == 0 {
		return rec, errors.New("empty line")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return rec, fmt.Errorf("malformed record: %v", err)
	}
	if dec.More() {
		return rec, errors.New("malformed record: data after the JSON object")
	}
	if !isHex64(rec.Hash) {
		return rec, errors.New("malformed record: hash is not 64 hex digits")
	}
	return rec, nil
}

// parseRecords splits blob content into records, strictly. It does not check the chain.
func parseRecords(data []byte) ([]Record, error) {
	var out []Record
	for n := 1; len(data) > 0; n++ {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return out, &ChainError{Line: n, Reason: "last line has no newline: truncated or edited"}
		}
		rec, err := parseLine(data[:i+1])
		if err != nil {
			return out, &ChainError{Line: n, Seq: rec.Seq, Reason: err.Error()}
		}
		out = append(out, rec)
		data = data[i+1:]
	}
	return out, nil
}

// lastRecord parses only the final line of blob content.
func lastRecord(data []byte) (Record, error) {
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return Record{}, &ChainError{Reason: "blob does not end with a newline: truncated or edited"}
	}
	start := bytes.LastIndexByte(data[:len(data)-1], '\n') + 1
	rec, err := parseLine(data[start:])
	if err != nil {
		return rec, &ChainError{Line: bytes.Count(data[:start], []byte{'\n'}) + 1, Seq: rec.Seq, Reason: err.Error()}
	}
	return rec, nil
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	return strings.IndexFunc(s, func(r rune) bool {
		return (r < '0' || r > '9') && (r < 'a' || r > 'f')
	}) < 0
}
