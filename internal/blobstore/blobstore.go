// Package blobstore holds the blob operations of the pipeline that are not the audit trail or the
// locks: the agent binary in the tools container, Run Command output, dumps and boot diagnostics
// in the dumps container, and the SAS URLs handed to the rescue VM.
//
// SAS: the rescue VM never gets the app's credential. It gets short-lived SAS URLs from a Signer:
// UserDelegation in Azure (signed with a user delegation key obtained with the managed identity;
// the account allows no shared key), SharedKey against Azurite, which cannot issue user delegation
// keys without OAuth over HTTPS.
//
// Scope of the dump SAS: the agent writes dumps/<incidentId>/ through one blob SAS (sr=b) per
// blob it may write, create and write only, living at most MaxDumpSASLifetime. A directory SAS
// (sr=d) would need a hierarchical-namespace account, which does not support the blob index tags
// the audit trail relies on; a container SAS would let the rescue VM write beside other
// incidents' dumps.
package blobstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/appendblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"
)

// Limits.
const (
	// MaxDumpSASLifetime bounds the life of the SAS the agent writes dumps with.
	MaxDumpSASLifetime = 2 * time.Hour
	// clockSkew backdates a SAS's start against clock differences between here and Storage.
	clockSkew = 5 * time.Minute
	// opTimeout bounds one blob operation.
	opTimeout = 2 * time.Minute
	// keyLifetime is how long a user delegation key is requested for; it is renewed when less
	// than keyRenewBefore of it is left.
	keyLifetime    = 6 * time.Hour
	keyRenewBefore = 3 * time.Hour
)

// Signer makes SAS URLs.
type Signer interface {
	// BlobURL returns the URL of one blob with a SAS granting perms for ttl.
	BlobURL(ctx context.Context, containerName, blobName string, perms sas.BlobPermissions, ttl time.Duration) (string, error)
}

// Store reads and writes blobs with the app's own credential.
type Store struct {
	Client *azblob.Client
}

// URL is a blob's URL without any SAS.
func (s *Store) URL(containerName, blobName string) string {
	return s.Client.ServiceClient().NewContainerClient(containerName).NewBlobClient(blobName).URL()
}

// EnsureContainer creates a container if it does not exist.
func (s *Store) EnsureContainer(ctx context.Context, containerName string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := s.Client.CreateContainer(ctx, containerName, nil)
	if err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("create container %s: %w", containerName, err)
	}
	return nil
}

// Exists reports whether a blob exists, and its size.
func (s *Store) Exists(ctx context.Context, containerName, blobName string) (bool, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	props, err := s.Client.ServiceClient().NewContainerClient(containerName).NewBlobClient(blobName).GetProperties(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) || status(err) == 404 {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("read %s/%s: %w", containerName, blobName, err)
	}
	var size int64
	if props.ContentLength != nil {
		size = *props.ContentLength
	}
	return true, size, nil
}

// Put uploads data as a block blob. With ifAbsent, an existing blob is kept and Put succeeds.
func (s *Store) Put(ctx context.Context, containerName, blobName string, data io.ReadSeeker, contentType string, ifAbsent bool) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	o := &blockblob.UploadOptions{HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr(contentType)}}
	if ifAbsent {
		o.AccessConditions = &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
	}
	bb := s.Client.ServiceClient().NewContainerClient(containerName).NewBlockBlobClient(blobName)
	_, err := bb.Upload(ctx, readSeekNopCloser{data}, o)
	if ifAbsent && bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("upload %s/%s: %w", containerName, blobName, err)
	}
	return nil
}

// PutFile uploads a large local file as a block blob in parallel blocks, if it is not there yet.
func (s *Store) PutFile(ctx context.Context, containerName, blobName string, f io.ReaderAt, size int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	bb := s.Client.ServiceClient().NewContainerClient(containerName).NewBlockBlobClient(blobName)
	sr := io.NewSectionReader(f, 0, size)
	_, err := bb.UploadStream(ctx, sr, &blockblob.UploadStreamOptions{
		HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("application/octet-stream")},
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{
			IfNoneMatch: to.Ptr(azcore.ETagAny)}},
	})
	if bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("upload %s/%s: %w", containerName, blobName, err)
	}
	return nil
}

// ResetAppendBlob makes name an empty append blob, replacing whatever was there: Run Command
// appends its output to it, and output of an earlier run must not be read as this run's.
func (s *Store) ResetAppendBlob(ctx context.Context, containerName, blobName string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ab := s.Client.ServiceClient().NewContainerClient(containerName).NewAppendBlobClient(blobName)
	if _, err := ab.Create(ctx, &appendblob.CreateOptions{HTTPHeaders: &blob.HTTPHeaders{BlobContentType: to.Ptr("text/plain")}}); err != nil {
		return fmt.Errorf("create %s/%s: %w", containerName, blobName, err)
	}
	return nil
}

// ErrNotFound is wrapped when a blob does not exist.
var ErrNotFound = errors.New("blob not found")

