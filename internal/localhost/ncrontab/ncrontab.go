// Package ncrontab parses the NCRONTAB expressions of Azure Functions timer triggers and computes
// their occurrences.
//
// An expression has six fields, seconds first: "{second} {minute} {hour} {day} {month}
// {day-of-week}" ("0 */15 * * * *" is every 15 minutes). Each field is "*", a value, a range
// "a-b", a step "*/n" or "a-b/n", or a comma-separated list of those. Months and days of the week
// also take their English three-letter names (Jan, Mon); Sunday is 0 (7 is accepted too). As in
// NCrontab, which the Functions host uses, an occurrence must match every field, the day of the
// month and the day of the week alike. Times are UTC (the host's default without
// WEBSITE_TIME_ZONE).
package ncrontab

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrSyntax marks an expression that does not parse.
var ErrSyntax = errors.New("invalid NCRONTAB expression")

// Schedule is a parsed expression.
type Schedule struct {
	expr   string
	fields [6]uint64 // bit i set: value i matches
}

type fieldSpec struct {
	name     string
	min, max int
	names    []string // names for min.., lower-case
}

var specs = [6]fieldSpec{
	{name: "second", min: 0, max: 59},
	{name: "minute", min: 0, max: 59},
	{name: "hour", min: 0, max: 23},
	{name: "day", min: 1, max: 31},
	{name: "month", min: 1, max: 12, names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}},
	{name: "day-of-week", min: 0, max: 7, names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}},
}

const (
	fSecond = iota
	fMinute
	fHour
	fDay
	fMonth
	fWeekday
)

// Parse parses a six-field expression.
func Parse(expr string) (*Schedule, error) {
	parts := strings.Fields(expr)
	if len(parts) != 6 {
		return nil, fmt.Errorf("%w %q: want 6 fields (second minute hour day month day-of-week), got %d", ErrSyntax, expr, len(parts))
	}
	s := &Schedule{expr: expr}
	for i, p := range parts {
		bits, err := parseField(p, specs[i])
		if err != nil {
			return nil, fmt.Errorf("%w %q: %s field: %w", ErrSyntax, expr, specs[i].name, err)
		}
		s.fields[i] = bits
	}
	if s.fields[fWeekday]&(1<<7) != 0 { // 7 is Sunday too
		s.fields[fWeekday] |= 1
	}
	return s, nil
}

// MustParse is Parse for expressions known to be valid; it panics otherwise.
func MustParse(expr string) *Schedule {
	s, err := Parse(expr)
	if err != nil {
		panic(err)
	}
	return s
}

// String returns the expression.
func (s *Schedule) String() string { return s.expr }

func parseField(f string, spec fieldSpec) (uint64, error) {
	var bits uint64
	for term := range strings.SplitSeq(f, ",") {
		if term == "" {
			return 0, errors.New("empty list element")
		}
		rng, stepText, hasStep := strings.Cut(term, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q is not a positive number", stepText)
			}
			step = n
		}
		lo, hi := spec.min, spec.max
		if spec.name == "day-of-week" && rng == "*" {
			hi = 6
		}
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = value(a, spec); err != nil {
				return 0, err
			}
			hi = lo
			if isRange {
				if hi, err = value(b, spec); err != nil {
					return 0, err
				}
				if hi < lo {
					return 0, fmt.Errorf("range %q runs backwards", rng)
				}
			} else if hasStep {
				hi = spec.max // "a/n" is a-max/n
			}
		}
		for v := lo; v <= hi; v += step {
			bits |= 1 << v
		}
	}
	return bits, nil
}

func value(t string, spec fieldSpec) (int, error) {
	for i, n := range spec.names {
		if strings.EqualFold(t, n) {
			return spec.min + i, nil
		}
	}
	v, err := strconv.Atoi(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", t)
	}
	if v < spec.min || v > spec.max {
		return 0, fmt.Errorf("%d is outside %d-%d", v, spec.min, spec.max)
	}
	return v, nil
}

func (s *Schedule) has(field, v int) bool { return s.fields[field]&(1<<v) != 0 }

// searchYears bounds the search for an occurrence: an expression such as "0 0 0 30 2 *" (30
// February) never matches.
const searchYears = 8

// Next returns the first occurrence strictly after t, in UTC, or the zero time if there is none
// within eight years.
func (s *Schedule) Next(t time.Time) time.Time {
	t = t.UTC().Truncate(time.Second).Add(time.Second)
	limit := t.AddDate(searchYears, 0, 0)
	for t.Before(limit) {
		if !s.has(fMonth, int(t.Month())) {
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if !s.has(fDay, t.Day()) || !s.has(fWeekday, int(t.Weekday())) {
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
			continue
		}
		if !s.has(fHour, t.Hour()) {
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, time.UTC)
			continue
		}
		if !s.has(fMinute, t.Minute()) {
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute()+1, 0, 0, time.UTC)
			continue
		}
		if !s.has(fSecond, t.Second()) {
			t = t.Add(time.Second)
			continue
		}
		return t
	}
	return time.Time{}
}

// Prev returns the last occurrence at or before t, or the zero time if there is none within eight
// years. The Functions host reports it as the timer's ScheduleStatus.Last.
func (s *Schedule) Prev(t time.Time) time.Time {
	t = t.UTC().Truncate(time.Second)
	limit := t.AddDate(-searchYears, 0, 0)
	for t.After(limit) {
		if !s.has(fMonth, int(t.Month())) {
			t = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC).Add(-time.Second)
			continue
		}
		if !s.has(fDay, t.Day()) || !s.has(fWeekday, int(t.Weekday())) {
			t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC).Add(-time.Second)
			continue
		}
		if !s.has(fHour, t.Hour()) {
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), 0, 0, 0, time.UTC).Add(-time.Second)
			continue
		}
		if !s.has(fMinute, t.Minute()) {
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC).Add(-time.Second)
			continue
		}
		if !s.has(fSecond, t.Second()) {
			t = t.Add(-time.Second)
			continue
		}
		return t
	}
	return time.Time{}
}
