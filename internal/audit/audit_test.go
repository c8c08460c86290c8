package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/appendblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/audit/memblob"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/incident"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestMain(m *testing.M) { azuritetest.Main(m) }

const testVM = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-prod/providers/Microsoft.Compute/virtualMachines/vm-web-01"

// sdkContainer gives tests raw access to an Azurite container through audit.Container.
type sdkContainer struct{ *container.Client }

func (c sdkContainer) NewAppendBlob(name string) audit.AppendBlob { return c.NewAppendBlobClient(name) }

// backend is one place the behavioural tests run: real Azurite, and the in-memory fake that must
// behave the same.
type backend struct {
	name  string
	store *audit.Store
	raw   audit.Container
}

func backends(t *testing.T) []backend {
	t.Helper()
	ctx := context.Background()
	client := azuritetest.Client(t)
	name := azuritetest.Container(t, "audit")
	azure := backend{"azurite", audit.New(client, name), sdkContainer{client.ServiceClient().NewContainerClient(name)}}
	mem := memblob.New()
	fake := backend{"memblob", audit.NewFrom(mem), mem}
	for _, b := range []backend{azure, fake} {
		if err := b.store.EnsureContainer(ctx); err != nil {
			t.Fatalf("%s: EnsureContainer: %v", b.name, err)
		}
		if err := b.store.EnsureContainer(ctx); err != nil {
			t.Fatalf("%s: second EnsureContainer: %v", b.name, err)
		}
	}
	return []backend{azure, fake}
}

// forEachBackend runs fn against Azurite and against memblob.
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

func newID(t *testing.T) string {
	t.Helper()
	return incident.NewID(time.Now())
}

func mustAppend(t *testing.T, s *audit.Store, id string, e audit.Entry) audit.Record {
	t.Helper()
	rec, err := s.Append(context.Background(), id, e)
	if err != nil {
		t.Fatalf("Append %s %s: %v", id, e.Event, err)
	}
	return rec
}

// openClosedIncident writes a five-record incident that ends closed.
func openClosedIncident(t *testing.T, s *audit.Store) (string, []audit.Record) {
	t.Helper()
	id := newID(t)
	entries := []audit.Entry{
		{VMResourceID: testVM, Stage: "intake", Event: incident.EventOpened, State: incident.StateActive,
			Detail: map[string]any{"trigger": "alert", "annotation": "VirtualMachineCrashed"}},
		{VMResourceID: testVM, Stage: string(incident.StageSnapshot), Event: incident.EventStarted},
		{VMResourceID: testVM, Stage: string(incident.StageSnapshot), Event: incident.EventSucceeded,
			Detail: json.RawMessage(`{ "snapshotId": "/subscriptions/x/snap" }`)},
		{VMResourceID: testVM, Stage: string(incident.StageSupportTicket), Event: incident.EventStarted, Detail: map[string]any{}},
		{VMResourceID: testVM, Stage: string(incident.StageSupportTicket), Event: incident.EventClosed, State: incident.StateClosed,
			Detail: struct {
				Outcome string `json:"outcome"`
			}{incident.OutcomeTicketed}},
	}
	var recs []audit.Record
	for _, e := range entries {
		recs = append(recs, mustAppend(t, s, id, e))
	}
	return id, recs
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		id, written := openClosedIncident(t, b.store)

		got, err := b.store.Read(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(written) {
			t.Fatalf("Read: %d records, want %d", len(got), len(written))
		}
		for i, r := range got {
			w := written[i]
			if r.Seq != int64(i+1) || r.IncidentID != id || r.VMResourceID != testVM || r.Stage != w.Stage ||
				r.Event != w.Event || !r.Time.Equal(w.Time) || r.Time.Location() != time.UTC ||
				!bytes.Equal(r.Detail, w.Detail) || r.PrevHash != w.PrevHash || r.Hash != w.Hash {
				t.Errorf("record %d read back as %+v, written as %+v", i+1, r, w)
			}
		}
		if got[0].PrevHash != audit.GenesisHash {
			t.Errorf("first prevHash %q, want GenesisHash", got[0].PrevHash)
		}
		for i := 1; i < len(got); i++ {
			if got[i].PrevHash != got[i-1].Hash {
				t.Errorf("record %d prevHash does not link to record %d", i+1, i)
			}
		}
		if string(got[0].Detail) != `{"annotation":"VirtualMachineCrashed","trigger":"alert"}` {
			t.Errorf("detail 1 = %s", got[0].Detail)
		}
		if got[1].Detail != nil || got[3].Detail != nil {
			t.Errorf("empty details were stored: %s, %s", got[1].Detail, got[3].Detail)
		}
		if string(got[2].Detail) != `{"snapshotId":"/subscriptions/x/snap"}` {
			t.Errorf("detail 3 not compacted: %s", got[2].Detail)
		}
		if err := audit.Verify(got); err != nil {
			t.Errorf("Verify: %v", err)
		}
		n, err := audit.VerifyIncident(ctx, b.store, id)
		if err != nil || n != len(written) {
			t.Errorf("VerifyIncident = %d, %v; want %d, nil", n, err, len(written))
		}
		tags, err := b.store.Tags(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			audit.TagVM:       incident.VMKey(testVM),
			audit.TagState:    incident.StateClosed,
			audit.TagIncident: id,
			audit.TagHead:     fmt.Sprintf("5:%s", written[4].Hash),
		}
		for k, v := range want {
			if tags[k] != v {
				t.Errorf("tag %s = %q, want %q", k, tags[k], v)
			}
		}
		if st, err := b.store.State(ctx, id); err != nil || st != incident.StateClosed {
			t.Errorf("State = %q, %v; want closed", st, err)
		}
	})
}

