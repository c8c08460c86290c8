package azurite

import (
	"context"
	"strings"
	"testing"
)

func TestStartServesBlobs(t *testing.T) {
	srv, err := Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateContainer(ctx, "probe", nil); err != nil {
		t.Fatalf("create container: %v\n%s", err, srv.Logs())
	}
	if _, err := c.UploadBuffer(ctx, "probe", "a.txt", []byte("hello"), nil); err != nil {
		t.Fatal(err)
	}
	resp, err := c.DownloadStream(ctx, "probe", "a.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 16)
	n, _ := resp.Body.Read(buf)
	sb.Write(buf[:n])
	if sb.String() != "hello" {
		t.Fatalf("read back %q", sb.String())
	}
	srv.Stop()
	if _, err := c.CreateContainer(ctx, "after", nil); err == nil {
		t.Fatal("azurite still answers after Stop")
	}
}
