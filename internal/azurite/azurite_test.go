package azurite

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestStartServesBlobs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		start  func(context.Context) (*Server, error)
		onDisk bool
	}{
		{"in memory", Start, false},
		{"on disk", StartOnDisk, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := tc.start(context.Background())
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
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(got) != "hello" {
				t.Fatalf("read back %q, %v", got, err)
			}
			if files := filesUnder(t, srv.dir); (len(files) > 0) != tc.onDisk {
				t.Errorf("files in Azurite's directory: %v", files)
			}
			srv.Stop()
			if _, err := c.CreateContainer(ctx, "after", nil); err == nil {
				t.Fatal("azurite still answers after Stop")
			}
			if _, err := os.Stat(srv.dir); !os.IsNotExist(err) {
				t.Errorf("Azurite's directory is left behind: %v", err)
			}
		})
	}
}

// filesUnder lists the regular files under dir.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
