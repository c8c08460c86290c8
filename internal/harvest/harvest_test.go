package harvest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	azblobcontainer "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/incident"
)

func TestMain(m *testing.M) {
	if os.Getenv(memChildEnv) != "" {
		os.Exit(memoryChild())
	}
	azuritetest.Main(m)
}

const incidentID = "inc-20261120-031407-7f3c"

var allPerms = sas.ContainerPermissions{Read: true, Create: true, Write: true}

// testContainer is a dumps container in Azurite, removed when the test ends.
type testContainer struct {
	*azblobcontainer.Client
	name string
}

func newContainer(t testing.TB) testContainer {
	t.Helper()
	client := azuritetest.Client(t)
	name := azuritetest.Container(t, "dumps")
	if _, err := client.CreateContainer(context.Background(), name, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = client.DeleteContainer(context.Background(), name, nil) })
	return testContainer{client.ServiceClient().NewContainerClient(name), name}
}

// prefixURL creates a container and returns the incident prefix URL with a service SAS made
// from the shared key.
func prefixURL(t testing.TB, perms sas.ContainerPermissions) (string, string) {
	t.Helper()
	cc := newContainer(t)
	container := cc.name
	u, err := cc.GetSASURL(perms, time.Now().Add(2*time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := azblob.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	parts.BlobName = incidentID
	return parts.String(), container
}

// memFile is an in-memory source.
type memFile struct{ *bytes.Reader }

func (memFile) Close() error { return nil }

func memSource(name string, data []byte) Source {
	return Source{Name: name, Size: int64(len(data)), Modified: time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC),
		Open: func() (ReaderAtCloser, error) { return memFile{bytes.NewReader(data)}, nil }}
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func blobSHA(t testing.TB, container, name string) (string, int64) {
	t.Helper()
	resp, err := azuritetest.Client(t).DownloadStream(context.Background(), container, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

func TestHarvestFiles(t *testing.T) {
	t.Parallel()
	u, container := prefixURL(t, allPerms)
	files := map[string][]byte{
		"MEMORY.DMP":         randomBytes(5<<20+17, 1), // not a whole number of blocks
		"Minidump/one.dmp":   randomBytes(1<<20, 2),    // exactly one block
		"Minidump/empty.dmp": {},
		"Minidump/two.dmp":   randomBytes(3, 3),
	}
	names := []string{"MEMORY.DMP", "Minidump/one.dmp", "Minidump/empty.dmp", "Minidump/two.dmp"}
	var srcs []Source
	for _, n := range names {
		s := memSource(n, files[n])
		if n == "MEMORY.DMP" {
			s.BugCheck = &incident.BugCheck{Code: 0x7B, Name: "INACCESSIBLE_BOOT_DEVICE"}
			s.DumpType = "bitmap-kernel"
		}
		srcs = append(srcs, s)
	}
	var calls atomic.Int64
	up, err := New(u, Options{BlockSize: 1 << 20, Concurrency: 3, Progress: func(Progress) { calls.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := up.Harvest(context.Background(), incidentID, srcs, time.Date(2026, 11, 20, 4, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Complete || rep.Manifest != incidentID+"/manifest.json" || len(rep.Files) != 4 || strings.Contains(rep.Prefix, "sig=") {
		t.Fatalf("report %+v", rep)
	}
	if rep.Files[0].Blocks != 6 || rep.Files[0].BlocksSent != 6 || rep.Files[2].Blocks != 0 || calls.Load() != 2*(6+1+0+1) { // once when a block is read, once when it is sent
		t.Errorf("blocks %+v, %d progress calls", rep.Files, calls.Load())
	}
	for i, n := range names {
		got, size := blobSHA(t, container, incidentID+"/"+n)
		if got != sha(files[n]) || size != int64(len(files[n])) || rep.Files[i].SHA256 != got {
			t.Errorf("%s: blob %s (%d bytes), want %s", n, got, size, sha(files[n]))
		}
	}
	resp, err := azuritetest.Client(t).DownloadStream(context.Background(), container, incidentID+"/manifest.json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m Manifest
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	if m.Version != 1 || m.IncidentID != incidentID || len(m.Files) != 4 || m.BugCheck == nil || m.BugCheck.Code != 0x7B ||
		m.Files[0].SHA256 != sha(files["MEMORY.DMP"]) || m.Files[0].DumpType != "bitmap-kernel" || m.Files[1].BugCheck != nil {
		t.Errorf("manifest %+v", m)
	}
	props, err := azuritetest.Client(t).ServiceClient().NewContainerClient(container).NewBlobClient(incidentID+"/MEMORY.DMP").GetProperties(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if metadata(props.Metadata, "sha256") != sha(files["MEMORY.DMP"]) {
		t.Errorf("metadata %v", props.Metadata)
	}
}

// TestResume interrupts an upload and runs it again: the blocks the first run staged are
// found in the uncommitted block list and skipped.
func TestResume(t *testing.T) {
	t.Parallel()
	u, container := prefixURL(t, allPerms)
	data := randomBytes(48<<20, 7)
	src := memSource("MEMORY.DMP", data)
	ctx, cancel := context.WithCancel(context.Background())
	var sent atomic.Int64
	up, err := New(u, Options{BlockSize: 1 << 20, Concurrency: 4, Progress: func(p Progress) {
		if p.BlocksSent >= 20 {
			cancel()
		}
		sent.Store(int64(p.BlocksSent))
	}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := up.UploadFile(ctx, src)
	if !errors.Is(err, context.Canceled) || first.Committed {
		t.Fatalf("first run: %v %+v", err, first)
	}
	if first.BlocksSent < 20 || first.BlocksSent >= 48 {
		t.Fatalf("first run sent %d blocks", first.BlocksSent)
	}
	if _, err := azuritetest.Client(t).ServiceClient().NewContainerClient(container).NewBlobClient(incidentID+"/MEMORY.DMP").GetProperties(context.Background(), nil); !bloberror.HasCode(err, bloberror.BlobNotFound) {
		t.Fatalf("an interrupted upload is visible: %v", err)
	}
	up2, _ := New(u, Options{BlockSize: 1 << 20, Concurrency: 4})
	second, err := up2.UploadFile(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if second.BlocksSkipped < first.BlocksSent || second.BlocksSkipped+second.BlocksSent != 48 || !second.Committed {
		t.Errorf("second run: %d skipped, %d sent (first sent %d)", second.BlocksSkipped, second.BlocksSent, first.BlocksSent)
	}
	if got, _ := blobSHA(t, container, incidentID+"/MEMORY.DMP"); got != sha(data) || second.SHA256 != got {
		t.Errorf("blob SHA-256 %s, want %s", got, sha(data))
	}
	t.Logf("interrupted after %d blocks; the rerun skipped %d and sent %d", first.BlocksSent, second.BlocksSkipped, second.BlocksSent)

	// A changed file does not reuse the blocks.
	changed := memSource("MEMORY.DMP", data)
	changed.Modified = changed.Modified.Add(time.Second)
	third, err := up2.UploadFile(context.Background(), changed)
	if err != nil || third.BlocksSkipped != 0 {
		t.Errorf("changed file: %d skipped, %v", third.BlocksSkipped, err)
	}
}

// corrupter flips a byte in the body of Put Block requests after the client computed the MD5,
// as a fault on the wire would; it counts the service's answers.
type corrupter struct {
	mu       sync.Mutex
	left     int // requests still to corrupt; -1 for all
	mismatch int // Md5Mismatch answers seen
}

func (c *corrupter) Do(req *policy.Request) (*http.Response, error) {
	raw := req.Raw()
	if raw.Method == http.MethodPut && raw.URL.Query().Get("comp") == "block" {
		c.mu.Lock()
		corrupt := c.left != 0
		if c.left > 0 {
			c.left--
		}
		c.mu.Unlock()
		if corrupt {
			body, err := io.ReadAll(req.Body())
			if err != nil {
				return nil, err
			}
			body[len(body)/2] ^= 0xFF
			if err := req.SetBody(streaming.NopCloser(bytes.NewReader(body)), "application/octet-stream"); err != nil {
				return nil, err
			}
		}
	}
	resp, err := req.Next()
	if err == nil && resp.StatusCode == http.StatusBadRequest && resp.Header.Get("x-ms-error-code") == string(bloberror.MD5Mismatch) {
		c.mu.Lock()
		c.mismatch++
		c.mu.Unlock()
	}
	return resp, err
}

func TestCorruptBlockDetected(t *testing.T) {
	t.Parallel()
	u, container := prefixURL(t, allPerms)
	data := randomBytes(4<<20, 9)
	opts := func(c *corrupter) Options {
		return Options{BlockSize: 1 << 20, Concurrency: 2, ClientOptions: &blockblob.ClientOptions{
			ClientOptions: azcore.ClientOptions{PerRetryPolicies: []policy.Policy{c}}}}
	}

	t.Run("once: rejected, resent, intact", func(t *testing.T) {
		c := &corrupter{left: 1}
		up, _ := New(u, opts(c))
		rep, err := up.UploadFile(context.Background(), memSource("once.dmp", data))
		if err != nil {
			t.Fatal(err)
		}
		if c.mismatch != 1 {
			t.Errorf("the service answered Md5Mismatch %d times, want 1", c.mismatch)
		}
		if got, _ := blobSHA(t, container, incidentID+"/once.dmp"); got != sha(data) || rep.SHA256 != got {
			t.Errorf("blob SHA-256 %s, want %s", got, sha(data))
		}
	})
	t.Run("always: the upload fails and nothing is committed", func(t *testing.T) {
		c := &corrupter{left: -1}
		up, _ := New(u, opts(c))
		_, err := up.UploadFile(context.Background(), memSource("always.dmp", data))
		if !bloberror.HasCode(err, bloberror.MD5Mismatch) {
			t.Fatalf("err %v, want Md5Mismatch", err)
		}
		if c.mismatch < 1+defaultBlockRetries {
			t.Errorf("%d mismatches", c.mismatch)
		}
		_, err = azuritetest.Client(t).ServiceClient().NewContainerClient(container).NewBlobClient(incidentID+"/always.dmp").GetProperties(context.Background(), nil)
		if !bloberror.HasCode(err, bloberror.BlobNotFound) {
			t.Errorf("corrupt upload committed: %v", err)
		}
	})
}

func TestWriteOnlySAS(t *testing.T) {
	t.Parallel()
	u, container := prefixURL(t, sas.ContainerPermissions{Create: true, Write: true})
	data := randomBytes(2<<20, 11)
	up, _ := New(u, Options{BlockSize: 1 << 20})
	rep, err := up.Harvest(context.Background(), incidentID, []Source{memSource("MEMORY.DMP", data)}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Complete || !rep.ResumeUnavailable {
		t.Errorf("report %+v", rep)
	}
	if got, _ := blobSHA(t, container, incidentID+"/MEMORY.DMP"); got != sha(data) {
		t.Error("content differs")
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"https://acct.blob.core.windows.net/dumps/" + incidentID,         // no SAS
		"https://acct.blob.core.windows.net/?sv=2024-08-04&sig=abc",      // no container
		"https://acct.blob.core.windows.net/dumps?sv=2024-08-04&sig=abc", // no prefix
		"://bad",
	} {
		if _, err := New(u, Options{}); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
	up, err := New("https://acct.blob.core.windows.net/dumps/other?sv=2024-08-04&sig=abc", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Harvest(context.Background(), incidentID, nil, time.Now()); err == nil {
		t.Error("a prefix that is not the incident's accepted")
	}
	if got := up.PrefixURL(); strings.Contains(got, "sig") {
		t.Errorf("PrefixURL %s", got)
	}
}

func TestNewPerBlobRefuses(t *testing.T) {
	t.Parallel()
	base := "https://acct.blob.core.windows.net/dumps/" + incidentID
	ok := "sv=2024-08-04&sr=b&sp=cw&sig=abc"
	for _, c := range []struct {
		name   string
		prefix string
		sas    map[string]string
	}{
		{"no blob SAS", base, nil},
		{"prefix SAS as well", base + "?sv=2024-08-04&sig=abc", map[string]string{"MEMORY.DMP": ok}},
		{"unsigned", base, map[string]string{"MEMORY.DMP": "sv=2024-08-04&sp=cw"}},
		{"climbs out", base, map[string]string{"../other/MEMORY.DMP": ok}},
		{"absolute", base, map[string]string{"/MEMORY.DMP": ok}},
		{"unclean", base, map[string]string{"Minidump//01.dmp": ok}},
	} {
		if _, err := NewPerBlob(c.prefix, c.sas, Options{}); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

// TestPerBlobWritesOnlyWhatIsOffered: a harvest through per-blob SAS writes the blobs it has a
// SAS for and stops, with nothing committed, at a file it has none for.
func TestPerBlobWritesOnlyWhatIsOffered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cc := newContainer(t)
	container := cc.name
	offered := map[string]string{}
	for _, name := range []string{MemoryDumpBlob, ManifestName} {
		u, err := cc.NewBlobClient(incidentID+"/"+name).GetSASURL(sas.BlobPermissions{Create: true, Write: true}, time.Now().Add(time.Hour), nil)
		if err != nil {
			t.Fatal(err)
		}
		parts, _ := azblob.ParseURL(u)
		offered[name] = parts.SAS.Encode()
	}
	up, err := NewPerBlob(cc.URL()+"/"+incidentID, offered, Options{})
	if err != nil {
		t.Fatal(err)
	}
	srcs := []Source{memSource(MemoryDumpBlob, randomBytes(1000, 1)), memSource(MinidumpBlob(0), randomBytes(10, 2))}
	rep, err := up.Harvest(ctx, incidentID, srcs, time.Now())
	if err == nil || !strings.Contains(err.Error(), "no SAS for Minidump/01.dmp") || rep.Complete {
		t.Fatalf("harvest: %v, %+v", err, rep)
	}
	if got, _ := blobSHA(t, container, incidentID+"/"+MemoryDumpBlob); got != sha(srcs[0].mustRead(t)) {
		t.Error("MEMORY.DMP not written through its SAS")
	}
	rep, err = up.Harvest(ctx, incidentID, srcs[:1], time.Now())
	if err != nil || !rep.Complete {
		t.Fatalf("harvest of the offered blobs: %v %+v", err, rep)
	}
}

func (s Source) mustRead(t *testing.T) []byte {
	t.Helper()
	f, err := s.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, s.Size)
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return b
}

func TestBlockSizeAndIDs(t *testing.T) {
	t.Parallel()
	up, _ := New("https://a.blob.core.windows.net/c/p?sig=x", Options{})
	if bs := up.blockSize(2 << 30); bs != DefaultBlockSize {
		t.Errorf("2 GiB: %d", bs)
	}
	huge := int64(4) << 40 // 4 TiB needs blocks over 8 MiB to stay under 50,000
	if bs := up.blockSize(huge); (huge+bs-1)/bs > MaxBlocks || bs%(1<<20) != 0 {
		t.Errorf("4 TiB: block %d gives %d blocks", bs, (huge+bs-1)/bs)
	}
	mod := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := BlockID(0, 8<<20, 1<<30, mod), BlockID(1<<30-100, 100, 1<<30, mod)
	if len(a) != len(b) || a == b || a != BlockID(0, 8<<20, 1<<30, mod) || a == BlockID(0, 8<<20, 1<<30, mod.Add(time.Second)) {
		t.Errorf("ids %s %s", a, b)
	}
}

// ---- memory: a 2 GiB sparse file in a separate process ----

const (
	memChildEnv  = "VMRESCUE_HARVEST_MEMCHILD"
	memChildURL  = "VMRESCUE_HARVEST_MEMCHILD_URL"
	memTargetMiB = 96
)

type memReport struct {
	VmHWMKiB     int64   `json:"vmHWMKiB"`
	HeapSysMiB   float64 `json:"heapSysMiB"`
	TotalAllocMB float64 `json:"totalAllocMiB"`
	Seconds      float64 `json:"seconds"`
	Blocks       int     `json:"blocks"`
	SHA256       string  `json:"sha256"`
}

// TestMemory2GiB uploads a 2 GiB sparse file with the default settings in a child process
// and checks its peak resident memory (VmHWM) against the 96 MiB target. It is a measurement, run
// without the race detector (whose shadow memory would dominate the figure):
// go test -run Memory2GiB -v ./internal/harvest
func TestMemory2GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 2 GiB")
	}
	if raceEnabled {
		t.Skip("peak RSS is meaningless under the race detector; run without -race to measure it")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc")
	}
	u, container := prefixURL(t, allPerms)
	path := filepath.Join(t.TempDir(), "MEMORY.DMP")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("PAGEDU64"); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(2 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cmd := execSelf(t, path, u)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var rep memReport
	if err := json.Unmarshal(lastLine(out), &rep); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	t.Logf("2 GiB sparse file: peak RSS (VmHWM) %.1f MiB, Go heap sys %.1f MiB, allocated %.1f MiB in total, %d blocks in %.1f s (%.0f MB/s)",
		float64(rep.VmHWMKiB)/1024, rep.HeapSysMiB, rep.TotalAllocMB, rep.Blocks, rep.Seconds, float64(2<<30)/1e6/rep.Seconds)
	if rep.VmHWMKiB > memTargetMiB<<10 {
		t.Errorf("peak RSS %.1f MiB is over %d MiB", float64(rep.VmHWMKiB)/1024, memTargetMiB)
	}
	got, size := blobSHA(t, container, incidentID+"/MEMORY.DMP")
	if size != 2<<30 || got != rep.SHA256 {
		t.Errorf("blob %d bytes, SHA-256 %s; child hashed %s", size, got, rep.SHA256)
	}
	_, _ = azuritetest.Client(t).DeleteBlob(context.Background(), container, incidentID+"/MEMORY.DMP", nil)
}

func lastLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}

func memoryChild() int {
	path, u := os.Getenv(memChildEnv), os.Getenv(memChildURL)
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	st, _ := f.Stat()
	up, err := New(u, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := time.Now()
	rep, err := up.UploadFile(context.Background(), Source{Name: "MEMORY.DMP", Size: st.Size(), Modified: st.ModTime(),
		Open: func() (ReaderAtCloser, error) { return os.Open(path) }})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := memReport{Seconds: time.Since(start).Seconds(), Blocks: rep.Blocks, SHA256: rep.SHA256}
	out.VmHWMKiB, out.HeapSysMiB, out.TotalAllocMB = peakMemory()
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
	return 0
}
