package ncrontab

import (
	"errors"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestNext(t *testing.T) {
	t.Parallel()
	cases := []struct {
		expr, from string
		want       []string
	}{
		{"0 */15 * * * *", "2026-11-20T03:00:00.0014Z", []string{"2026-11-20T03:15:00Z", "2026-11-20T03:30:00Z", "2026-11-20T03:45:00Z", "2026-11-20T04:00:00Z"}},
		{"0 */15 * * * *", "2026-11-20T03:14:59.999Z", []string{"2026-11-20T03:15:00Z"}},
		{"0 */15 * * * *", "2026-12-31T23:59:00Z", []string{"2027-01-01T00:00:00Z"}},
		{"*/10 * * * * *", "2026-11-20T03:00:05Z", []string{"2026-11-20T03:00:10Z", "2026-11-20T03:00:20Z"}},
		{"5/20 * * * * *", "2026-11-20T03:00:00Z", []string{"2026-11-20T03:00:05Z", "2026-11-20T03:00:25Z", "2026-11-20T03:00:45Z", "2026-11-20T03:01:05Z"}},
		{"0 30 9 * * 1-5", "2026-11-20T10:00:00Z", []string{"2026-11-23T09:30:00Z", "2026-11-24T09:30:00Z"}}, // Fri -> Mon
		{"0 0 12 * * Sun", "2026-11-20T00:00:00Z", []string{"2026-11-22T12:00:00Z"}},
		{"0 0 12 * * 7", "2026-11-20T00:00:00Z", []string{"2026-11-22T12:00:00Z"}},
		{"0 0 0 1 Jan,Jul *", "2026-11-20T00:00:00Z", []string{"2027-01-01T00:00:00Z", "2027-07-01T00:00:00Z"}},
		{"0 0 0 29 2 *", "2026-03-01T00:00:00Z", []string{"2028-02-29T00:00:00Z"}},
		{"0 0 0 13 * 5", "2026-01-01T00:00:00Z", []string{"2026-02-13T00:00:00Z", "2026-03-13T00:00:00Z", "2026-11-13T00:00:00Z"}}, // Friday the 13th: both fields
		{"0 5,10-12 * * * *", "2026-11-20T03:06:00Z", []string{"2026-11-20T03:10:00Z", "2026-11-20T03:11:00Z", "2026-11-20T03:12:00Z", "2026-11-20T04:05:00Z"}},
		{"0 0 0 30 2 *", "2026-01-01T00:00:00Z", []string{"0001-01-01T00:00:00Z"}},
	}
	for _, tc := range cases {
		t.Run(tc.expr+"@"+tc.from, func(t *testing.T) {
			t.Parallel()
			s, err := Parse(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			cur := at(tc.from)
			for i, w := range tc.want {
				cur = s.Next(cur)
				if !cur.Equal(at(w)) {
					t.Fatalf("occurrence %d after %s: got %s, want %s", i+1, tc.from, cur.Format(time.RFC3339), w)
				}
			}
		})
	}
}

func TestPrev(t *testing.T) {
	t.Parallel()
	cases := []struct{ expr, from, want string }{
		{"0 */15 * * * *", "2026-11-20T03:14:59Z", "2026-11-20T03:00:00Z"},
		{"0 */15 * * * *", "2026-11-20T03:15:00Z", "2026-11-20T03:15:00Z"},
		{"0 */15 * * * *", "2027-01-01T00:07:00Z", "2027-01-01T00:00:00Z"},
		{"0 30 9 * * 1-5", "2026-11-23T09:00:00Z", "2026-11-20T09:30:00Z"},
		{"0 0 0 29 2 *", "2027-06-01T00:00:00Z", "2024-02-29T00:00:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.expr+"@"+tc.from, func(t *testing.T) {
			t.Parallel()
			if got := MustParse(tc.expr).Prev(at(tc.from)); !got.Equal(at(tc.want)) {
				t.Fatalf("got %s, want %s", got.Format(time.RFC3339), tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, expr := range []string{
		"", "*/15 * * * *", "0 */15 * * * * *", "60 * * * * *", "0 60 * * * *", "0 0 24 * * *",
		"0 0 0 0 * *", "0 0 0 32 * *", "0 0 0 * 13 *", "0 0 0 * * 8", "0 */0 * * * *", "0 */x * * * *",
		"0 5-1 * * * *", "0 1,,2 * * * *", "0 0 0 * Foo *", "00:15:00", "0 -1 * * * *",
	} {
		t.Run(expr, func(t *testing.T) {
			t.Parallel()
			if _, err := Parse(expr); !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse(%q) = %v, want ErrSyntax", expr, err)
			}
		})
	}
}

func BenchmarkNext(b *testing.B) {
	s := MustParse("0 */15 * * * *")
	t := at("2026-11-20T03:00:00Z")
	for b.Loop() {
		t = s.Next(t)
	}
}
