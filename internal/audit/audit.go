// Package audit keeps the tamper-evident audit trail of each incident in Blob Storage.
//
// # Layout
//
// One append blob per incident, incidents/<incidentId>.jsonl, in the audit container (default
// "audit"). Each line is one JSON record, fields in this order:
//
//	{"seq":1,"time":"2026-11-20T03:14:07.123456789Z","incidentId":"inc-...","vmResourceId":"/subscriptions/...",
//	 "stage":"snapshot","event":"started","detail":{...},"prevHash":"<64 hex>","hash":"<64 hex>"}
//
// seq counts from 1; time is RFC 3339 with nanoseconds, in UTC; detail is a JSON object and is
// left out when empty; event is one of the incident.Event* constants.
//
// # Hash chain
//
// The body of a record is its line without the hash member: the same JSON up to and including
// the prevHash value, closed with "}". That is, body = the line with `,"hash":"<hex>"` removed and
// the newline dropped. Then
//
//	hash = lower-case hex of SHA-256( prevHash + "\n" + body )
//
// and the first record's prevHash is GenesisHash (64 zeros). A line is the canonical encoding
// (encoding/json, no spaces, fields in the order above) of its record, so a verifier can work on
// the raw bytes alone. A changed line breaks its own hash; a removed, inserted or reordered line
// breaks the seq run and the prevHash link of the line after it. Verify and VerifyJSONL report the
// first bad line.
//
// Cutting lines off the end leaves a valid shorter chain. To catch that, every write that changes
// the incident's state also stores the chain's head as the index tag head=<seq>:<hash>, and
// VerifyIncident checks that the chain still holds that record. The chain is evidence against
// accidental and partial tampering, not a signature: whoever can rewrite the whole blob and its
// tags can forge a consistent chain.
//
// # Index tags
//
// Each blob carries the tags vm = incident.VMKey(vmResourceId) (case-insensitive, safe for tag
// values), state = active|closed|failed|rejected, incident = the id, and head (above). Find and
// List query them with Find Blobs by Tags. In Azure the tag index is updated asynchronously, so a
// blob whose tags were just set may be missing from a query for a short while: the rule of one
// active incident per VM rests on the VM lock (package lock), not on Find.
//
// # Concurrency and cost
//
// Append reads the whole blob to learn the last seq and hash, then appends with an append-position
// condition equal to the length it read. A concurrent appender that got there first makes the
// condition fail (412 AppendPositionConditionNotMet); Append then reads again and retries, a
// bounded number of times with jittered backoff, so concurrent appenders never fork the chain. The
// blob is created with If-None-Match: *, so two first appenders never clobber each other.
// Reading the whole blob makes one Append cost O(size of the blob): a 300-line incident is about
// 150 KiB, so its 300th Append downloads 150 KiB and the incident's whole life about 22 MiB. That
// is acceptable for incidents of a few hundred lines; Append refuses blobs over maxBlobBytes.
// State-changing entries cost one more request (Set Blob Tags). Set Blob Tags is last-writer-wins:
// two state changes racing on one incident may leave the tag of the one whose record comes first.
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/appendblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/vmrescue/vmrescue/internal/incident"
)

// DefaultContainer is the contract's audit container.
const DefaultContainer = "audit"

// Index tag names on each incident blob.
const (
	TagVM       = "vm"
	TagState    = "state"
	TagIncident = "incident"
	TagHead     = "head"
)

const (
	blobPrefix = "incidents/"
	blobSuffix = ".jsonl"

	// appendTimeout bounds one Append, retries included.
	appendTimeout = 30 * time.Second
	// maxAppendAttempts bounds the retries of an Append that loses the race for the blob's end.
	maxAppendAttempts = 40
	// appendBackoffBase and appendBackoffMax shape the jittered backoff between those retries.
	appendBackoffBase = 2 * time.Millisecond
	appendBackoffMax  = 100 * time.Millisecond
	// maxBlobBytes bounds how much of an incident blob is read into memory.
	maxBlobBytes = 16 << 20
)

// ErrNotFound is wrapped by errors for an incident that has no audit blob or no record yet.
var ErrNotFound = errors.New("incident not found")

// Entry is what a caller records; Append adds seq, time, the incident id and the hashes.
type Entry struct {
	VMResourceID string
	Stage        string
	Event        string
	// Detail is encoded as a JSON object (a struct, a map or a json.RawMessage holding an object).
	// nil, null and {} are left out of the record.
	Detail any
	// State is the new value of the incident's state tag; "" keeps it. The first Append of an
	// incident creates it with this state, or active when "".
	State string
}

// Store reads and writes incident audit blobs in one container.
type Store struct {
	c   Container
	now func() time.Time
}

