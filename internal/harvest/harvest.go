// Package harvest uploads crash dumps to Blob Storage under a blob prefix, through one SAS per
// blob (or, for an operator running the agent by hand, one SAS for the prefix): each file as a
// block blob staged in parallel blocks with a transactional MD5 per block, in bounded memory
// whatever the file's size, resumable after an interruption, with the SHA-256 of every whole
// file recorded in a manifest.json written last.
package harvest

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"golang.org/x/sync/errgroup"

	"github.com/vmrescue/vmrescue/internal/incident"
)

// Defaults and limits.
const (
	DefaultBlockSize   = 8 << 20 // 8 MiB
	DefaultConcurrency = 4
	// MaxBlocks is Azure's limit of blocks in one block blob.
	MaxBlocks = 50000
	// MaxBlockSize is Azure's limit of one block (service version 2019-12-12 and later).
	MaxBlockSize = 4000 << 20
	// defaultBlockRetries is how often a block the service rejects as corrupt (Md5Mismatch) is
	// read again and resent.
	defaultBlockRetries = 3
	// ManifestName is the manifest's name under the prefix.
	ManifestName = "manifest.json"
	// metaSHA256 is the metadata key holding a committed file's SHA-256.
	metaSHA256 = "sha256"
	// MemoryDumpBlob is the blob name, under the prefix, of the full or kernel dump.
	MemoryDumpBlob = "MEMORY.DMP"
	// MaxMinidumps is how many minidumps, newest first, a harvest uploads. The blob names are
	// fixed slots (MinidumpBlob) so that a SAS can be signed for each blob before the disk is
	// read; the manifest maps each slot to the file's name on the disk.
	MaxMinidumps = 8
)

// MinidumpBlob is the blob name, under the prefix, of the i-th newest minidump (from 0).
func MinidumpBlob(i int) string { return fmt.Sprintf("Minidump/%02d.dmp", i+1) }

// BlobNames are every blob name a harvest may write under its prefix: what a destination must
// offer a SAS for.
func BlobNames() []string {
	names := []string{MemoryDumpBlob}
	for i := range MaxMinidumps {
		names = append(names, MinidumpBlob(i))
	}
	return append(names, ManifestName)
}

// Options tunes the uploader. Memory use is (Concurrency+1) × BlockSize.
type Options struct {
	BlockSize     int64 // default DefaultBlockSize; grown so that no file needs more than MaxBlocks
	Concurrency   int   // parallel Put Block requests; default DefaultConcurrency
	BlockRetries  int   // resends of a block rejected as corrupt; default 3
	ClientOptions *blockblob.ClientOptions
	// Progress, if set, is called when a block has been read and when it has been sent (or
	// skipped), never concurrently.
	Progress func(Progress)
}

// Progress is the state of one file's upload.
type Progress struct {
	File          string
	Size          int64
	BytesRead     int64 // read and hashed
	BytesSent     int64
	BlocksSent    int
	BlocksSkipped int
	Blocks        int
}

// ReaderAtCloser is an open source file.
type ReaderAtCloser interface {
	io.ReaderAt
	io.Closer
}

// Source is one file to upload.
type Source struct {
	// Name is the blob's name under the prefix, with forward slashes: MEMORY.DMP,
	// Minidump/01.dmp.
	Name string
	// Original is the file's path on the disk, for the manifest (optional).
	Original string
	Size     int64
	Modified time.Time
	Open     func() (ReaderAtCloser, error)
	// What the dump's header says, for the manifest (optional).
	BugCheck *incident.BugCheck
	DumpType string
}

// FileReport is what happened to one file.
type FileReport struct {
	Name          string `json:"name"`
	Blob          string `json:"blob"` // blob name in the container
	Size          int64  `json:"size"`
	SHA256        string `json:"sha256,omitempty"`
	Blocks        int    `json:"blocks"`
	BlocksSent    int    `json:"blocksSent"`
	BlocksSkipped int    `json:"blocksSkipped"`
	BytesSent     int64  `json:"bytesSent"`
	Committed     bool   `json:"committed"`
	// ResumeUnavailable: the SAS may not list blocks (no read permission), so blocks staged
	// by an interrupted run could not be found and were sent again.
	ResumeUnavailable bool `json:"resumeUnavailable,omitempty"`
}

