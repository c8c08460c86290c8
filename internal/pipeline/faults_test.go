package pipeline_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// faultTransport sits between the SDK pipeline and the simulator. It answers chosen operations
// with ARM errors a set number of times (the SDK's own retries included), and it can play a crash:
// after the n-th write reaches the simulator (and is applied there), it cancels the stage's
// context and fails every later request, as a process that died would.
type faultTransport struct {
	next policy.Transporter

	mu         sync.Mutex
	rules      []*faultRule
	crashAfter int
	writes     int
	crashed    bool
	cancel     context.CancelFunc
}

type faultRule struct {
	op         string // e.g. Snapshots.BeginCreateOrUpdate
	status     int
	code       string
	retryAfter string
	times      int
}

func (f *faultTransport) wrap(next policy.Transporter) policy.Transporter {
	f.next = next
	return f
}

func (f *faultTransport) Do(req *http.Request) (*http.Response, error) {
	api, _ := req.Context().Value(runtime.CtxAPINameKey{}).(string)
	client, method, _ := strings.Cut(api, ".")
	op := strings.TrimSuffix(client, "Client") + "." + method
	poll := strings.HasSuffix(req.URL.Path, "/get/fake/status")
	f.mu.Lock()
	if f.crashed {
		f.mu.Unlock()
		return nil, context.Canceled
	}
	for _, r := range f.rules {
		if r.op == op && !poll && r.times > 0 {
			r.times--
			f.mu.Unlock()
			return armResponse(req, r), nil
		}
	}
	f.mu.Unlock()
	resp, err := f.next.Do(req)
	if poll || req.Method == http.MethodGet || err != nil {
		return resp, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.crashAfter > 0 && f.writes == f.crashAfter {
		f.crashed = true
		if f.cancel != nil {
			f.cancel()
		}
		return nil, context.Canceled
	}
	return resp, err
}

func armResponse(req *http.Request, r *faultRule) *http.Response {
	body := fmt.Sprintf(`{"error":{"code":%q,"message":"injected by the test"}}`, r.code)
	h := http.Header{"Content-Type": {"application/json"}, "X-Ms-Error-Code": {r.code}}
	if r.retryAfter != "" {
		h.Set("Retry-After", r.retryAfter)
	}
	return &http.Response{StatusCode: r.status, Status: http.StatusText(r.status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader([]byte(body))), ContentLength: int64(len(body)), Request: req}
}