func TestErrors(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		unknown := newID(t)
		if _, err := b.store.Read(ctx, unknown); !errors.Is(err, audit.ErrNotFound) {
			t.Errorf("Read of unknown incident: %v, want ErrNotFound", err)
		}
		if _, err := b.store.State(ctx, unknown); !errors.Is(err, audit.ErrNotFound) {
			t.Errorf("State of unknown incident: %v, want ErrNotFound", err)
		}
		if _, err := audit.VerifyIncident(ctx, b.store, unknown); !errors.Is(err, audit.ErrNotFound) {
			t.Errorf("VerifyIncident of unknown incident: %v, want ErrNotFound", err)
		}
		if _, err := b.store.Read(ctx, "../etc/passwd"); !errors.Is(err, audit.ErrNotFound) {
			t.Errorf("Read of a malformed id: %v, want ErrNotFound", err)
		}
		id := newID(t)
		bad := []struct {
			name string
			id   string
			e    audit.Entry
		}{
			{"invalid id", "inc-../x", audit.Entry{VMResourceID: testVM, Event: incident.EventOpened}},
			{"no vm", id, audit.Entry{Event: incident.EventOpened}},
			{"unknown event", id, audit.Entry{VMResourceID: testVM, Event: "exploded"}},
			{"unknown state", id, audit.Entry{VMResourceID: testVM, Event: incident.EventOpened, State: "paused"}},
			{"detail not an object", id, audit.Entry{VMResourceID: testVM, Event: incident.EventOpened, Detail: []int{1}}},
			{"detail not JSON", id, audit.Entry{VMResourceID: testVM, Event: incident.EventOpened, Detail: json.RawMessage(`{`)}},
		}
		for _, tc := range bad {
			if _, err := b.store.Append(ctx, tc.id, tc.e); err == nil {
				t.Errorf("%s: Append succeeded", tc.name)
			}
		}
		if _, err := b.store.Read(ctx, id); !errors.Is(err, audit.ErrNotFound) {
			t.Errorf("refused appends left a record: %v", err)
		}
		if _, err := b.store.Find(ctx, testVM, "paused"); err == nil {
			t.Error("Find with an unknown state succeeded")
		}
	})
}