// Report is the outcome of a harvest.
type Report struct {
	Prefix   string       `json:"prefix"`   // the prefix URL without its SAS
	Manifest string       `json:"manifest"` // blob name of the manifest
	Files    []FileReport `json:"files"`
	Complete bool         `json:"complete"` // every file and the manifest committed
	// ResumeUnavailable is set when the SAS could not list blocks (no read permission): an
	// interrupted upload then starts over.
	ResumeUnavailable bool `json:"resumeUnavailable,omitempty"`
}

// Manifest is <prefix>/manifest.json.
type Manifest struct {
	Version    int                `json:"version"`
	IncidentID string             `json:"incidentId"`
	Created    time.Time          `json:"created"`
	BugCheck   *incident.BugCheck `json:"bugCheck,omitempty"` // of MEMORY.DMP, else of the newest minidump
	Files      []ManifestFile     `json:"files"`
}

// ManifestFile is one uploaded file.
type ManifestFile struct {
	Name     string             `json:"name"`
	Original string             `json:"original,omitempty"` // the file's path on the disk
	Blob     string             `json:"blob"`
	Size     int64              `json:"size"`
	SHA256   string             `json:"sha256"`
	Modified time.Time          `json:"modified"`
	BugCheck *incident.BugCheck `json:"bugCheck,omitempty"`
	DumpType string             `json:"dumpType,omitempty"`
}

// ManifestVersion is the version of Manifest this build writes.
const ManifestVersion = 1

// Uploader writes blobs under one prefix.
type Uploader struct {
	parts  sas.URLParts // the prefix; BlobName is the prefix path
	prefix string
	// blobSAS, when set, holds the only blobs this uploader may write: name under the prefix →
	// that blob's SAS. Otherwise parts carries one SAS for the whole prefix.
	blobSAS map[string]sas.QueryParameters
	opts    Options
}

// New makes an uploader for prefixURL, <container URL>/<prefix>?<SAS>, where the SAS grants
// writing any blob under the prefix (a container or directory SAS).
func New(prefixURL string, opts Options) (*Uploader, error) {
	return newUploader(prefixURL, nil, opts)
}

// NewPerBlob makes an uploader for the blobs under prefixURL (<container URL>/<prefix>, no SAS)
// for which blobSAS holds a SAS (name under the prefix → SAS query string). A harvest through it
// writes nothing else: each SAS is scoped to one blob. BlobNames lists what it must cover.
func NewPerBlob(prefixURL string, blobSAS map[string]string, opts Options) (*Uploader, error) {
	if len(blobSAS) == 0 {
		return nil, errors.New("no blob SAS given")
	}
	return newUploader(prefixURL, blobSAS, opts)
}