// New returns a Store on the named container of the account behind client.
func New(client *azblob.Client, containerName string) *Store {
	return NewFrom(sdkContainer{client.ServiceClient().NewContainerClient(containerName)})
}

// NewFrom returns a Store on any Container, such as memblob's in-memory one.
func NewFrom(c Container) *Store {
	return &Store{c: c, now: time.Now}
}

// EnsureContainer creates the container if it does not exist.
func (s *Store) EnsureContainer(ctx context.Context) error {
	_, err := s.c.Create(ctx, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("create audit container: %w", err)
	}
	return nil
}

// BlobName is the name of an incident's audit blob.
func BlobName(incidentID string) string { return blobPrefix + incidentID + blobSuffix }

func idFromBlobName(name string) (string, bool) {
	id, ok := strings.CutPrefix(name, blobPrefix)
	if !ok {
		return "", false
	}
	id, ok = strings.CutSuffix(id, blobSuffix)
	return id, ok && incident.ValidID(id)
}

func validEvent(e string) bool {
	switch e {
	case incident.EventOpened, incident.EventStarted, incident.EventSucceeded, incident.EventSkipped,
		incident.EventRetrying, incident.EventFailed, incident.EventRejected, incident.EventClosed,
		incident.EventRolledBack, incident.EventSignal:
		return true
	}
	return false
}

func validState(s string) bool {
	switch s {
	case incident.StateActive, incident.StateClosed, incident.StateFailed, incident.StateRejected:
		return true
	}
	return false
}

// encodeDetail turns Entry.Detail into a compact JSON object, or nil when empty.
func encodeDetail(d any) (json.RawMessage, error) {
	if d == nil {
		return nil, nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode detail: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, fmt.Errorf("encode detail: %w", err)
	}
	b = buf.Bytes()
	switch {
	case string(b) == "null" || string(b) == "{}":
		return nil, nil
	case b[0] != '{':
		return nil, fmt.Errorf("detail must be a JSON object, got %.20s", b)
	}
	return b, nil
}

// Append adds one record to the incident's chain and returns it as written. It creates the blob
// on the incident's first record, and updates the state tag when e.State is set.
func (s *Store) Append(ctx context.Context, incidentID string, e Entry) (Record, error) {
	switch {
	case !incident.ValidID(incidentID):
		return Record{}, fmt.Errorf("audit append: invalid incident id %q", incidentID)
	case e.VMResourceID == "" && e.Event != incident.EventRejected:
		// Only a rejection may lack a VM: an input so broken that it names none is still recorded.
		return Record{}, fmt.Errorf("audit append %s: empty vmResourceId", incidentID)
	case !validEvent(e.Event):
		return Record{}, fmt.Errorf("audit append %s: unknown event %q", incidentID, e.Event)
	case e.State != "" && !validState(e.State):
		return Record{}, fmt.Errorf("audit append %s: unknown state %q", incidentID, e.State)
	}
	detail, err := encodeDetail(e.Detail)
	if err != nil {
		return Record{}, fmt.Errorf("audit append %s: %w", incidentID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, appendTimeout)
	defer cancel()

	ab := s.c.NewAppendBlob(BlobName(incidentID))
	// The last line tried and where. When an append succeeded but its response was lost, the SDK's
	// retry or ours meets a failed position condition: finding the line in place means it was
	// written, and it is not written twice.
	var tried []byte
	var triedAt int
	var triedRec Record
	for attempt := range maxAppendAttempts {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return Record{}, fmt.Errorf("audit append %s: %w", incidentID, err)
			}
		}
		data, err := download(ctx, ab)
		if errors.Is(err, ErrNotFound) {
			data, err = nil, s.create(ctx, ab, incidentID, e)
			if errors.Is(err, errExists) {
				continue // another writer created it: read what it wrote
			}
		}
		if err != nil {
			return Record{}, fmt.Errorf("audit append %s: %w", incidentID, err)
		}
		if tried != nil && len(data) >= triedAt+len(tried) && bytes.Equal(data[triedAt:triedAt+len(tried)], tried) {
			return s.finish(ctx, ab, triedRec, e.State)
		}
		rec := Record{
			Seq:          1,
			Time:         s.now().UTC(),
			IncidentID:   incidentID,
			VMResourceID: e.VMResourceID,
			Stage:        e.Stage,
			Event:        e.Event,
			Detail:       detail,
			PrevHash:     GenesisHash,
		}
		if len(data) > 0 {
			last, err := lastRecord(data)
			if err != nil {
				return Record{}, fmt.Errorf("audit append %s: %w", incidentID, err)
			}
			rec.Seq, rec.PrevHash = last.Seq+1, last.Hash
		}
		line, err := rec.seal()
		if err != nil {
			return Record{}, fmt.Errorf("audit append %s: encode record: %w", incidentID, err)
		}
		tried, triedAt, triedRec = line, len(data), rec
		_, err = ab.AppendBlock(ctx, nopCloser{bytes.NewReader(line)}, &appendblob.AppendBlockOptions{
			AppendPositionAccessConditions: &appendblob.AppendPositionAccessConditions{
				AppendPosition: to.Ptr(int64(len(data))),
			},
		})
		if bloberror.HasCode(err, bloberror.AppendPositionConditionNotMet, bloberror.ConditionNotMet) {
			continue // someone appended since the read
		}
		if err != nil {
			return Record{}, fmt.Errorf("audit append %s: append block: %w", incidentID, err)
		}
		return s.finish(ctx, ab, rec, e.State)
	}
	return Record{}, fmt.Errorf("audit append %s: still racing other writers after %d attempts", incidentID, maxAppendAttempts)
}