// rewrite replaces the incident's blob with content, keeping its index tags, as someone with
// write access to the container could.
func rewrite(t *testing.T, b backend, id string, content []byte) {
	t.Helper()
	ctx := context.Background()
	tags, err := b.store.Tags(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	ab := b.raw.NewAppendBlob(audit.BlobName(id))
	if _, err := ab.Create(ctx, &appendblob.CreateOptions{Tags: tags}); err != nil {
		t.Fatal(err)
	}
	if len(content) > 0 {
		if _, err := ab.AppendBlock(ctx, readSeekNopCloser{bytes.NewReader(content)}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

type readSeekNopCloser struct{ *bytes.Reader }

func (readSeekNopCloser) Close() error { return nil }

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		out = append(out, bytes.Clone(b[:i+1]))
		b = b[i+1:]
	}
	return out
}

func chainLine(t *testing.T, err error) int {
	t.Helper()
	var ce *audit.ChainError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *ChainError", err)
	}
	if !errors.Is(err, audit.ErrBrokenChain) {
		t.Errorf("error %v does not wrap ErrBrokenChain", err)
	}
	return ce.Line
}

func TestTamper(t *testing.T) {
	t.Parallel()
	// forge re-encodes line i after edit, with a freshly computed hash, as someone who knows the
	// algorithm would.
	forge := func(t *testing.T, line []byte, edit func(*audit.Record)) []byte {
		var r audit.Record
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		edit(&r)
		h, err := r.ComputeHash()
		if err != nil {
			t.Fatal(err)
		}
		r.Hash = h
		out, err := r.MarshalLine()
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cases := []struct {
		name string
		edit func(t *testing.T, lines [][]byte) [][]byte
		// Line numbers of the first error each check must report; 0 means the check passes.
		readLine     int // Store.Read (strict parse)
		verifyLine   int // Verify over what Read returned
		jsonlLine    int // VerifyJSONL over the raw blob
		incidentFail bool
	}{
		{
			name: "changed field",
			edit: func(t *testing.T, l [][]byte) [][]byte {
				l[1] = bytes.Replace(l[1], []byte(`"event":"started"`), []byte(`"event":"skipped"`), 1)
				return l
			},
			verifyLine: 2, jsonlLine: 2, incidentFail: true,
		},
		{
			name: "changed detail",
			edit: func(t *testing.T, l [][]byte) [][]byte {
				l[2] = bytes.Replace(l[2], []byte(`/subscriptions/x/snap`), []byte(`/subscriptions/y/snap`), 1)
				return l
			},
			verifyLine: 3, jsonlLine: 3, incidentFail: true,
		},
		{
			name: "changed line re-hashed",
			edit: func(t *testing.T, l [][]byte) [][]byte {
				l[2] = forge(t, l[2], func(r *audit.Record) { r.Event = incident.EventSkipped })
				return l
			},
			verifyLine: 4, jsonlLine: 4, incidentFail: true,
		},
		{
			name:       "removed line",
			edit:       func(t *testing.T, l [][]byte) [][]byte { return slices.Delete(l, 2, 3) },
			verifyLine: 3, jsonlLine: 3, incidentFail: true,
		},
		{
			name:       "removed first line",
			edit:       func(t *testing.T, l [][]byte) [][]byte { return l[1:] },
			verifyLine: 1, jsonlLine: 1, incidentFail: true,
		},
		{
			name:         "removed last line",
			edit:         func(t *testing.T, l [][]byte) [][]byte { return l[:len(l)-1] },
			incidentFail: true, // the chain is valid but shorter than its head tag
		},
		{
			name: "swapped lines",
			edit: func(t *testing.T, l [][]byte) [][]byte {
				l[1], l[2] = l[2], l[1]
				return l
			},
			verifyLine: 2, jsonlLine: 2, incidentFail: true,
		},
		{
			name:       "duplicated line",
			edit:       func(t *testing.T, l [][]byte) [][]byte { return slices.Insert(l, 2, bytes.Clone(l[1])) },
			verifyLine: 3, jsonlLine: 3, incidentFail: true,
		},
		{
			name: "inserted forged line",
			edit: func(t *testing.T, l [][]byte) [][]byte {
				forged := forge(t, l[1], func(r *audit.Record) {
					var prev audit.Record
					_ = json.Unmarshal(l[1], &prev)
					r.Seq, r.PrevHash, r.Event = 3, prev.Hash, incident.EventSucceeded
				})
				return slices.Insert(l, 2, forged)
			},
			verifyLine: 4, jsonlLine: 4, incidentFail: true,
		},
		{
			name: "whitespace added",
			edit: func(t *testing.T, l [][]byte) [][]byte {
				l[3] = bytes.Replace(l[3], []byte(`,"event"`), []byte(`, "event"`), 1)
				return l
			},
			jsonlLine: 4, incidentFail: true, // same record, but not the bytes that were hashed
		},
		{
			name: "malformed line",
			edit: func(t *testing.T, l [][]byte) [][]byte {
				l[1] = append(l[1][:20:20], '\n')
				return l
			},
			readLine: 2, jsonlLine: 2, incidentFail: true,
		},
		{
			name: "unknown field",
			edit: func(t *testing.T, l [][]byte) [][]byte {
				l[1] = bytes.Replace(l[1], []byte(`{"seq"`), []byte(`{"approved":true,"seq"`), 1)
				return l
			},
			readLine: 2, jsonlLine: 2, incidentFail: true,
		},
		{
			name: "missing final newline",
			edit: func(t *testing.T, l [][]byte) [][]byte {
				l[4] = bytes.TrimSuffix(l[4], []byte{'\n'})
				return l
			},
			readLine: 5, jsonlLine: 5, incidentFail: true,
		},
	}
	forEachBackend(t, func(t *testing.T, b backend) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				id, _ := openClosedIncident(t, b.store)
				raw, err := b.store.ReadRaw(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if n, err := audit.VerifyJSONL(bytes.NewReader(raw)); err != nil || n != 5 {
					t.Fatalf("untouched chain: VerifyJSONL = %d, %v", n, err)
				}
				rewrite(t, b, id, bytes.Join(tc.edit(t, splitLines(raw)), nil))

				recs, err := b.store.Read(ctx, id)
				switch {
				case tc.readLine != 0:
					if err == nil {
						t.Fatalf("Read accepted the edited blob")
					}
					if got := chainLine(t, err); got != tc.readLine {
						t.Errorf("Read reported line %d, want %d: %v", got, tc.readLine, err)
					}
				case err != nil:
					t.Fatalf("Read: %v", err)
				default:
					err := audit.Verify(recs)
					if tc.verifyLine == 0 && err != nil {
						t.Errorf("Verify: %v", err)
					}
					if tc.verifyLine != 0 {
						if err == nil {
							t.Fatalf("Verify accepted the edited chain")
						}
						if got := chainLine(t, err); got != tc.verifyLine {
							t.Errorf("Verify reported line %d, want %d: %v", got, tc.verifyLine, err)
						}
					}
				}

				edited, err := b.store.ReadRaw(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				_, err = audit.VerifyJSONL(bytes.NewReader(edited))
				if tc.jsonlLine == 0 && err != nil {
					t.Errorf("VerifyJSONL: %v", err)
				}
				if tc.jsonlLine != 0 {
					if err == nil {
						t.Fatalf("VerifyJSONL accepted the edited blob")
					}
					if got := chainLine(t, err); got != tc.jsonlLine {
						t.Errorf("VerifyJSONL reported line %d, want %d: %v", got, tc.jsonlLine, err)
					}
				}

				_, err = audit.VerifyIncident(ctx, b.store, id)
				if tc.incidentFail != (err != nil) {
					t.Errorf("VerifyIncident = %v, want failure %v", err, tc.incidentFail)
				}
				if err != nil && !errors.Is(err, audit.ErrBrokenChain) {
					t.Errorf("VerifyIncident error %v does not wrap ErrBrokenChain", err)
				}
			})
		}
	})
}

