package blobstore_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/vmrescue/vmrescue/internal/azurite/azuritetest"
	"github.com/vmrescue/vmrescue/internal/blobstore"
)

func TestMain(m *testing.M) { azuritetest.Main(m) }

func setup(t *testing.T) (*blobstore.Store, *blobstore.SharedKey, string) {
	t.Helper()
	st := &blobstore.Store{Client: azuritetest.Client(t)}
	signer, err := blobstore.SharedKeyFromConnectionString(azuritetest.ConnectionString(t))
	if err != nil {
		t.Fatal(err)
	}
	c := azuritetest.Container(t, "blobstore")
	if err := st.EnsureContainer(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureContainer(context.Background(), c); err != nil {
		t.Fatalf("second EnsureContainer: %v", err)
	}
	return st, signer, c
}

func TestPutGetExists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, _, c := setup(t)
	if ok, _, err := st.Exists(ctx, c, "a/b.txt"); err != nil || ok {
		t.Fatalf("Exists before put = %v, %v", ok, err)
	}
	if err := st.Put(ctx, c, "a/b.txt", blobstore.NewBytes([]byte("one")), "text/plain", true); err != nil {
		t.Fatal(err)
	}
	// ifAbsent keeps the first content.
	if err := st.Put(ctx, c, "a/b.txt", blobstore.NewBytes([]byte("two!")), "text/plain", true); err != nil {
		t.Fatal(err)
	}
	ok, size, err := st.Exists(ctx, c, "a/b.txt")
	if err != nil || !ok || size != 3 {
		t.Fatalf("Exists = %v %d %v", ok, size, err)
	}
	got, err := st.Get(ctx, c, "a/b.txt", 10)
	if err != nil || string(got) != "one" {
		t.Fatalf("Get = %q %v", got, err)
	}
	if _, err := st.Get(ctx, c, "a/b.txt", 2); err == nil {
		t.Error("Get ignored its bound")
	}
	if _, err := st.Get(ctx, c, "missing", 10); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("Get of a missing blob: %v", err)
	}
}

func TestBlobURLReadOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, signer, c := setup(t)
	if err := st.Put(ctx, c, "tool.exe", blobstore.NewBytes([]byte("MZ binary")), "application/octet-stream", false); err != nil {
		t.Fatal(err)
	}
	u, err := signer.BlobURL(ctx, c, "tool.exe", sas.BlobPermissions{Read: true}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := blockblob.NewClientWithNoCredential(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := bb.DownloadStream(ctx, nil)
	if err != nil {
		t.Fatalf("read through SAS: %v", err)
	}
	resp.Body.Close()
	if _, err := bb.Upload(ctx, nopRSC{strings.NewReader("x")}, nil); err == nil {
		t.Error("a read SAS could write")
	}
}

// TestDumpBlobSASScope checks the SAS a dump is written with: create and write on one blob,
// nothing else: no read, no sibling blob in the incident's prefix, no other incident's prefix.
func TestDumpBlobSASScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, signer, c := setup(t)
	const inc = "inc-20261120-031407-7f3c"
	u, err := signer.BlobURL(ctx, c, inc+"/MEMORY.DMP", sas.BlobPermissions{Create: true, Write: true}, blobstore.MaxDumpSASLifetime)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := url.Parse(u)
	if got := q.Query().Get("sp"); got != "cw" {
		t.Errorf("permissions %q, want cw", got)
	}
	if got := q.Query().Get("sr"); got != "b" {
		t.Errorf("resource %q, want b (one blob)", got)
	}
	bb, err := blockblob.NewClientWithNoCredential(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bb.Upload(ctx, nopRSC{strings.NewReader("dump")}, nil); err != nil {
		t.Fatalf("write through the dump SAS: %v", err)
	}
	if _, err := bb.DownloadStream(ctx, nil); err == nil {
		t.Error("the dump SAS could read")
	}
	for _, other := range []string{inc + "/manifest.json", "inc-20261120-031407-0000/MEMORY.DMP"} {
		ou := strings.Replace(u, "/"+inc+"/MEMORY.DMP?", "/"+other+"?", 1)
		ob, err := blockblob.NewClientWithNoCredential(ou, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ob.Upload(ctx, nopRSC{strings.NewReader("x")}, nil); err == nil {
			t.Errorf("the SAS for MEMORY.DMP could write %s", other)
		}
	}
	if got, err := st.Get(ctx, c, inc+"/MEMORY.DMP", 100); err != nil || string(got) != "dump" {
		t.Errorf("stored %q %v", got, err)
	}
}

func TestSharedKeyFromConnectionString(t *testing.T) {
	t.Parallel()
	if _, err := blobstore.SharedKeyFromConnectionString("BlobEndpoint=https://x.blob.core.windows.net;SharedAccessSignature=sv=1"); err == nil {
		t.Error("a SAS connection string cannot sign")
	}
	k, err := blobstore.SharedKeyFromConnectionString("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net")
	if err != nil || k.BaseURL != "https://acct.blob.core.windows.net" {
		t.Fatalf("%v %v", k, err)
	}
}

type nopRSC struct{ *strings.Reader }

func (nopRSC) Close() error { return nil }