// finish sets the state tag, with the head anchor, after rec was appended.
func (s *Store) finish(ctx context.Context, ab AppendBlob, rec Record, state string) (Record, error) {
	if state == "" {
		return rec, nil
	}
	_, err := ab.SetTags(ctx, map[string]string{
		TagVM:       incident.VMKey(rec.VMResourceID),
		TagState:    state,
		TagIncident: rec.IncidentID,
		TagHead:     strconv.FormatInt(rec.Seq, 10) + ":" + rec.Hash,
	}, nil)
	if err != nil {
		return rec, fmt.Errorf("audit append %s: record %d written, state tag not set: %w", rec.IncidentID, rec.Seq, err)
	}
	return rec, nil
}

var errExists = errors.New("blob exists")

func (s *Store) create(ctx context.Context, ab AppendBlob, incidentID string, e Entry) error {
	err := s.createBlob(ctx, ab, incidentID, e)
	if bloberror.HasCode(err, bloberror.ContainerNotFound) {
		// The first write of a new deployment can race the start-up creation of the container.
		if err := s.EnsureContainer(ctx); err != nil {
			return err
		}
		err = s.createBlob(ctx, ab, incidentID, e)
	}
	return err
}

func (s *Store) createBlob(ctx context.Context, ab AppendBlob, incidentID string, e Entry) error {
	state := e.State
	if state == "" {
		state = incident.StateActive
	}
	_, err := ab.Create(ctx, &appendblob.CreateOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("application/x-ndjson")},
		Tags: map[string]string{
			TagVM:       incident.VMKey(e.VMResourceID),
			TagState:    state,
			TagIncident: incidentID,
		},
		AccessConditions: &blob.AccessConditions{
			ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)},
		},
	})
	if bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		return errExists
	}
	if err != nil {
		return fmt.Errorf("create blob: %w", err)
	}
	return nil
}

// backoff waits a random time up to min(base*2^attempt, max).
func backoff(ctx context.Context, attempt int) error {
	limit := appendBackoffMax
	if attempt < 16 {
		limit = min(appendBackoffBase<<attempt, appendBackoffMax)
	}
	t := time.NewTimer(rand.N(limit) + 1)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// download reads a whole blob; ErrNotFound when it does not exist.
func download(ctx context.Context, ab AppendBlob) ([]byte, error) {
	resp, err := ab.DownloadStream(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBlobBytes+1))
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	if len(data) > maxBlobBytes {
		return nil, fmt.Errorf("download: blob larger than %d bytes", maxBlobBytes)
	}
	return data, nil
}

// ReadRaw returns the incident blob's bytes as stored.
func (s *Store) ReadRaw(ctx context.Context, incidentID string) ([]byte, error) {
	if !incident.ValidID(incidentID) {
		return nil, fmt.Errorf("audit read: invalid incident id %q: %w", incidentID, ErrNotFound)
	}
	data, err := download(ctx, s.c.NewAppendBlob(BlobName(incidentID)))
	if err == nil && len(data) == 0 {
		err = ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("audit read %s: %w", incidentID, err)
	}
	return data, nil
}

// Read returns the incident's records in order. It parses every line strictly but does not check
// the chain: call Verify for that. The error wraps ErrNotFound when the incident has no record.
func (s *Store) Read(ctx context.Context, incidentID string) ([]Record, error) {
	data, err := s.ReadRaw(ctx, incidentID)
	if err != nil {
		return nil, err
	}
	recs, err := parseRecords(data)
	if err != nil {
		return nil, fmt.Errorf("audit read %s: %w", incidentID, err)
	}
	return recs, nil
}

// Tags returns the incident blob's index tags.
func (s *Store) Tags(ctx context.Context, incidentID string) (map[string]string, error) {
	if !incident.ValidID(incidentID) {
		return nil, fmt.Errorf("audit tags: invalid incident id %q: %w", incidentID, ErrNotFound)
	}
	resp, err := s.c.NewAppendBlob(BlobName(incidentID)).GetTags(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		err = ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("audit tags %s: %w", incidentID, err)
	}
	tags := make(map[string]string, len(resp.BlobTagSet))
	for _, t := range resp.BlobTagSet {
		if t != nil && t.Key != nil && t.Value != nil {
			tags[*t.Key] = *t.Value
		}
	}
	return tags, nil
}

