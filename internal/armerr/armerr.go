// Package armerr classifies Azure Resource Manager errors, in one place, by ARM error code and
// HTTP status: transient (retry, honouring Retry-After) or terminal (retrying cannot help).
//
// Transient: throttling (429), Conflict and AnotherOperationInProgress (another operation holds
// the resource), OperationNotAllowed while an operation is in progress, 5xx, timeouts and
// transport failures. Terminal: invalid parameters, a VM or resource that no longer exists,
// unsupported configurations (PropertyChangeNotAllowed, disk encryption), authorization failures,
// and any other 4xx.
//
// Classify marks an error with package fault, which the server reads: fault.Terminal for terminal
// errors, fault.RetryAfter for transient errors that carry (or imply) a wait.
package armerr

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/vmrescue/vmrescue/internal/fault"
)

// ConflictDelay is the wait before retrying a request refused because another operation holds
// the resource, when ARM names no Retry-After.
const ConflictDelay = 15 * time.Second

// ThrottleDelay is the wait before retrying a throttled request (429) when ARM names no
// Retry-After.
const ThrottleDelay = 30 * time.Second

// maxRetryAfter bounds a Retry-After read from a response, against a malformed or hostile value.
const maxRetryAfter = time.Hour

// Class is what Classify decided.
type Class int

// Classes.
const (
	Transient Class = iota
	Terminal
)

func (c Class) String() string {
	if c == Terminal {
		return "terminal"
	}
	return "transient"
}

// transientCodes are ARM error codes that a later retry can cure whatever the status.
var transientCodes = map[string]bool{
	"Conflict":                                  true,
	"AnotherOperationInProgress":                true,
	"OperationPreempted":                        true,
	"RetryableError":                            true,
	"RetryableErrorDueToAnotherOperation":       true,
	"TooManyRequests":                           true,
	"SubscriptionRequestsThrottled":             true,
	"ResourceRequestsThrottled":                 true,
	"TenantRequestsThrottled":                   true,
	"InternalServerError":                       true,
	"InternalOperationError":                    true,
	"InternalExecutionError":                    true,
	"ServiceUnavailable":                        true,
	"GatewayTimeout":                            true,
	"DiskServiceInternalError":                  true,
	"NetworkingInternalOperationError":          true,
	"AllocationFailed":                          true,
	"ZonalAllocationFailed":                     true,
	"OperationNotAllowedDueToConcurrentRequest": true,
	"ResourceCollectionRequestsThrottled":       true,
}

// conflictCodes are the transient codes that mean another operation holds the resource: they get
// ConflictDelay when ARM names no Retry-After.
var conflictCodes = map[string]bool{
	"Conflict":                                  true,
	"AnotherOperationInProgress":                true,
	"OperationPreempted":                        true,
	"RetryableErrorDueToAnotherOperation":       true,
	"OperationNotAllowedDueToConcurrentRequest": true,
}

// inProgressHints mark an OperationNotAllowed that refuses because of an operation in progress or
// a state transition, which ends by itself.
var inProgressHints = []string{
	"in progress", "another operation", "concurrent", "is being", "currently being", "pending",
	"transitioning", "is updating", "is deallocating", "is starting", "is stopping", "please retry",
	"try again",
}

// Code returns the ARM error code of err, or "".
func Code(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// Status returns the HTTP status of err, or 0.
func Status(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// IsNotFound reports a 404: the resource does not exist (or no longer does).
func IsNotFound(err error) bool { return Status(err) == http.StatusNotFound }

// throttleCodes are the codes of ARM's request throttling.
var throttleCodes = map[string]bool{
	"TooManyRequests":                     true,
	"SubscriptionRequestsThrottled":       true,
	"ResourceRequestsThrottled":           true,
	"TenantRequestsThrottled":             true,
	"ResourceCollectionRequestsThrottled": true,
}

// IsThrottled reports a request ARM throttled: a 429, or one of its throttling codes.
func IsThrottled(err error) bool {
	return Status(err) == http.StatusTooManyRequests || throttleCodes[Code(err)]
}

// IsConflict reports a refusal because another operation holds the resource: read again, then
// retry.
func IsConflict(err error) bool {
	return Status(err) == http.StatusConflict && conflictCodes[Code(err)]
}

// ClassOf decides whether err is transient or terminal. A nil error is transient (never asked).
func ClassOf(err error) Class {
	if err == nil {
		return Transient
	}
	if fault.IsTerminal(err) {
		return Terminal
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		// Transport failures, timeouts and cancellations: the request may never have arrived.
		return Transient
	}
	code, status := re.ErrorCode, re.StatusCode
	switch {
	case transientCodes[code]:
		return Transient
	case code == "OperationNotAllowed":
		if status == http.StatusTooManyRequests || inProgress(re) {
			return Transient
		}
		return Terminal
	case status == http.StatusTooManyRequests, status >= 500, status == http.StatusRequestTimeout:
		return Transient
	case status == http.StatusConflict && code == "":
		return Transient
	case status == http.StatusPreconditionFailed:
		return Transient // the resource changed since it was read: read again
	}
	return Terminal
}

func inProgress(re *azcore.ResponseError) bool {
	msg := strings.ToLower(re.Error())
	for _, h := range inProgressHints {
		if strings.Contains(msg, h) {
			return true
		}
	}
	return false
}

// Classify returns err marked for the server: fault.Terminal when terminal, fault.RetryAfter when
// transient with a wait (Retry-After, or ConflictDelay for a conflict and ThrottleDelay for
// throttling without one), err as is otherwise.
// Errors already marked are returned unchanged.
func Classify(err error) error {
	if err == nil || fault.IsTerminal(err) {
		return err
	}
	if _, ok := fault.Delay(err); ok {
		return err
	}
	if ClassOf(err) == Terminal {
		return fault.Terminal(err)
	}
	if d, ok := RetryAfter(err); ok {
		return fault.RetryAfter(err, d)
	}
	if IsConflict(err) || (Code(err) == "OperationNotAllowed" && Status(err) == http.StatusConflict) {
		return fault.RetryAfter(err, ConflictDelay)
	}
	if IsThrottled(err) {
		return fault.RetryAfter(err, ThrottleDelay)
	}
	return err
}

// RetryAfter reads the wait ARM asked for on the response behind err: retry-after-ms,
// x-ms-retry-after-ms, or Retry-After in seconds or as an HTTP date.
func RetryAfter(err error) (time.Duration, bool) {
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.RawResponse == nil {
		return 0, false
	}
	h := re.RawResponse.Header
	for _, name := range []string{"Retry-After-Ms", "X-Ms-Retry-After-Ms"} {
		if v := h.Get(name); v != "" {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 {
				return min(time.Duration(ms)*time.Millisecond, maxRetryAfter), true
			}
		}
	}
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s > 0 {
		return min(time.Duration(s)*time.Second, maxRetryAfter), true
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return min(d, maxRetryAfter), true
		}
	}
	return 0, false
}

// IsCanceled reports an error that only says the caller's context ended.
func IsCanceled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
