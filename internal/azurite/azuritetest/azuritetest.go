// Package azuritetest gives tests a real Azurite blob service.
//
// Tests in a package share one server started by Main; each test isolates itself with its own
// container names (Container). When VMRESCUE_TEST_AZURITE_URL is set (make test starts one
// Azurite for the whole run), that server is used and none is started.
package azuritetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/vmrescue/vmrescue/internal/azurite"
)

var blobURL string

// Main starts Azurite (unless VMRESCUE_TEST_AZURITE_URL names one), runs the tests and stops it.
// Call it from TestMain: func TestMain(m *testing.M) { azuritetest.Main(m) }.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit, for a TestMain with its own cleanup: it returns the tests' code.
func Run(m *testing.M) int {
	if u := os.Getenv("VMRESCUE_TEST_AZURITE_URL"); u != "" {
		blobURL = u
		return m.Run()
	}
	srv, err := azurite.Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "azuritetest:", err)
		return 1
	}
	defer srv.Stop()
	blobURL = srv.BlobURL
	return m.Run()
}

// URL is the blob service URL of the shared server.
func URL(t testing.TB) string {
	t.Helper()
	if blobURL == "" {
		t.Fatal("azuritetest: call azuritetest.Main from TestMain")
	}
	return blobURL
}

// ConnectionString is the development account's connection string for the shared server.
func ConnectionString(t testing.TB) string { return azurite.ConnectionString(URL(t)) }

// Client is a shared-key client for the shared server.
func Client(t testing.TB) *azblob.Client {
	t.Helper()
	c, err := azblob.NewClientFromConnectionString(ConnectionString(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Container returns a fresh container name, unique to this test, made from prefix.
func Container(t testing.TB, prefix string) string {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.ToLower(prefix) + "-" + hex.EncodeToString(b[:])
	if len(name) > 63 {
		name = name[len(name)-63:]
	}
	return name
}
