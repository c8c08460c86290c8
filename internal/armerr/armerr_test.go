package armerr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/vmrescue/vmrescue/internal/armerr"
	"github.com/vmrescue/vmrescue/internal/fault"
)

// armError builds the *azcore.ResponseError the SDK returns for an ARM error response.
func armError(t *testing.T, status int, code, message string, header map[string]string) error {
	t.Helper()
	body := fmt.Sprintf(`{"error":{"code":%q,"message":%q}}`, code, message)
	req, _ := http.NewRequest(http.MethodPut, "https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d", nil)
	resp := &http.Response{
		StatusCode: status, Status: http.StatusText(status), Header: http.Header{},
		Body: io.NopCloser(strings.NewReader(body)), Request: req,
	}
	resp.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		resp.Header.Set(k, v)
	}
	return runtime.NewResponseError(resp)
}

func TestClassify(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		status   int
		code     string
		message  string
		header   map[string]string
		terminal bool
		delay    time.Duration // 0: no wait asked
	}{
		{"throttled with retry-after seconds", 429, "SubscriptionRequestsThrottled", "Number of 'write' requests exceeded", map[string]string{"Retry-After": "17"}, false, 17 * time.Second},
		{"throttled with retry-after-ms", 429, "TooManyRequests", "throttled", map[string]string{"Retry-After-Ms": "250"}, false, 250 * time.Millisecond},
		{"throttled write OperationNotAllowed 429", 429, "OperationNotAllowed", "too many requests", map[string]string{"Retry-After": "3"}, false, 3 * time.Second},
		{"throttled without header", 429, "TooManyRequests", "throttled", nil, false, armerr.ThrottleDelay},
		{"throttled read without header", 429, "SubscriptionRequestsThrottled", "Number of 'read' requests exceeded", nil, false, armerr.ThrottleDelay},
		{"conflict", 409, "Conflict", "The request failed due to conflict with a concurrent request.", nil, false, armerr.ConflictDelay},
		{"conflict with retry-after", 409, "Conflict", "conflict", map[string]string{"Retry-After": "5"}, false, 5 * time.Second},
		{"another operation in progress", 409, "AnotherOperationInProgress", "Another operation on this or dependent resource is in progress.", nil, false, armerr.ConflictDelay},
		{"operation not allowed during an operation", 409, "OperationNotAllowed", "Operation 'start' is not allowed since the VM is deallocating: an operation is in progress.", nil, false, armerr.ConflictDelay},
		{"run command in progress", 409, "Conflict", "Run command extension execution is in progress on VM 'r'.", nil, false, armerr.ConflictDelay},
		{"internal server error", 500, "InternalServerError", "An internal execution error occurred.", nil, false, 0},
		{"service unavailable", 503, "ServiceUnavailable", "retry later", map[string]string{"Retry-After": "2"}, false, 2 * time.Second},
		{"gateway timeout", 504, "GatewayTimeout", "no response", nil, false, 0},
		{"allocation failed", 409, "AllocationFailed", "Allocation failed.", nil, false, 0},
		{"invalid parameter", 400, "InvalidParameter", "A disk at LUN 3 already exists.", nil, true, 0},
		{"bad request", 400, "BadRequest", "not in the same zone", nil, true, 0},
		{"vm gone", 404, "ResourceNotFound", "The Resource 'Microsoft.Compute/virtualMachines/vm' was not found.", nil, true, 0},
		{"resource group gone", 404, "ResourceGroupNotFound", "Resource group 'rg' could not be found.", nil, true, 0},
		{"property change not allowed", 409, "PropertyChangeNotAllowed", "Changing property 'hyperVGeneration' is not allowed.", nil, true, 0},
		{"os disk swap with ADE", 409, "OSDiskSwapNotSupportedForVMsUsingDiskEncryption", "not supported", nil, true, 0},
		{"operation not allowed for good", 409, "OperationNotAllowed", "The maximum number of data disks allowed to be attached to a VM of this size is 4.", nil, true, 0},
		// Messages ARM returns (as reported in public issue threads): a state mismatch that does not end by itself.
		{"operation needs a running VM", 409, "OperationNotAllowed", "The operation requires the VM to be running (or set to run).", nil, true, 0},
		{"conflicting user input", 409, "ConflictingUserInput", "Disk is already attached to VM other.", nil, true, 0},
		{"authorization failed", 403, "AuthorizationFailed", "The client does not have authorization", nil, true, 0},
		{"linked authorization failed", 403, "LinkedAuthorizationFailed", "no access to the disk", nil, true, 0},
		{"precondition failed", 412, "PreconditionFailed", "etag changed", nil, false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := fmt.Errorf("stage: %w", armError(t, tc.status, tc.code, tc.message, tc.header))
			got := armerr.Classify(err)
			if fault.IsTerminal(got) != tc.terminal {
				t.Fatalf("terminal = %v, want %v (%v)", fault.IsTerminal(got), tc.terminal, got)
			}
			wantClass := armerr.Transient
			if tc.terminal {
				wantClass = armerr.Terminal
			}
			if c := armerr.ClassOf(err); c != wantClass {
				t.Errorf("ClassOf = %v, want %v", c, wantClass)
			}
			d, ok := fault.Delay(got)
			if tc.delay == 0 && ok {
				t.Errorf("delay %v, want none", d)
			}
			if tc.delay != 0 && (!ok || d != tc.delay) {
				t.Errorf("delay = %v (%v), want %v", d, ok, tc.delay)
			}
			if armerr.Code(got) != tc.code || armerr.Status(got) != tc.status {
				t.Errorf("Code/Status = %q/%d, want %q/%d", armerr.Code(got), armerr.Status(got), tc.code, tc.status)
			}
		})
	}
}

