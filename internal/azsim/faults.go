package azsim

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
)

// FaultKind is a kind of injected fault.
type FaultKind string

// Fault kinds.
const (
	FaultThrottle    FaultKind = "429"     // 429 with Retry-After
	FaultInternal    FaultKind = "500"     // 500 InternalServerError
	FaultUnavailable FaultKind = "503"     // 503 ServiceUnavailable
	FaultTimeout     FaultKind = "timeout" // request applied, then 504 GatewayTimeout after a delay
	FaultConflict    FaultKind = "409"     // 409 Conflict, as if another operation raced (writes only)
)

// AllFaults lists every fault kind.
var AllFaults = []FaultKind{FaultThrottle, FaultInternal, FaultUnavailable, FaultTimeout, FaultConflict}

// FaultConfig injects faults into requests (never into operation status polls), deterministically: whether the n-th
// request of an operation on a path fails, and how, depends only on Seed, the operation, the path
// and n, so a run with the same seed sees the same faults whatever the interleaving of requests on
// different resources.
type FaultConfig struct {
	Rate  float64     // probability of a fault per request, 0..1
	Seed  int64       // seeds the draw
	Kinds []FaultKind // nil = AllFaults
	Ops   []string    // only these operations; nil = all
}

// FaultEvent records an injected fault.
type FaultEvent struct {
	Op   string
	Path string
	N    int // the request's number among the requests of Op on Path, from 0
	Kind FaultKind
}

// Retry-After of injected faults at time scale 1. ARM's throttling answers carry one; the
// simulator also sends one with 500, 503 and 504 so that the SDK's retry policy, which prefers
// Retry-After to its own backoff, waits a time that follows the time scale.
var faultRetryAfter = map[FaultKind]time.Duration{
	FaultThrottle:    10 * time.Second,
	FaultInternal:    2 * time.Second,
	FaultUnavailable: 5 * time.Second,
	FaultTimeout:     2 * time.Second,
}

// draw decides the fault for the n-th request of op on path.
func (f FaultConfig) draw(op, path string, n int, write bool) FaultKind {
	if f.Rate <= 0 || (len(f.Ops) > 0 && !slices.Contains(f.Ops, op)) {
		return ""
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%d|%s|%s|%d", f.Seed, op, strings.ToLower(path), n))
	u := float64(binary.BigEndian.Uint64(sum[0:8])>>11) / float64(uint64(1)<<53)
	if u >= f.Rate {
		return ""
	}
	kinds := f.Kinds
	if len(kinds) == 0 {
		kinds = AllFaults
	}
	if !write {
		kinds = slices.DeleteFunc(slices.Clone(kinds), func(k FaultKind) bool { return k == FaultConflict })
		if len(kinds) == 0 {
			return ""
		}
	}
	return kinds[binary.BigEndian.Uint64(sum[8:16])%uint64(len(kinds))]
}

// faultError is the ARM answer for an injected fault.
func (s *Sim) faultError(k FaultKind, write bool) *armError {
	var e *armError
	switch k {
	case FaultThrottle:
		if write {
			e = newARMError(http.StatusTooManyRequests, CodeOperationNotAllowed,
				"The server rejected the request because too many requests have been received for this subscription.")
		} else {
			e = newARMError(http.StatusTooManyRequests, CodeTooManyRequests,
				"The request is being throttled as the limit has been reached for operation type - Read.")
		}
	case FaultInternal:
		e = newARMError(http.StatusInternalServerError, CodeInternalServerError,
			"An internal execution error occurred. Please retry later.")
	case FaultUnavailable:
		e = newARMError(http.StatusServiceUnavailable, CodeServiceUnavailable,
			"The service is temporarily unavailable. Please retry later.")
	case FaultTimeout:
		e = newARMError(http.StatusGatewayTimeout, CodeGatewayTimeout,
			"The gateway did not receive a response from 'Microsoft.Compute' within the specified time period.")
	default:
		e = conflictInProgress()
	}
	if d, ok := faultRetryAfter[k]; ok {
		e.RetryAfter = max(s.timing.scaled(d), time.Millisecond)
	}
	return e
}

// WriteBudget is ARM's per-subscription limit on writes and deletes: at most Writes writes (PUT,
// PATCH, POST; not polls) and at most Deletes deletes (DELETE) in any Window, measured on the
// simulator's clock. ARM counts the two apart: its default limits are 1200 writes and 15000
// deletes an hour per subscription and principal ("Understand how Azure Resource Manager
// throttles requests"), and a delete answers with x-ms-ratelimit-remaining-subscription-deletes,
// not -writes. Window is at time scale 1 and is scaled like latencies (unscaled when TimeScale is
// 0). A request beyond its limit gets 429 SubscriptionRequestsThrottled with Retry-After. A zero
// limit is unlimited.
type WriteBudget struct {
	Writes  int
	Deletes int
	Window  time.Duration
}

// budgetKind is what a request is counted as: a write or a delete.
type budgetKind int

const (
	budgetWrites budgetKind = iota
	budgetDeletes
)

func (k budgetKind) String() string {
	if k == budgetDeletes {
		return "delete"
	}
	return "write"
}

// spend takes one request of kind from the budget, or says how long until one is free.
func (s *Sim) spend(kind budgetKind) (remaining int, retryAfter time.Duration, ok bool) {
	b := s.opts.WriteBudget
	limit := b.Writes
	if kind == budgetDeletes {
		limit = b.Deletes
	}
	if limit <= 0 || b.Window <= 0 {
		return -1, 0, true
	}
	window := b.Window
	if s.opts.TimeScale > 0 {
		window = s.timing.scaled(b.Window)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.state.now() // under the lock: the window's times stay in order
	spent := s.spent[kind]
	cut := 0
	for cut < len(spent) && !now.Before(spent[cut].Add(window)) {
		cut++
	}
	spent = spent[cut:]
	if len(spent) >= limit {
		s.spent[kind] = spent
		return 0, spent[0].Add(window).Sub(now), false
	}
	s.spent[kind] = append(spent, now)
	return limit - len(s.spent[kind]), 0, true
}