// Get downloads a blob of at most max bytes.
func (s *Store) Get(ctx context.Context, containerName, blobName string, max int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := s.Client.DownloadStream(ctx, containerName, blobName, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		return nil, fmt.Errorf("%s/%s: %w", containerName, blobName, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("download %s/%s: %w", containerName, blobName, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("download %s/%s: %w", containerName, blobName, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("download %s/%s: larger than %d bytes", containerName, blobName, max)
	}
	return data, nil
}

type readSeekNopCloser struct{ io.ReadSeeker }

func (readSeekNopCloser) Close() error { return nil }

func status(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// NewBytes is a ReadSeeker over b, for Put.
func NewBytes(b []byte) io.ReadSeeker { return bytes.NewReader(b) }

// SharedKey signs service SAS URLs with the account key (Azurite, local development).
type SharedKey struct {
	Cred    *azblob.SharedKeyCredential
	BaseURL string // the blob endpoint, e.g. http://127.0.0.1:10000/devstoreaccount1
	Now     func() time.Time
}

// BlobURL implements Signer.
func (k *SharedKey) BlobURL(_ context.Context, containerName, blobName string, perms sas.BlobPermissions, ttl time.Duration) (string, error) {
	now := nowOf(k.Now)
	q, err := sas.BlobSignatureValues{
		Protocol: protocol(k.BaseURL), StartTime: now.Add(-clockSkew), ExpiryTime: now.Add(ttl),
		Permissions: perms.String(), ContainerName: containerName, BlobName: blobName,
	}.SignWithSharedKey(k.Cred)
	if err != nil {
		return "", fmt.Errorf("sign %s/%s: %w", containerName, blobName, err)
	}
	return join(k.BaseURL, containerName, blobName, q), nil
}

// UserDelegation signs user delegation SAS URLs with a key obtained with the app's identity.
type UserDelegation struct {
	Service *service.Client
	Now     func() time.Time

	mu     sync.Mutex
	cred   *service.UserDelegationCredential
	keyEnd time.Time
}

func (u *UserDelegation) credential(ctx context.Context, until time.Time) (*service.UserDelegationCredential, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := nowOf(u.Now)
	if u.cred != nil && u.keyEnd.Sub(now) > keyRenewBefore && !u.keyEnd.Before(until) {
		return u.cred, nil
	}
	end := now.Add(keyLifetime)
	if end.Before(until) {
		end = until
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cred, err := u.Service.GetUserDelegationCredential(ctx, service.KeyInfo{
		Start:  to.Ptr(now.Add(-clockSkew).UTC().Format(sas.TimeFormat)),
		Expiry: to.Ptr(end.UTC().Format(sas.TimeFormat)),
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("get user delegation key: %w", err)
	}
	u.cred, u.keyEnd = cred, end
	return cred, nil
}

// BlobURL implements Signer.
func (u *UserDelegation) BlobURL(ctx context.Context, containerName, blobName string, perms sas.BlobPermissions, ttl time.Duration) (string, error) {
	now := nowOf(u.Now)
	cred, err := u.credential(ctx, now.Add(ttl))
	if err != nil {
		return "", err
	}
	q, err := sas.BlobSignatureValues{
		Protocol: sas.ProtocolHTTPS, StartTime: now.Add(-clockSkew), ExpiryTime: now.Add(ttl),
		Permissions: perms.String(), ContainerName: containerName, BlobName: blobName,
	}.SignWithUserDelegation(cred)
	if err != nil {
		return "", fmt.Errorf("sign %s/%s: %w", containerName, blobName, err)
	}
	return join(u.Service.URL(), containerName, blobName, q), nil
}

func join(base, containerName, name string, q sas.QueryParameters) string {
	u := strings.TrimRight(base, "/") + "/" + containerName
	if name != "" {
		u += "/" + (&url.URL{Path: strings.Trim(name, "/")}).EscapedPath()
	}
	return u + "?" + q.Encode()
}

func protocol(base string) sas.Protocol {
	if strings.HasPrefix(base, "https://") {
		return sas.ProtocolHTTPS
	}
	return sas.ProtocolHTTPSandHTTP
}

func nowOf(now func() time.Time) time.Time {
	if now != nil {
		return now().UTC()
	}
	return time.Now().UTC()
}

// SharedKeyFromConnectionString builds a SharedKey signer from a connection string that holds
// AccountName, AccountKey and BlobEndpoint (or DefaultEndpointsProtocol and EndpointSuffix).
func SharedKeyFromConnectionString(cs string) (*SharedKey, error) {
	kv := map[string]string{}
	for _, part := range strings.Split(cs, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok {
			kv[strings.ToLower(k)] = v
		}
	}
	name, key := kv["accountname"], kv["accountkey"]
	if name == "" || key == "" {
		return nil, errors.New("connection string has no AccountName and AccountKey: a SAS cannot be signed with it")
	}
	cred, err := azblob.NewSharedKeyCredential(name, key)
	if err != nil {
		return nil, fmt.Errorf("shared key: %w", err)
	}
	base := kv["blobendpoint"]
	if base == "" {
		proto, suffix := kv["defaultendpointsprotocol"], kv["endpointsuffix"]
		if proto == "" {
			proto = "https"
		}
		if suffix == "" {
			suffix = "core.windows.net"
		}
		base = fmt.Sprintf("%s://%s.blob.%s", proto, name, suffix)
	}
	return &SharedKey{Cred: cred, BaseURL: strings.TrimRight(base, "/")}, nil
}