func newUploader(prefixURL string, blobSAS map[string]string, opts Options) (*Uploader, error) {
	parts, err := sas.ParseURL(prefixURL)
	if err != nil {
		return nil, fmt.Errorf("blob prefix URL: %w", err)
	}
	if parts.ContainerName == "" {
		return nil, errors.New("blob prefix URL names no container")
	}
	prefix := strings.Trim(parts.BlobName, "/")
	if prefix == "" {
		return nil, errors.New("blob prefix URL names no prefix under the container")
	}
	u := &Uploader{parts: parts, prefix: prefix}
	if blobSAS == nil {
		if parts.SAS.Signature() == "" {
			return nil, errors.New("blob prefix URL carries no SAS")
		}
	} else {
		if parts.SAS.Signature() != "" {
			return nil, errors.New("blob prefix URL carries a SAS as well as the per-blob ones")
		}
		u.blobSAS = make(map[string]sas.QueryParameters, len(blobSAS))
		for name, raw := range blobSAS {
			clean := path.Clean(name)
			if clean != name || name == "" || strings.HasPrefix(name, "/") || strings.HasPrefix(name, "..") {
				return nil, fmt.Errorf("blob SAS for %q: not a plain name under the prefix", name)
			}
			q, err := url.ParseQuery(raw)
			if err != nil {
				return nil, fmt.Errorf("blob SAS for %s: %w", name, err)
			}
			p := sas.NewQueryParameters(q, true)
			if p.Signature() == "" {
				return nil, fmt.Errorf("blob SAS for %s carries no signature", name)
			}
			u.blobSAS[name] = p
		}
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.BlockSize <= 0 {
		opts.BlockSize = DefaultBlockSize
	}
	if opts.BlockSize > MaxBlockSize {
		return nil, fmt.Errorf("block size %d is over Azure's %d", opts.BlockSize, int64(MaxBlockSize))
	}
	if opts.BlockRetries <= 0 {
		opts.BlockRetries = defaultBlockRetries
	}
	u.opts = opts
	return u, nil
}

// Prefix is the prefix path under the container, e.g. the incident id.
func (u *Uploader) Prefix() string { return u.prefix }

// BlobName is the full blob name of name under the prefix.
func (u *Uploader) BlobName(name string) string { return path.Join(u.prefix, name) }

// blobURL is the URL of name, with its SAS.
func (u *Uploader) blobURL(name string) (string, error) {
	p := u.parts
	p.BlobName = u.BlobName(name)
	if u.blobSAS != nil {
		q, ok := u.blobSAS[name]
		if !ok {
			return "", fmt.Errorf("the destination offers no SAS for %s", name)
		}
		p.SAS = q
	}
	return p.String(), nil
}

// PrefixURL is the prefix URL without its SAS, for reports.
func (u *Uploader) PrefixURL() string {
	p := u.parts
	p.SAS = sas.QueryParameters{}
	p.BlobName = u.prefix
	return p.String()
}

func (u *Uploader) client(name string) (*blockblob.Client, error) {
	raw, err := u.blobURL(name)
	if err != nil {
		return nil, err
	}
	return blockblob.NewClientWithNoCredential(raw, u.opts.ClientOptions)
}

// blockSize is the block size for a file: the configured one, grown in whole MiB so that the
// file fits in MaxBlocks blocks.
func (u *Uploader) blockSize(size int64) int64 {
	bs := u.opts.BlockSize
	if size > bs*MaxBlocks {
		bs = (size + MaxBlocks - 1) / MaxBlocks
		bs = (bs + 1<<20 - 1) &^ (1<<20 - 1)
	}
	return bs
}

// BlockID is the block id of the block at offset. It is derived from the offset, the length
// and the file's size and modification time, so a rerun on the same file finds the blocks an
// interrupted run staged, and a changed file does not reuse them. All ids of a blob have the
// same length, as Azure requires.
func BlockID(offset, length, fileSize int64, modified time.Time) string {
	tag := sha256.Sum256(fmt.Appendf(nil, "%d/%d", fileSize, modified.UTC().UnixNano()))
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "vmr1-%012x-%09x-%s", offset, length, hex.EncodeToString(tag[:4])))
}

// errResumeForbidden is Get Block List refused by the SAS.
var errResumeForbidden = errors.New("listing staged blocks is not permitted")

// staged lists the blocks already in the service for a blob: committed and uncommitted ids
// with their sizes, and the committed list in order.
func staged(ctx context.Context, bb *blockblob.Client) (map[string]int64, []string, error) {
	resp, err := bb.GetBlockList(ctx, blockblob.BlockListTypeAll, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) {
			return map[string]int64{}, nil, nil
		}
		var re *azcore.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
			return map[string]int64{}, nil, fmt.Errorf("%w: %v", errResumeForbidden, err)
		}
		return nil, nil, fmt.Errorf("get block list: %w", err)
	}
	have := map[string]int64{}
	var committed []string
	if resp.BlockList.CommittedBlocks != nil {
		for _, b := range resp.BlockList.CommittedBlocks {
			if b.Name != nil && b.Size != nil {
				have[*b.Name] = *b.Size
				committed = append(committed, *b.Name)
			}
		}
	}
	for _, b := range resp.BlockList.UncommittedBlocks {
		if b.Name != nil && b.Size != nil {
			have[*b.Name] = *b.Size
		}
	}
	return have, committed, nil
}