func TestConcurrentAppenders(t *testing.T) {
	t.Parallel()
	const writers, each = 8, 10
	forEachBackend(t, func(t *testing.T, b backend) {
		t.Parallel()
		ctx := context.Background()
		id := newID(t) // no blob yet: the writers also race to create it
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					_, err := b.store.Append(ctx, id, audit.Entry{
						VMResourceID: testVM, Stage: "test", Event: incident.EventSignal,
						Detail: map[string]int{"writer": w, "i": i},
					})
					if err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("Append: %v", err)
		}
		recs, err := b.store.Read(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != writers*each {
			t.Fatalf("%d records, want %d", len(recs), writers*each)
		}
		if err := audit.Verify(recs); err != nil {
			t.Fatalf("Verify: %v", err)
		}
		seen := map[string]int{}
		for _, r := range recs {
			seen[string(r.Detail)]++
		}
		for w := range writers {
			for i := range each {
				k := fmt.Sprintf(`{"i":%d,"writer":%d}`, i, w)
				if seen[k] != 1 {
					t.Errorf("record %s written %d times, want once", k, seen[k])
				}
			}
		}
		if n, err := audit.VerifyIncident(ctx, b.store, id); err != nil || n != writers*each {
			t.Errorf("VerifyIncident = %d, %v", n, err)
		}
	})
}

// replayContainer makes the first AppendBlock behave as if its response was lost and the client
// sent it again: the block is written, and the caller sees the second attempt's answer.
type replayContainer struct {
	audit.Container
	once sync.Once
}

