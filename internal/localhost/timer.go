package localhost

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vmrescue/vmrescue/internal/functions"
)

// timerState is one timer function's schedule monitor: the ScheduleStatus the host keeps for it.
type timerState struct {
	fn     Function
	runNow chan struct{}

	mu     sync.Mutex
	status TimerStatus
	runs   int
}

func (ts *timerState) view() TimerStatusView {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return TimerStatusView{Schedule: ts.fn.Schedule.String(), Last: ts.status.Last, Next: ts.status.Next, Runs: ts.runs}
}

// RunTimer runs a timer function now, outside its schedule, as POST /admin/functions/<name>.
func (h *Host) RunTimer(name string) error {
	fn, ok := h.app.Function(name)
	if !ok || fn.Trigger != functions.Timer {
		return fmt.Errorf("%q is not a timer function: only timer functions can be run from the admin endpoint here", name)
	}
	select {
	case h.timers[fn.Name].runNow <- struct{}{}:
	default: // a run is already asked for
	}
	return nil
}

// runTimer runs a timer function on its schedule until ctx ends. With a time scale, the schedule
// runs on a compressed clock that starts now: an occurrence a quarter of an hour away comes after
// TimeScale quarters of an hour. The status the function receives is in wall-clock time. As in the
// host, runs of one timer never overlap, and the next occurrence is taken after a run ends.
func (h *Host) runTimer(ctx context.Context, ts *timerState) {
	scale := h.opts.TimeScale
	origin := time.Now()
	virtual := func(t time.Time) time.Time { return origin.Add(time.Duration(float64(t.Sub(origin)) / scale)) }
	wall := func(v time.Time) time.Time { return origin.Add(time.Duration(float64(v.Sub(origin)) * scale)) }
	next := func(after time.Time) time.Time {
		v := ts.fn.Schedule.Next(virtual(after))
		if v.IsZero() {
			return time.Time{}
		}
		return wall(v).UTC()
	}
	now := time.Now()
	ts.mu.Lock()
	ts.status = TimerStatus{Next: next(now), LastUpdated: now.UTC()}
	ts.mu.Unlock()

	var lastRun time.Time
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		ts.mu.Lock()
		due := ts.status.Next
		ts.mu.Unlock()
		manual := false
		if h.opts.DisableTimers || due.IsZero() {
			select {
			case <-ctx.Done():
				return
			case <-ts.runNow:
				manual = true
			}
		} else {
			wait := max(time.Until(due), minTimerGap-time.Since(lastRun), 0)
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-ts.runNow:
				manual = true
			case <-timer.C:
			}
		}
		fired := time.Now()
		lastRun = fired
		ts.mu.Lock()
		status := ts.status
		ts.mu.Unlock()
		pastDue := !manual && fired.Sub(due) > pastDueAfter
		payload := TimerInvocation(ts.fn.Binding, &status, pastDue, newSys(ts.fn.Name, fired))
		ictx, cancel := context.WithTimeout(ctx, h.app.Host.FunctionTimeout)
		err := h.invoke(ictx, ts.fn, payload, Invocation{Function: ts.fn.Name, Trigger: ts.fn.Trigger})
		cancel()
		if err != nil && ctx.Err() == nil {
			h.log.Warn("timer function failed", "function", ts.fn.Name, "err", err)
		}
		ts.mu.Lock()
		ts.runs++
		if !manual {
			ts.status = TimerStatus{Last: fired.UTC(), Next: next(time.Now()), LastUpdated: fired.UTC()}
		}
		ts.mu.Unlock()
	}
}