// UploadFile uploads one file. The file is read once, in order, into a fixed pool of
// Concurrency+1 buffers: the reader hashes each block into the file's SHA-256 and hands it to
// one of Concurrency workers, which stage it with its MD5; a block the service already holds
// (from an interrupted run) is hashed and skipped. The block list is committed last, with the
// SHA-256 in the blob's metadata. On error the report says how far the upload got.
func (u *Uploader) UploadFile(ctx context.Context, src Source) (FileReport, error) {
	rep := FileReport{Name: src.Name, Blob: u.BlobName(src.Name), Size: src.Size}
	bb, err := u.client(src.Name)
	if err != nil {
		return rep, err
	}
	have, committed, err := staged(ctx, bb)
	if errors.Is(err, errResumeForbidden) {
		rep.ResumeUnavailable = true
	} else if err != nil {
		return rep, err
	}
	f, err := src.Open()
	if err != nil {
		return rep, fmt.Errorf("open %s: %w", src.Name, err)
	}
	defer f.Close()

	bs := u.blockSize(src.Size)
	n := int((src.Size + bs - 1) / bs)
	rep.Blocks = n
	ids := make([]string, n)
	pool := make(chan []byte, u.opts.Concurrency+1)
	for range cap(pool) {
		pool <- make([]byte, min(bs, max(src.Size, 1)))
	}
	type block struct {
		off int64
		buf []byte
		id  string
	}
	jobs := make(chan block)
	var (
		mu   sync.Mutex
		prog = Progress{File: src.Name, Size: src.Size, Blocks: n}
	)
	report := func(update func(*Progress)) {
		mu.Lock()
		defer mu.Unlock()
		update(&prog)
		if u.opts.Progress != nil {
			u.opts.Progress(prog)
		}
	}
	sum := sha256.New()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { // the reader: in order, so that one SHA-256 covers the file
		defer close(jobs)
		for i := range n {
			var buf []byte
			select {
			case buf = <-pool:
			case <-gctx.Done():
				return gctx.Err()
			}
			off := int64(i) * bs
			buf = buf[:min(bs, src.Size-off)]
			if err := readFull(f, buf, off); err != nil {
				return fmt.Errorf("read %s at %d: %w", src.Name, off, err)
			}
			sum.Write(buf)
			id := BlockID(off, int64(len(buf)), src.Size, src.Modified)
			ids[i] = id
			if size, ok := have[id]; ok && size == int64(len(buf)) {
				pool <- buf[:cap(buf)]
				report(func(p *Progress) { p.BytesRead += int64(len(buf)); p.BlocksSkipped++ })
				continue
			}
			report(func(p *Progress) { p.BytesRead += int64(len(buf)) })
			select {
			case jobs <- block{off, buf, id}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range u.opts.Concurrency {
		g.Go(func() error {
			for b := range jobs {
				err := u.stage(gctx, bb, f, b.off, b.buf, b.id)
				pool <- b.buf[:cap(b.buf)]
				if err != nil {
					return err
				}
				report(func(p *Progress) { p.BytesSent += int64(len(b.buf)); p.BlocksSent++ })
			}
			return nil
		})
	}
	err = g.Wait()
	rep.BlocksSent, rep.BlocksSkipped, rep.BytesSent = prog.BlocksSent, prog.BlocksSkipped, prog.BytesSent
	if err != nil {
		return rep, fmt.Errorf("upload %s: %w", src.Name, err)
	}
	rep.SHA256 = hex.EncodeToString(sum.Sum(nil))

	if slicesEqual(committed, ids) && rep.BlocksSent == 0 {
		if props, err := bb.GetProperties(ctx, nil); err == nil && strings.EqualFold(metadata(props.Metadata, metaSHA256), rep.SHA256) {
			rep.Committed = true // an earlier run committed exactly this
			return rep, nil
		}
	}
	sha := rep.SHA256
	if _, err := bb.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
		Metadata:    map[string]*string{metaSHA256: &sha},
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: ptr("application/octet-stream")},
	}); err != nil {
		return rep, fmt.Errorf("commit %s: %w", src.Name, err)
	}
	rep.Committed = true
	return rep, nil
}

