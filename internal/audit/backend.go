package audit

import (
	"context"
	"io"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/appendblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// Container is the part of a blob container the Store uses. Its methods have the signatures of
// *container.Client, except NewAppendBlob, which returns the narrow AppendBlob instead of the
// concrete client. New wraps the SDK client; memblob.Container is the in-memory stand-in for
// benchmarks.
type Container interface {
	Create(ctx context.Context, o *container.CreateOptions) (container.CreateResponse, error)
	FilterBlobs(ctx context.Context, where string, o *container.FilterBlobsOptions) (container.FilterBlobsResponse, error)
	NewListBlobsFlatPager(o *container.ListBlobsFlatOptions) *runtime.Pager[container.ListBlobsFlatResponse]
	NewAppendBlob(name string) AppendBlob
}

// AppendBlob is the part of *appendblob.Client the Store uses, with the SDK's signatures.
type AppendBlob interface {
	Create(ctx context.Context, o *appendblob.CreateOptions) (appendblob.CreateResponse, error)
	AppendBlock(ctx context.Context, body io.ReadSeekCloser, o *appendblob.AppendBlockOptions) (appendblob.AppendBlockResponse, error)
	DownloadStream(ctx context.Context, o *blob.DownloadStreamOptions) (blob.DownloadStreamResponse, error)
	SetTags(ctx context.Context, tags map[string]string, o *blob.SetTagsOptions) (blob.SetTagsResponse, error)
	GetTags(ctx context.Context, o *blob.GetTagsOptions) (blob.GetTagsResponse, error)
}

var (
	_ AppendBlob = (*appendblob.Client)(nil)
	_ Container  = sdkContainer{}
)

// sdkContainer adapts *container.Client to Container.
type sdkContainer struct{ *container.Client }

func (c sdkContainer) NewAppendBlob(name string) AppendBlob { return c.NewAppendBlobClient(name) }
