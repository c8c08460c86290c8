package harvest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

// benchSize is the file every upload sends.
const benchSize = 256 << 20

// throttleRate bounds each connection through the throttling proxy, the way a single TCP stream
// to a storage account across a WAN is bounded by its window and round-trip time.
const throttleRate = 20 << 20 // bytes per second per connection

func benchFile(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "MEMORY.DMP")
	if err := os.WriteFile(path, randomBytes(benchSize, 42), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}

// BenchmarkUpload compares the uploader (parallel blocks, an MD5 per block, the SHA-256 of the
// file) with the SDK's single-stream block blob upload (UploadFile, Concurrency 1) of the same
// file, in the same run, straight to Azurite and through a proxy that throttles each connection.
// Compare the MB/s columns:
//
//	go test -run '^$' -bench Upload -benchtime 3x ./internal/harvest
func BenchmarkUpload(b *testing.B) {
	path := benchFile(b)
	direct, _ := prefixURL(b, allPerms)
	proxied := throttled(b, direct, throttleRate)
	for _, target := range []struct{ name, url string }{{"azurite", direct}, {"throttled-20MiBps", proxied}} {
		b.Run(target.name+"/single-stream", func(b *testing.B) {
			b.SetBytes(benchSize)
			for i := range b.N {
				parts, _ := azblob.ParseURL(target.url)
				parts.BlobName = fmt.Sprintf("%s/%s-single-%d.dmp", parts.BlobName, target.name, i)
				bb, err := blockblob.NewClientWithNoCredential(parts.String(), nil)
				if err != nil {
					b.Fatal(err)
				}
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := bb.UploadFile(context.Background(), f, &blockblob.UploadFileOptions{BlockSize: DefaultBlockSize, Concurrency: 1}); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
		for _, c := range []int{DefaultConcurrency, 8} {
			b.Run(fmt.Sprintf("%s/uploader-%d", target.name, c), func(b *testing.B) {
				b.SetBytes(benchSize)
				up, err := New(target.url, Options{Concurrency: c})
				if err != nil {
					b.Fatal(err)
				}
				for i := range b.N {
					_, err := up.UploadFile(context.Background(), Source{Name: fmt.Sprintf("%s-parallel-%d-%d.dmp", target.name, c, i), Size: benchSize,
						Open: func() (ReaderAtCloser, error) { return os.Open(path) }})
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// throttled starts a TCP proxy on 127.0.0.1 in front of the URL's host that limits each
// connection's upload to rate bytes per second, and returns the URL through it.
func throttled(b *testing.B, raw string, rate int) string {
	b.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	upstream := u.Host
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s, err := net.Dial("tcp", upstream)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(c, s); c.Close() }()
				_ = copyAtRate(s, c, rate)
				s.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	u.Host = ln.Addr().String()
	return u.String()
}

func copyAtRate(dst io.Writer, src io.Reader, rate int) error {
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	start, sent := time.Now(), 0
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			sent += n
			if ahead := time.Duration(float64(sent)/float64(rate)*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		if err != nil {
			return err
		}
	}
}