// stage sends one block with its MD5. A block the service rejects as corrupt (Md5Mismatch: the
// bytes changed between hashing and arrival) is read again from the file and resent.
func (u *Uploader) stage(ctx context.Context, bb *blockblob.Client, f io.ReaderAt, off int64, buf []byte, id string) error {
	for attempt := 0; ; attempt++ {
		sum := md5.Sum(buf)
		_, err := bb.StageBlock(ctx, id, streaming.NopCloser(bytes.NewReader(buf)), &blockblob.StageBlockOptions{
			TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
		})
		if err == nil {
			return nil
		}
		if !bloberror.HasCode(err, bloberror.MD5Mismatch) || attempt >= u.opts.BlockRetries {
			return fmt.Errorf("stage block at %d: %w", off, err)
		}
		if err := readFull(f, buf, off); err != nil {
			return fmt.Errorf("reread block at %d: %w", off, err)
		}
	}
}

func readFull(f io.ReaderAt, buf []byte, off int64) error {
	n, err := f.ReadAt(buf, off)
	if n == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// UploadManifest writes the manifest, replacing any earlier one.
func (u *Uploader) UploadManifest(ctx context.Context, m Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	bb, err := u.client(ManifestName)
	if err != nil {
		return err
	}
	sum := md5.Sum(b)
	_, err = bb.Upload(ctx, streaming.NopCloser(bytes.NewReader(b)), &blockblob.UploadOptions{
		HTTPHeaders:             &blob.HTTPHeaders{BlobContentType: ptr("application/json")},
		TransactionalValidation: blob.TransferValidationTypeMD5(sum[:]),
	})
	if err != nil {
		return fmt.Errorf("upload manifest: %w", err)
	}
	return nil
}

// Harvest uploads every source, in order, then the manifest. It stops at the first failure;
// the report says what was done, and a rerun resumes.
func (u *Uploader) Harvest(ctx context.Context, incidentID string, srcs []Source, now time.Time) (Report, error) {
	rep := Report{Prefix: u.PrefixURL(), Manifest: u.BlobName(ManifestName)}
	if incidentID != "" && u.prefix != incidentID {
		return rep, fmt.Errorf("blob prefix %q is not the incident's %q", u.prefix, incidentID)
	}
	m := Manifest{Version: ManifestVersion, IncidentID: incidentID, Created: now.UTC(), Files: []ManifestFile{}}
	for _, src := range srcs {
		fr, err := u.UploadFile(ctx, src)
		rep.Files = append(rep.Files, fr)
		rep.ResumeUnavailable = rep.ResumeUnavailable || fr.ResumeUnavailable
		if err != nil {
			return rep, err
		}
		m.Files = append(m.Files, ManifestFile{Name: src.Name, Original: src.Original, Blob: fr.Blob, Size: src.Size, SHA256: fr.SHA256,
			Modified: src.Modified.UTC(), BugCheck: src.BugCheck, DumpType: src.DumpType})
		if m.BugCheck == nil && src.BugCheck != nil {
			m.BugCheck = src.BugCheck // sources come MEMORY.DMP first, then minidumps newest first
		}
	}
	if err := u.UploadManifest(ctx, m); err != nil {
		return rep, err
	}
	rep.Complete = true
	return rep, nil
}

func metadata(m map[string]*string, key string) string {
	for k, v := range m {
		if strings.EqualFold(k, key) && v != nil {
			return *v
		}
	}
	return ""
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func ptr[T any](v T) *T { return &v }
