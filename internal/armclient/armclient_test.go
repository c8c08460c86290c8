package armclient_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/vmrescue/vmrescue/internal/armclient"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestCorrelationID(t *testing.T) {
	t.Parallel()
	a := armclient.CorrelationID("inc-20261120-031407-7f3c")
	if !uuidRE.MatchString(a) {
		t.Fatalf("%q is not a version-8 UUID", a)
	}
	if a != armclient.CorrelationID("inc-20261120-031407-7f3c") {
		t.Error("not stable")
	}
	if a == armclient.CorrelationID("inc-20261120-031407-7f3d") {
		t.Error("two incidents share a correlation id")
	}
}

// TestCorrelationHeaderSent sends a request through a real azcore pipeline over loopback HTTP and
// checks the header arrives.
func TestCorrelationHeaderSent(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get(armclient.CorrelationHeader)
	}))
	defer srv.Close()
	o := armclient.WithPolicies(nil)
	pl := runtime.NewPipeline("test", "v0", runtime.PipelineOptions{PerCall: o.PerCallPolicies}, &policy.ClientOptions{})
	ctx := armclient.WithCorrelation(context.Background(), "inc-20261120-031407-7f3c")
	req, err := runtime.NewRequest(ctx, http.MethodGet, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pl.Do(req); err != nil {
		t.Fatal(err)
	}
	if h := <-got; h != armclient.CorrelationID("inc-20261120-031407-7f3c") {
		t.Errorf("header %q", h)
	}
	// A request without an incident carries no correlation header.
	req, _ = runtime.NewRequest(context.Background(), http.MethodGet, srv.URL)
	if _, err := pl.Do(req); err != nil {
		t.Fatal(err)
	}
	if h := <-got; h != "" {
		t.Errorf("header %q without an incident", h)
	}
}

func TestOptions(t *testing.T) {
	t.Parallel()
	cases := []struct {
		endpoint string
		ok       bool
		insecure bool
	}{
		{"https://management.azure.com", true, false},
		{"https://management.azure.com/", true, false},
		{"", true, false},
		{"https://management.usgovcloudapi.net", true, false},
		{"http://127.0.0.1:7072", true, true},
		{"http://localhost:7072", true, true},
		{"http://[::1]:7072", true, true},
		{"http://10.0.0.4:7072", false, false},
		{"ftp://x", false, false},
		{"not a url", false, false},
	}
	for _, tc := range cases {
		o, err := armclient.Options(tc.endpoint)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.endpoint, err, tc.ok)
			continue
		}
		if err == nil && o.InsecureAllowCredentialWithHTTP != tc.insecure {
			t.Errorf("%q: insecure %v", tc.endpoint, o.InsecureAllowCredentialWithHTTP)
		}
	}
}
