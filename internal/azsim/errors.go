package azsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// ARM error codes the simulator answers with. Each is the code real ARM sends for the same
// situation.
const (
	CodeConflict                 = "Conflict"
	CodeOperationNotAllowed      = "OperationNotAllowed"
	CodePropertyChangeNotAllowed = "PropertyChangeNotAllowed"
	CodeConflictingUserInput     = "ConflictingUserInput"
	CodeInvalidParameter         = "InvalidParameter"
	CodeBadRequest               = "BadRequest"
	CodeResourceNotFound         = "ResourceNotFound"
	CodeNotFound                 = "NotFound"
	CodeResourceGroupNotFound    = "ResourceGroupNotFound"
	CodeSubscriptionNotFound     = "SubscriptionNotFound"
	CodeLocationRequired         = "LocationRequired"
	CodeOSDiskSwapEncrypted      = "OSDiskSwapNotSupportedForVMsUsingDiskEncryption"
	CodeSubscriptionThrottled    = "SubscriptionRequestsThrottled"
	CodeTooManyRequests          = "TooManyRequests"
	CodeInternalServerError      = "InternalServerError"
	CodeServiceUnavailable       = "ServiceUnavailable"
	CodeGatewayTimeout           = "GatewayTimeout"
	CodeNotImplemented           = "NotImplemented"
	CodeInvalidRequestContent    = "InvalidRequestContent"
	CodeAuthenticationFailed     = "AuthenticationFailed"
)

// concurrentConflictMessage is the text Compute answers a write that races another operation on
// the same resource with.
const concurrentConflictMessage = "The request failed due to conflict with a concurrent request. " +
	"To resolve it, please refer to https://aka.ms/activitylog to get more details on the conflicting requests."

// armError is an error the simulator answers with. The transport turns it into an HTTP response
// with ARM's body shape, so the SDK's own pipeline sees it exactly as it would see ARM's: the retry
// policy retries 429/5xx, and the client returns an *azcore.ResponseError carrying Code.
type armError struct {
	Status     int
	Code       string
	Message    string
	Target     string
	RetryAfter time.Duration // scaled; sent as Retry-After-Ms and Retry-After
}

func (e *armError) Error() string {
	return fmt.Sprintf("azsim: %d %s: %s", e.Status, e.Code, e.Message)
}

func newARMError(status int, code, format string, args ...any) *armError {
	return &armError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *armError) withTarget(t string) *armError { e.Target = t; return e }

type armErrorBody struct {
	Error armErrorDetail `json:"error"`
}

type armErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Target  string `json:"target,omitempty"`
}

// response renders the error as ARM does: {"error":{"code","message","target"}} with the
// x-ms-error-code header.
func (e *armError) response(req *http.Request) *http.Response {
	body, _ := json.Marshal(armErrorBody{Error: armErrorDetail{Code: e.Code, Message: e.Message, Target: e.Target}})
	h := http.Header{}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("x-ms-error-code", e.Code)
	if e.RetryAfter > 0 {
		setRetryAfter(h, e.RetryAfter)
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", e.Status, http.StatusText(e.Status)),
		StatusCode:    e.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

// setRetryAfter sets both headers azcore reads: Retry-After-Ms first (exact, scaled) and
// Retry-After in whole seconds, rounded up, for readers that only know the standard header.
func setRetryAfter(h http.Header, d time.Duration) {
	ms := max(d.Milliseconds(), 1)
	h.Set("Retry-After-Ms", strconv.FormatInt(ms, 10))
	h.Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
}

func notFound(kind, id string) *armError {
	return newARMError(http.StatusNotFound, CodeResourceNotFound,
		"The Resource '%s' under resource group '%s' was not found.", kind+"/"+lastSegment(id), resourceGroupOf(id))
}

func conflictInProgress() *armError {
	return newARMError(http.StatusConflict, CodeConflict, "%s", concurrentConflictMessage)
}
