// Package memblob is an in-memory blob container with the semantics audit.Store and lock.Locks
// rely on: conditional create (If-None-Match: *), If-Match on ETags, append position conditions,
// index tags with Find Blobs by Tags for "key" = 'value' AND ... expressions, prefix listing with
// metadata, and the service's error codes as *azcore.ResponseError values.
//
// It exists for benchmarks of code paths that write the audit trail or take locks. Tests run the
// same behavioural table against it and against Azurite, so it cannot drift; everything else is
// tested against Azurite.
package memblob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/appendblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"
	"github.com/vmrescue/vmrescue/internal/audit"
	"github.com/vmrescue/vmrescue/internal/lock"
)

// maxTags is the service's limit of index tags per blob.
const maxTags = 10

var (
	_ audit.Container  = (*Container)(nil)
	_ lock.Container   = (*Container)(nil)
	_ audit.AppendBlob = (*blobRef)(nil)
	_ lock.BlockBlob   = (*blobRef)(nil)
)

type object struct {
	blobType blob.BlobType
	data     []byte
	etag     azcore.ETag
	modified time.Time
	metadata map[string]*string
	tags     map[string]string
}

// Container is one in-memory blob container. The zero value is not usable; call New.
type Container struct {
	mu      sync.Mutex
	created bool
	blobs   map[string]*object
	etags   uint64
}

// New returns a container that does not exist yet: call Create (EnsureContainer) first, as with
// the real service.
func New() *Container { return &Container{blobs: map[string]*object{}} }

func respErr(status int, code bloberror.Code) error {
	return runtime.NewResponseErrorWithErrorCode(&http.Response{
		StatusCode: status,
		Status:     strconv.Itoa(status) + " " + http.StatusText(status),
		Header:     http.Header{"X-Ms-Error-Code": {string(code)}},
		Body:       http.NoBody,
	}, string(code))
}

func (c *Container) nextETag() azcore.ETag {
	c.etags++
	return azcore.ETag(fmt.Sprintf("\"0x%016X\"", c.etags))
}

// Create creates the container; ContainerAlreadyExists when it exists.
func (c *Container) Create(ctx context.Context, o *container.CreateOptions) (container.CreateResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.created {
		return container.CreateResponse{}, respErr(http.StatusConflict, bloberror.ContainerAlreadyExists)
	}
	c.created = true
	etag := c.nextETag()
	return container.CreateResponse{ETag: &etag}, nil
}

// FilterBlobs answers Find Blobs by Tags for expressions of the form "k" = 'v' [AND "k2" = 'v2' ...].
// Like the service, each item carries the tags the expression names. It returns one page.
func (c *Container) FilterBlobs(ctx context.Context, where string, o *container.FilterBlobsOptions) (container.FilterBlobsResponse, error) {
	conds, err := parseWhere(where)
	if err != nil {
		return container.FilterBlobsResponse{}, respErr(http.StatusBadRequest, bloberror.InvalidQueryParameterValue)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.created {
		return container.FilterBlobsResponse{}, respErr(http.StatusNotFound, bloberror.ContainerNotFound)
	}
	var resp container.FilterBlobsResponse
	resp.Where = &where
	for _, name := range slices.Sorted(maps.Keys(c.blobs)) {
		obj := c.blobs[name]
		match := true
		var tagSet []*container.BlobTag
		for _, cond := range conds {
			v, ok := obj.tags[cond[0]]
			if !ok || v != cond[1] {
				match = false
				break
			}
			tagSet = append(tagSet, &container.BlobTag{Key: to.Ptr(cond[0]), Value: to.Ptr(v)})
		}
		if match {
			resp.Blobs = append(resp.Blobs, &service.FilterBlobItem{
				Name: to.Ptr(name),
				Tags: &container.BlobTags{BlobTagSet: tagSet},
			})
		}
	}
	return resp, nil
}

// parseWhere reads "k" = 'v' conditions joined by AND.
func parseWhere(where string) ([][2]string, error) {
	var out [][2]string
	for part := range strings.SplitSeq(where, " AND ") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || len(v) < 2 || v[0] != '\'' || v[len(v)-1] != '\'' {
			return nil, fmt.Errorf("unsupported condition %q", part)
		}
		if uk, err := strconv.Unquote(k); err == nil {
			k = uk
		}
		if k == "" || strings.ContainsAny(k, `"' `) {
			return nil, fmt.Errorf("unsupported key in %q", part)
		}
		out = append(out, [2]string{k, v[1 : len(v)-1]})
	}
	return out, nil
}