func (c *replayContainer) NewAppendBlob(name string) audit.AppendBlob {
	return &replayBlob{AppendBlob: c.Container.NewAppendBlob(name), c: c}
}

type replayBlob struct {
	audit.AppendBlob
	c *replayContainer
}

func (b *replayBlob) AppendBlock(ctx context.Context, body io.ReadSeekCloser, o *appendblob.AppendBlockOptions) (appendblob.AppendBlockResponse, error) {
	resp, err := b.AppendBlob.AppendBlock(ctx, body, o)
	replayed := false
	b.c.once.Do(func() { replayed = true })
	if err != nil || !replayed {
		return resp, err
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return resp, err
	}
	return b.AppendBlob.AppendBlock(ctx, body, o)
}

func TestAppendResponseLost(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		store := audit.NewFrom(&replayContainer{Container: b.raw})
		id := newID(t)
		mustAppend(t, b.store, id, audit.Entry{VMResourceID: testVM, Stage: "intake", Event: incident.EventOpened})
		rec := mustAppend(t, store, id, audit.Entry{VMResourceID: testVM, Stage: "snapshot", Event: incident.EventStarted})
		mustAppend(t, store, id, audit.Entry{VMResourceID: testVM, Stage: "snapshot", Event: incident.EventSucceeded})
		recs, err := b.store.Read(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 3 || recs[1].Hash != rec.Hash || recs[2].Event != incident.EventSucceeded {
			t.Fatalf("records after a lost response: %+v", recs)
		}
		if err := audit.Verify(recs); err != nil {
			t.Error(err)
		}
	})
}

func TestFindAndList(t *testing.T) {
	t.Parallel()
	vm1 := testVM
	vm1Upper := strings.ToUpper(testVM)
	vm2 := strings.Replace(testVM, "vm-web-01", "vm-web-02", 1)
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		open := func(vm, state string) string {
			id := newID(t)
			mustAppend(t, b.store, id, audit.Entry{VMResourceID: vm, Stage: "intake", Event: incident.EventOpened})
			if state != "" {
				mustAppend(t, b.store, id, audit.Entry{VMResourceID: vm, Stage: "test", Event: incident.EventClosed, State: state})
			}
			return id
		}
		active1 := open(vm1, "")
		closed1 := open(vm1, incident.StateClosed)
		activeUpper := open(vm1Upper, "")
		failed2 := open(vm2, incident.StateFailed)
		rejected := newID(t)
		mustAppend(t, b.store, rejected, audit.Entry{VMResourceID: vm2, Stage: "intake", Event: incident.EventRejected, State: incident.StateRejected})

		sorted := func(ids ...string) []string { return slices.Sorted(slices.Values(ids)) }
		cases := []struct {
			name string
			run  func() ([]string, error)
			want []string
		}{
			{"vm1 any state", func() ([]string, error) { return b.store.Find(ctx, vm1, "") }, sorted(active1, closed1, activeUpper)},
			{"vm1 upper-case active", func() ([]string, error) { return b.store.Find(ctx, vm1Upper, incident.StateActive) }, sorted(active1, activeUpper)},
			{"vm1 closed", func() ([]string, error) { return b.store.Find(ctx, vm1, incident.StateClosed) }, sorted(closed1)},
			{"vm1 failed", func() ([]string, error) { return b.store.Find(ctx, vm1, incident.StateFailed) }, nil},
			{"vm2 any state", func() ([]string, error) { return b.store.Find(ctx, vm2, "") }, sorted(failed2, rejected)},
			{"list all", func() ([]string, error) { return b.store.List(ctx, "") }, sorted(active1, closed1, activeUpper, failed2, rejected)},
			{"list active", func() ([]string, error) { return b.store.List(ctx, incident.StateActive) }, sorted(active1, activeUpper)},
			{"list failed", func() ([]string, error) { return b.store.List(ctx, incident.StateFailed) }, sorted(failed2)},
			{"list rejected", func() ([]string, error) { return b.store.List(ctx, incident.StateRejected) }, sorted(rejected)},
		}
		for _, tc := range cases {
			got, err := tc.run()
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
			}
		}
		for id, want := range map[string]string{active1: incident.StateActive, closed1: incident.StateClosed, rejected: incident.StateRejected} {
			if st, err := b.store.State(ctx, id); err != nil || st != want {
				t.Errorf("State(%s) = %q, %v; want %q", id, st, err, want)
			}
		}
	})
}