func TestIsThrottled(t *testing.T) {
	t.Parallel()
	cases := []struct {
		status int
		code   string
		want   bool
	}{
		{429, "SubscriptionRequestsThrottled", true},
		{429, "OperationNotAllowed", true},
		{429, "", true},
		{400, "ResourceRequestsThrottled", true}, // the code alone says so
		{409, "Conflict", false},
		{503, "ServiceUnavailable", false},
	}
	for _, tc := range cases {
		err := fmt.Errorf("stage: %w", armError(t, tc.status, tc.code, "x", nil))
		if got := armerr.IsThrottled(err); got != tc.want {
			t.Errorf("%d %s: IsThrottled = %v, want %v", tc.status, tc.code, got, tc.want)
		}
	}
	if armerr.IsThrottled(errors.New("dial tcp: connection refused")) {
		t.Error("a transport error is not throttling")
	}
}

func TestClassifyNonARM(t *testing.T) {
	t.Parallel()
	if armerr.Classify(nil) != nil {
		t.Error("nil must stay nil")
	}
	for _, err := range []error{context.DeadlineExceeded, errors.New("dial tcp: connection refused")} {
		if got := armerr.Classify(err); fault.IsTerminal(got) {
			t.Errorf("%v classified terminal", err)
		}
	}
	term := fault.Terminal(errors.New("refused"))
	if got := armerr.Classify(term); got != term {
		t.Errorf("an already terminal error changed: %v", got)
	}
	delayed := fault.RetryAfter(errors.New("wait"), time.Minute)
	if d, _ := fault.Delay(armerr.Classify(delayed)); d != time.Minute {
		t.Errorf("an already delayed error lost its delay: %v", d)
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	t.Parallel()
	at := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	err := armError(t, 429, "TooManyRequests", "x", map[string]string{"Retry-After": at})
	d, ok := armerr.RetryAfter(err)
	if !ok || d < 60*time.Second || d > 91*time.Second {
		t.Errorf("RetryAfter = %v %v, want about 90s", d, ok)
	}
	huge := armError(t, 429, "TooManyRequests", "x", map[string]string{"Retry-After": "999999"})
	if d, _ := armerr.RetryAfter(huge); d != time.Hour {
		t.Errorf("RetryAfter not bounded: %v", d)
	}
}

func TestPredicates(t *testing.T) {
	t.Parallel()
	nf := armError(t, 404, "NotFound", "gone", nil)
	if !armerr.IsNotFound(nf) || armerr.IsConflict(nf) {
		t.Error("404 predicates wrong")
	}
	c := armError(t, 409, "Conflict", "busy", nil)
	if !armerr.IsConflict(c) || armerr.IsNotFound(c) {
		t.Error("409 predicates wrong")
	}
	if armerr.IsConflict(armError(t, 409, "PropertyChangeNotAllowed", "no", nil)) {
		t.Error("PropertyChangeNotAllowed is not a conflict to re-read")
	}
}
