// Package fault tells transient failures from terminal ones. A transient failure makes the
// invocation answer 5xx, so the host abandons the message and Service Bus redelivers it; a terminal
// failure is acknowledged (2xx) and recorded, so a poison input never loops.
//
// Errors are transient unless marked terminal: an unknown failure is better retried a bounded number
// of times (MaxDeliveryCount, then the failed queue) than dropped.
package fault

import (
	"errors"
	"time"
)

type terminal struct{ err error }

func (t terminal) Error() string { return t.err.Error() }
func (t terminal) Unwrap() error { return t.err }

// Terminal marks err as terminal: retrying cannot help.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return terminal{err}
}

// IsTerminal reports whether err, or any error it wraps, was marked terminal.
func IsTerminal(err error) bool {
	var t terminal
	return errors.As(err, &t)
}

type retryAfter struct {
	err   error
	after time.Duration
}

func (r retryAfter) Error() string { return r.err.Error() }
func (r retryAfter) Unwrap() error { return r.err }

// RetryAfter marks err as transient with a wait the server asked for (Retry-After), or that the
// stage chose (waiting for rescue capacity).
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return retryAfter{err, d}
}

// Delay is the wait asked for by err, if any.
func Delay(err error) (time.Duration, bool) {
	var r retryAfter
	if errors.As(err, &r) {
		return r.after, true
	}
	return 0, false
}

type recorded struct{ err error }

func (r recorded) Error() string { return r.err.Error() }
func (r recorded) Unwrap() error { return r.err }

// Recorded marks err as already written to the incident's audit trail by the code that returns
// it, so that its caller does not record the same failure twice.
func Recorded(err error) error {
	if err == nil {
		return nil
	}
	return recorded{err}
}

// IsRecorded reports whether err, or any error it wraps, was marked recorded.
func IsRecorded(err error) bool {
	var r recorded
	return errors.As(err, &r)
}