// TestGolden pins the wire format of records as written to Azurite. Run with -update to refresh.
func TestGolden(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := audit.New(azuritetest.Client(t), azuritetest.Container(t, "golden"))
	if err := store.EnsureContainer(ctx); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 20, 3, 14, 7, 123456789, time.FixedZone("CET", 3600))
	n := 0
	audit.SetClock(store, func() time.Time {
		n++
		return base.Add(time.Duration(n-1) * 1500 * time.Millisecond)
	})
	const id = "inc-20261120-021407-7f3c"
	for _, e := range []audit.Entry{
		{VMResourceID: testVM, Stage: "intake", Event: incident.EventOpened, State: incident.StateActive,
			Detail: incident.Trigger{Kind: incident.TriggerAlert, EventID: "5b2c", Annotation: "VirtualMachineCrashed"}},
		{VMResourceID: testVM, Stage: string(incident.StageSnapshot), Event: incident.EventStarted},
		{VMResourceID: testVM, Stage: string(incident.StageSnapshot), Event: incident.EventFailed, State: incident.StateFailed,
			Detail: map[string]string{"reason": "VM <vm-web-01> & disk: \"encrypted\""}},
	} {
		mustAppend(t, store, id, e)
	}
	got, err := store.ReadRaw(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "record.golden.jsonl")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("wire format changed (run with -update if intended)\ngot:\n%s\nwant:\n%s", got, want)
	}
	if n, err := audit.VerifyJSONL(bytes.NewReader(want)); err != nil || n != 3 {
		t.Errorf("golden file does not verify: %d, %v", n, err)
	}
}

func TestVerifyJSONLInput(t *testing.T) {
	t.Parallel()
	golden, err := os.ReadFile(filepath.Join("testdata", "record.golden.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		in       string
		wantN    int
		wantLine int // 0: no error
	}{
		{"empty", "", 0, 0},
		{"golden", string(golden), 3, 0},
		{"blank line", "\n", 0, 1},
		{"not JSON", "hello\n", 0, 1},
		{"JSON array", "[]\n", 0, 1},
		{"second record alone", string(splitLines(golden)[1]), 0, 1},
		{"trailing garbage", strings.TrimSuffix(string(golden), "\n") + " x\n", 2, 3},
		{"two objects on a line", strings.TrimSuffix(string(splitLines(golden)[0]), "\n") + "{}\n", 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := audit.VerifyJSONL(strings.NewReader(tc.in))
			if n != tc.wantN {
				t.Errorf("n = %d, want %d", n, tc.wantN)
			}
			if tc.wantLine == 0 {
				if err != nil {
					t.Errorf("err = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if got := chainLine(t, err); got != tc.wantLine {
				t.Errorf("line %d, want %d: %v", got, tc.wantLine, err)
			}
		})
	}
}

// BenchmarkAppend measures one Append: opening a new incident (download miss, create, append, tag)
// and adding to an incident of up to 50 records.
func BenchmarkAppend(b *testing.B) {
	for _, bk := range []struct {
		name  string
		store func(b *testing.B) *audit.Store
	}{
		{"memblob", func(b *testing.B) *audit.Store { return audit.NewFrom(memblob.New()) }},
		{"azurite", func(b *testing.B) *audit.Store {
			return audit.New(azuritetest.Client(b), azuritetest.Container(b, "bench"))
		}},
	} {
		store := bk.store(b)
		ctx := context.Background()
		if err := store.EnsureContainer(ctx); err != nil {
			b.Fatal(err)
		}
		open := audit.Entry{VMResourceID: testVM, Stage: "intake", Event: incident.EventOpened, State: incident.StateActive,
			Detail: incident.Trigger{Kind: incident.TriggerAlert, EventID: "5b2c", Annotation: "VirtualMachineCrashed"}}
		b.Run(bk.name+"/open", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := store.Append(ctx, incident.NewID(time.Now()), open); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bk.name+"/existing", func(b *testing.B) {
			b.ReportAllocs()
			var id string
			i := 0
			for b.Loop() {
				if i%50 == 0 {
					id = incident.NewID(time.Now())
				}
				i++
				if _, err := store.Append(ctx, id, audit.Entry{VMResourceID: testVM, Stage: "snapshot", Event: incident.EventStarted}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