// NewListBlobsFlatPager lists blobs by prefix in name order, in one page, with metadata and tags
// when asked.
func (c *Container) NewListBlobsFlatPager(o *container.ListBlobsFlatOptions) *runtime.Pager[container.ListBlobsFlatResponse] {
	var opts container.ListBlobsFlatOptions
	if o != nil {
		opts = *o
	}
	done := false
	return runtime.NewPager(runtime.PagingHandler[container.ListBlobsFlatResponse]{
		More: func(container.ListBlobsFlatResponse) bool { return !done },
		Fetcher: func(ctx context.Context, _ *container.ListBlobsFlatResponse) (container.ListBlobsFlatResponse, error) {
			done = true
			return c.list(opts)
		},
	})
}

func (c *Container) list(o container.ListBlobsFlatOptions) (container.ListBlobsFlatResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.created {
		return container.ListBlobsFlatResponse{}, respErr(http.StatusNotFound, bloberror.ContainerNotFound)
	}
	prefix := ""
	if o.Prefix != nil {
		prefix = *o.Prefix
	}
	seg := &container.BlobFlatListSegment{}
	for _, name := range slices.Sorted(maps.Keys(c.blobs)) {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		obj := c.blobs[name]
		item := &container.BlobItem{
			Name: to.Ptr(name),
			Properties: &container.BlobProperties{
				BlobType:      to.Ptr(obj.blobType),
				ContentLength: to.Ptr(int64(len(obj.data))),
				ETag:          to.Ptr(obj.etag),
				LastModified:  to.Ptr(obj.modified),
			},
		}
		if o.Include.Metadata {
			item.Metadata = maps.Clone(obj.metadata)
		}
		if o.Include.Tags {
			item.BlobTags = tagSet(obj.tags)
		}
		seg.BlobItems = append(seg.BlobItems, item)
	}
	return container.ListBlobsFlatResponse{ListBlobsFlatSegmentResponse: container.ListBlobsFlatSegmentResponse{
		Prefix:  o.Prefix,
		Segment: seg,
	}}, nil
}

func tagSet(tags map[string]string) *container.BlobTags {
	out := &container.BlobTags{}
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		out.BlobTagSet = append(out.BlobTagSet, &container.BlobTag{Key: to.Ptr(k), Value: to.Ptr(tags[k])})
	}
	return out
}

// NewAppendBlob returns a handle on a blob for audit.Store.
func (c *Container) NewAppendBlob(name string) audit.AppendBlob { return &blobRef{c: c, name: name} }

// NewBlockBlob returns a handle on a blob for lock.Locks.
func (c *Container) NewBlockBlob(name string) lock.BlockBlob { return &blobRef{c: c, name: name} }

// blobRef is a handle on one blob name, like the SDK's per-blob clients.
type blobRef struct {
	c    *Container
	name string
}

// lookup returns the blob under c.mu, or the service's error for a missing container or blob.
func (b *blobRef) lookup() (*object, error) {
	if !b.c.created {
		return nil, respErr(http.StatusNotFound, bloberror.ContainerNotFound)
	}
	obj := b.c.blobs[b.name]
	if obj == nil {
		return nil, respErr(http.StatusNotFound, bloberror.BlobNotFound)
	}
	return obj, nil
}