// State returns the incident's state tag.
func (s *Store) State(ctx context.Context, incidentID string) (string, error) {
	tags, err := s.Tags(ctx, incidentID)
	if err != nil {
		return "", err
	}
	return tags[TagState], nil
}

// VerifyIncident reads an incident's blob and checks its chain (VerifyJSONL) and its head anchor:
// the record named by the head tag must still be there with the same hash. It returns the number
// of records verified.
func VerifyIncident(ctx context.Context, s *Store, incidentID string) (int, error) {
	// Tags first: a head set after this read names a record the later blob read includes.
	tags, err := s.Tags(ctx, incidentID)
	if err != nil {
		return 0, err
	}
	data, err := s.ReadRaw(ctx, incidentID)
	if err != nil {
		return 0, err
	}
	n, err := VerifyJSONL(bytes.NewReader(data))
	if err != nil {
		return n, fmt.Errorf("audit verify %s: %w", incidentID, err)
	}
	head, ok := tags[TagHead]
	if !ok {
		return n, nil
	}
	seqStr, hash, _ := strings.Cut(head, ":")
	seq, err := strconv.ParseInt(seqStr, 10, 64)
	if err != nil || seq < 1 || !isHex64(hash) {
		return n, fmt.Errorf("audit verify %s: malformed head tag %q: %w", incidentID, head, ErrBrokenChain)
	}
	if seq > int64(n) {
		return n, fmt.Errorf("audit verify %s: %w", incidentID, &ChainError{Line: n, Seq: int64(n),
			Reason: fmt.Sprintf("chain ends at seq %d but its head tag names seq %d: lines were removed from the end", n, seq)})
	}
	recs, err := parseRecords(data)
	if err != nil {
		return n, fmt.Errorf("audit verify %s: %w", incidentID, err)
	}
	if recs[seq-1].Hash != hash {
		return n, fmt.Errorf("audit verify %s: %w", incidentID, &ChainError{Line: int(seq), Seq: seq,
			Reason: "hash differs from the head tag: the chain was rewritten"})
	}
	return n, nil
}

// Find returns the ids of the incidents of a VM, by index tags, optionally only those in a state
// ("" = any). Ids are sorted, which is opening order.
func (s *Store) Find(ctx context.Context, vmResourceID, state string) ([]string, error) {
	if vmResourceID == "" {
		return nil, errors.New("audit find: empty vmResourceId")
	}
	where := fmt.Sprintf("%q = '%s'", TagVM, incident.VMKey(vmResourceID))
	if state != "" {
		if !validState(state) {
			return nil, fmt.Errorf("audit find: unknown state %q", state)
		}
		where += fmt.Sprintf(" AND %q = '%s'", TagState, state)
	}
	ids, err := s.filter(ctx, where)
	if err != nil {
		return nil, fmt.Errorf("audit find: %w", err)
	}
	return ids, nil
}

// List returns the ids of all incidents, optionally only those in a state ("" = any), sorted.
// With a state it queries the index tags; without, it lists the blobs.
func (s *Store) List(ctx context.Context, state string) ([]string, error) {
	if state != "" {
		if !validState(state) {
			return nil, fmt.Errorf("audit list: unknown state %q", state)
		}
		ids, err := s.filter(ctx, fmt.Sprintf("%q = '%s'", TagState, state))
		if err != nil {
			return nil, fmt.Errorf("audit list: %w", err)
		}
		return ids, nil
	}
	var ids []string
	pager := s.c.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr(blobPrefix)})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("audit list: %w", err)
		}
		if page.Segment == nil {
			continue
		}
		for _, b := range page.Segment.BlobItems {
			if b != nil && b.Name != nil {
				if id, ok := idFromBlobName(*b.Name); ok {
					ids = append(ids, id)
				}
			}
		}
	}
	slices.Sort(ids)
	return ids, nil
}

func (s *Store) filter(ctx context.Context, where string) ([]string, error) {
	var ids []string
	var marker *string
	for {
		resp, err := s.c.FilterBlobs(ctx, where, &container.FilterBlobsOptions{Marker: marker})
		if err != nil {
			return nil, fmt.Errorf("find blobs by tags %s: %w", where, err)
		}
		for _, b := range resp.Blobs {
			if b != nil && b.Name != nil {
				if id, ok := idFromBlobName(*b.Name); ok {
					ids = append(ids, id)
				}
			}
		}
		if resp.NextMarker == nil || *resp.NextMarker == "" {
			break
		}
		marker = resp.NextMarker
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}
