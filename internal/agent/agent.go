// Package agent is the rescue agent: the handler binary built for windows/amd64 and run on a
// rescue VM as `handler agent <inspect|patch|harvest|restore>` through Run Command. It works on
// the copy of a broken VM's OS disk attached at a given LUN and does what Azure's guide for a VM
// that blue-screens at boot asks an operator to do by hand: find the disk and its Windows and
// boot partitions, report the crash dumps and settings (inspect), turn on crash dumps, the
// serial console and EMS offline (patch), upload the dumps (harvest), and undo a patch from its
// backups (restore).
//
// Every decision is made here in Go and tested on any OS; only the calls into Windows sit
// behind the Windows interface. The result is one versioned JSON line (result.go).
package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/vmrescue/vmrescue/internal/harvest"
)

// Agent runs agent commands against a Windows.
type Agent struct {
	Win Windows
	Log *slog.Logger
	// Now, Rand and Sleep default to the real clock, crypto/rand and a context-aware sleep.
	Now   func() time.Time
	Rand  io.Reader
	Sleep func(ctx context.Context, d time.Duration) error
	// Upload tunes harvest's uploader (tests give it an HTTP transport). Zero means defaults.
	Upload harvest.Options
}

func (a *Agent) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Agent) rand() io.Reader {
	if a.Rand != nil {
		return a.Rand
	}
	return rand.Reader
}

func (a *Agent) sleep(ctx context.Context, d time.Duration) error {
	if a.Sleep != nil {
		return a.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (a *Agent) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Run carries out one request and reports it. It never panics on bad input and always returns
// a Result: on failure OK is false and Error says why; Refused marks a terminal refusal.
func (a *Agent) Run(ctx context.Context, req Request) (res Result) {
	start := a.now()
	res = Result{Version: ResultVersion, Command: req.Command, IncidentID: req.IncidentID}
	defer func() { res.DurationMS = a.now().Sub(start).Milliseconds() }()
	if err := req.Validate(); err != nil {
		res.fail(&RefusedError{Reason: "bad request: " + err.Error()})
		return res
	}
	log := a.log().With("command", string(req.Command), "incident", req.IncidentID, "lun", req.LUN)
	log.Info("agent started")

	s, err := a.open(ctx, req, &res)
	if s != nil {
		defer func() {
			if err := s.close(ctx, &res); err != nil {
				log.Error("disk cleanup failed", "err", err)
				res.fail(fmt.Errorf("disk cleanup: %w", err))
			}
		}()
	}
	if err != nil {
		res.fail(err)
		return res
	}
	switch req.Command {
	case CommandInspect:
		err = a.inspect(ctx, s, req, &res)
	case CommandPatch:
		err = a.patch(ctx, s, req, &res)
	case CommandHarvest:
		err = a.harvest(ctx, s, req, &res)
	case CommandRestore:
		err = a.restore(ctx, s, &res)
	}
	if err != nil {
		log.Error("agent command failed", "err", err)
		res.fail(err)
		return res
	}
	res.OK = true
	log.Info("agent finished")
	return res
}

// fail records err as the run's outcome; the first error wins, later ones become warnings.
func (r *Result) fail(err error) {
	if r.Error != "" {
		r.Warnings = append(r.Warnings, err.Error())
		r.OK = false
		return
	}
	r.OK = false
	r.Error = err.Error()
	var re *RefusedError
	if errors.As(err, &re) {
		r.Refused = true
	}
}

func (r *Result) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}