// checkWrite applies If-Match / If-None-Match to a write that replaces the blob: If-None-Match: *
// on an existing blob is 409 BlobAlreadyExists, any other failed condition 412 ConditionNotMet.
func checkWrite(obj *object, ac *blob.AccessConditions) error {
	if ac == nil || ac.ModifiedAccessConditions == nil {
		return nil
	}
	m := ac.ModifiedAccessConditions
	if m.IfNoneMatch != nil && obj != nil {
		if *m.IfNoneMatch == azcore.ETagAny {
			return respErr(http.StatusConflict, bloberror.BlobAlreadyExists)
		}
		if *m.IfNoneMatch == obj.etag {
			return respErr(http.StatusPreconditionFailed, bloberror.ConditionNotMet)
		}
	}
	if m.IfMatch != nil {
		if obj == nil || (*m.IfMatch != azcore.ETagAny && *m.IfMatch != obj.etag) {
			return respErr(http.StatusPreconditionFailed, bloberror.ConditionNotMet)
		}
	}
	return nil
}

func checkTags(tags map[string]string) error {
	if len(tags) > maxTags {
		return respErr(http.StatusBadRequest, bloberror.Code("InvalidTag"))
	}
	return nil
}

// put replaces the blob (Put Blob semantics: new content, metadata and tags).
func (b *blobRef) put(typ blob.BlobType, data []byte, meta map[string]*string, tags map[string]string, ac *blob.AccessConditions) (azcore.ETag, time.Time, error) {
	if err := checkTags(tags); err != nil {
		return "", time.Time{}, err
	}
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	if !b.c.created {
		return "", time.Time{}, respErr(http.StatusNotFound, bloberror.ContainerNotFound)
	}
	if err := checkWrite(b.c.blobs[b.name], ac); err != nil {
		return "", time.Time{}, err
	}
	obj := &object{
		blobType: typ,
		data:     data,
		etag:     b.c.nextETag(),
		modified: time.Now().UTC(),
		metadata: maps.Clone(meta),
		tags:     maps.Clone(tags),
	}
	b.c.blobs[b.name] = obj
	return obj.etag, obj.modified, nil
}

// Create creates or replaces an empty append blob.
func (b *blobRef) Create(ctx context.Context, o *appendblob.CreateOptions) (appendblob.CreateResponse, error) {
	var opts appendblob.CreateOptions
	if o != nil {
		opts = *o
	}
	etag, mod, err := b.put(blob.BlobTypeAppendBlob, nil, opts.Metadata, opts.Tags, opts.AccessConditions)
	if err != nil {
		return appendblob.CreateResponse{}, err
	}
	return appendblob.CreateResponse{ETag: &etag, LastModified: &mod}, nil
}

// AppendBlock appends to an append blob, honouring the append position and ETag conditions.
func (b *blobRef) AppendBlock(ctx context.Context, body io.ReadSeekCloser, o *appendblob.AppendBlockOptions) (appendblob.AppendBlockResponse, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		return appendblob.AppendBlockResponse{}, err
	}
	if len(data) == 0 {
		return appendblob.AppendBlockResponse{}, respErr(http.StatusBadRequest, bloberror.InvalidHeaderValue)
	}
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	obj, err := b.lookup()
	if err != nil {
		return appendblob.AppendBlockResponse{}, err
	}
	if obj.blobType != blob.BlobTypeAppendBlob {
		return appendblob.AppendBlockResponse{}, respErr(http.StatusConflict, bloberror.InvalidBlobType)
	}
	if o != nil {
		if err := checkWrite(obj, o.AccessConditions); err != nil {
			return appendblob.AppendBlockResponse{}, err
		}
		if p := o.AppendPositionAccessConditions; p != nil {
			if p.AppendPosition != nil && *p.AppendPosition != int64(len(obj.data)) {
				return appendblob.AppendBlockResponse{}, respErr(http.StatusPreconditionFailed, bloberror.AppendPositionConditionNotMet)
			}
			if p.MaxSize != nil && int64(len(obj.data)+len(data)) > *p.MaxSize {
				return appendblob.AppendBlockResponse{}, respErr(http.StatusPreconditionFailed, bloberror.MaxBlobSizeConditionNotMet)
			}
		}
	}
	offset := strconv.Itoa(len(obj.data))
	obj.data = append(slices.Clip(obj.data), data...)
	obj.etag = b.c.nextETag()
	obj.modified = time.Now().UTC()
	return appendblob.AppendBlockResponse{ETag: &obj.etag, LastModified: &obj.modified, BlobAppendOffset: &offset}, nil
}

