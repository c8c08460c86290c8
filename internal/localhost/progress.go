package localhost

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// progressInterval is how often Progress looks for new invocations.
const progressInterval = 100 * time.Millisecond

// Progress shows a host's invocations as they finish: stage by stage, with timings. On a
// terminal (Live) it keeps a table of the functions redrawn in place; otherwise it writes one
// plain line per invocation, which suits logs and CI.
type Progress struct {
	Host *Host
	Out  io.Writer
	// Live redraws a table with ANSI escapes; see IsTerminal.
	Live bool
	// Incident limits the view to one incident's stage invocations (events and API calls are
	// always shown); empty shows everything.
	Incident string
	// Start is time zero of the timings; zero is when Run starts.
	Start time.Time

	after int64
	rows  []progressRow
	drawn int // lines of the last live table
}

type progressRow struct {
	function   string
	first      time.Time
	deliveries int
	failed     int
	busy       time.Duration
	last       Invocation
}

// IsTerminal reports whether w is a character device (a terminal), where a live view works.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Run follows the host until ctx ends, then shows what is left and returns.
func (p *Progress) Run(ctx context.Context) {
	if p.Start.IsZero() {
		p.Start = time.Now()
	}
	t := time.NewTicker(progressInterval)
	defer t.Stop()
	for {
		p.Update()
		select {
		case <-ctx.Done():
			p.Update()
			return
		case <-t.C:
		}
	}
}

// Update shows the invocations that finished since the last call.
func (p *Progress) Update() {
	if p.Start.IsZero() {
		p.Start = time.Now()
	}
	var fresh []Invocation
	for _, inv := range p.Host.Invocations(p.after) {
		p.after = max(p.after, inv.Seq)
		if p.Incident != "" && inv.IncidentID != "" && inv.IncidentID != p.Incident {
			continue
		}
		fresh = append(fresh, inv)
	}
	if len(fresh) == 0 && (!p.Live || p.drawn > 0) {
		return
	}
	for _, inv := range fresh {
		p.add(inv)
	}
	if p.Live {
		p.draw()
		return
	}
	for _, inv := range fresh {
		fmt.Fprintln(p.Out, p.line(inv))
	}
}

func (p *Progress) add(inv Invocation) {
	i := slices.IndexFunc(p.rows, func(r progressRow) bool { return r.function == inv.Function })
	if i < 0 {
		p.rows = append(p.rows, progressRow{function: inv.Function, first: inv.Start})
		i = len(p.rows) - 1
	}
	r := &p.rows[i]
	r.deliveries++
	if inv.Outcome != OutcomeSucceeded {
		r.failed++
	}
	r.busy += inv.Duration
	r.last = inv
}

// line is the plain-text line of one invocation.
func (p *Progress) line(inv Invocation) string {
	var what string
	switch {
	case inv.Queue != "":
		what = fmt.Sprintf("%s delivery %d", inv.IncidentID, inv.DeliveryCount)
	case inv.EventID != "":
		what = "event " + inv.EventID
	case inv.Path != "":
		what = inv.Path
	}
	end := inv.Outcome
	if inv.Status != 0 {
		end = fmt.Sprintf("%s (%d)", inv.Outcome, inv.Status)
	}
	s := fmt.Sprintf("%8.2fs  %-20s %-44s %-16s %7.2fs", inv.Start.Sub(p.Start).Seconds(), inv.Function, what, end, inv.Duration.Seconds())
	if inv.Outcome != OutcomeSucceeded && inv.Error != "" {
		s += "  " + clipLine(inv.Error, 120)
	}
	return strings.TrimRight(s, " ")
}

// draw redraws the live table in place.
func (p *Progress) draw() {
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.drawn) // back to the table's first line
	}
	lines := []string{fmt.Sprintf("%-20s %9s %10s %9s  %s", "function", "started", "deliveries", "busy", "last")}
	for _, r := range p.rows {
		last := r.last.Outcome
		if r.last.Status != 0 {
			last = fmt.Sprintf("%s (%d)", r.last.Outcome, r.last.Status)
		}
		if r.last.Outcome != OutcomeSucceeded && r.last.Error != "" {
			last += ": " + clipLine(r.last.Error, 60)
		}
		lines = append(lines, fmt.Sprintf("%-20s %8.2fs %10d %8.2fs  %s", r.function, r.first.Sub(p.Start).Seconds(),
			r.deliveries, r.busy.Seconds(), last))
	}
	for _, l := range lines {
		b.WriteString("\x1b[2K" + l + "\n")
	}
	p.drawn = len(lines)
	_, _ = io.WriteString(p.Out, b.String())
}

func clipLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