// DownloadStream returns the whole blob. Ranges are not supported.
func (b *blobRef) DownloadStream(ctx context.Context, o *blob.DownloadStreamOptions) (blob.DownloadStreamResponse, error) {
	if o != nil && (o.Range.Offset != 0 || o.Range.Count != 0) {
		return blob.DownloadStreamResponse{}, errors.New("memblob: ranged download not supported")
	}
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	obj, err := b.lookup()
	if err != nil {
		return blob.DownloadStreamResponse{}, err
	}
	data := bytes.Clone(obj.data)
	var resp blob.DownloadStreamResponse
	resp.Body = io.NopCloser(bytes.NewReader(data))
	resp.ContentLength = to.Ptr(int64(len(data)))
	resp.ETag = to.Ptr(obj.etag)
	resp.LastModified = to.Ptr(obj.modified)
	resp.BlobType = to.Ptr(obj.blobType)
	resp.Metadata = maps.Clone(obj.metadata)
	resp.TagCount = to.Ptr(int64(len(obj.tags)))
	return resp, nil
}

// SetTags replaces the blob's index tags. It does not change the ETag, like the service.
func (b *blobRef) SetTags(ctx context.Context, tags map[string]string, o *blob.SetTagsOptions) (blob.SetTagsResponse, error) {
	if err := checkTags(tags); err != nil {
		return blob.SetTagsResponse{}, err
	}
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	obj, err := b.lookup()
	if err != nil {
		return blob.SetTagsResponse{}, err
	}
	obj.tags = maps.Clone(tags)
	return blob.SetTagsResponse{}, nil
}

// GetTags returns the blob's index tags, sorted by key.
func (b *blobRef) GetTags(ctx context.Context, o *blob.GetTagsOptions) (blob.GetTagsResponse, error) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	obj, err := b.lookup()
	if err != nil {
		return blob.GetTagsResponse{}, err
	}
	return blob.GetTagsResponse{BlobTags: *tagSet(obj.tags)}, nil
}

// Upload creates or replaces a block blob.
func (b *blobRef) Upload(ctx context.Context, body io.ReadSeekCloser, o *blockblob.UploadOptions) (blockblob.UploadResponse, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		return blockblob.UploadResponse{}, err
	}
	var opts blockblob.UploadOptions
	if o != nil {
		opts = *o
	}
	etag, mod, err := b.put(blob.BlobTypeBlockBlob, data, opts.Metadata, opts.Tags, opts.AccessConditions)
	if err != nil {
		return blockblob.UploadResponse{}, err
	}
	return blockblob.UploadResponse{ETag: &etag, LastModified: &mod}, nil
}

// GetProperties returns the blob's ETag, length, type, metadata and tag count.
func (b *blobRef) GetProperties(ctx context.Context, o *blob.GetPropertiesOptions) (blob.GetPropertiesResponse, error) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	obj, err := b.lookup()
	if err != nil {
		return blob.GetPropertiesResponse{}, err
	}
	return blob.GetPropertiesResponse{
		ETag:          to.Ptr(obj.etag),
		LastModified:  to.Ptr(obj.modified),
		ContentLength: to.Ptr(int64(len(obj.data))),
		BlobType:      to.Ptr(obj.blobType),
		Metadata:      maps.Clone(obj.metadata),
		TagCount:      to.Ptr(int64(len(obj.tags))),
	}, nil
}

// Delete removes the blob, honouring If-Match.
func (b *blobRef) Delete(ctx context.Context, o *blob.DeleteOptions) (blob.DeleteResponse, error) {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	obj, err := b.lookup()
	if err != nil {
		return blob.DeleteResponse{}, err
	}
	if o != nil {
		if err := checkWrite(obj, o.AccessConditions); err != nil {
			return blob.DeleteResponse{}, err
		}
	}
	delete(b.c.blobs, b.name)
	return blob.DeleteResponse{}, nil
}
