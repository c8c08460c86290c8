package localhost

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/functions"
)

func TestLoadAppMatchesFunctionTable(t *testing.T) {
	t.Parallel()
	app, err := LoadApp(appDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(app.Functions) != len(functions.All) {
		t.Fatalf("%d functions, the table has %d", len(app.Functions), len(functions.All))
	}
	for _, d := range functions.All {
		f, ok := app.Function(d.Name)
		if !ok {
			t.Errorf("function %s missing", d.Name)
			continue
		}
		sched := ""
		if f.Schedule != nil {
			sched = f.Schedule.String()
		}
		if f.Trigger != d.Trigger || f.Binding != d.Binding || f.Queue != d.Queue || f.Route != d.Route ||
			!slices.Equal(f.Methods, d.Methods) || sched != d.Schedule {
			t.Errorf("%s: loaded %+v, table %+v", d.Name, f, d)
		}
	}
	h := app.Host
	if !h.ForwardHTTP || h.RoutePrefix != "api" || h.MaxConcurrentCalls != 32 || h.MaxAutoLockRenewal != 40*time.Minute ||
		h.FunctionTimeout != 30*time.Minute || h.ExecutablePath != "handler" {
		t.Fatalf("host.json read as %+v", h)
	}
}

// writeApp makes an app folder from file contents keyed by relative path.
func writeApp(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const goodHost = `{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler"},"enableForwardingHttpRequest":true}}`

func TestLoadAppRefusesWhatItCannotRun(t *testing.T) {
	t.Parallel()
	sb := func(extra string) string {
		return `{"bindings":[{"type":"serviceBusTrigger","direction":"in","name":"message","queueName":"q","connection":"ServiceBus"` + extra + `}]}`
	}
	cases := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"unknown trigger", map[string]string{"host.json": goodHost,
			"functions/Blob/function.json": `{"bindings":[{"type":"blobTrigger","direction":"in","name":"b","path":"c/{name}"}]}`},
			[]string{`trigger type "blobTrigger" is not supported by the local host`, "eventGridTrigger, httpTrigger, serviceBusTrigger, timerTrigger"}},
		{"extra binding", map[string]string{"host.json": goodHost,
			"functions/F/function.json": `{"bindings":[{"type":"timerTrigger","direction":"in","name":"t","schedule":"0 * * * * *"},{"type":"queue","direction":"out","name":"o"}]}`},
			[]string{`binding o of type "queue"`}},
		{"no trigger", map[string]string{"host.json": goodHost, "functions/F/function.json": `{"bindings":[]}`}, []string{"no trigger binding"}},
		{"two triggers", map[string]string{"host.json": goodHost,
			"functions/F/function.json": `{"bindings":[{"type":"timerTrigger","direction":"in","name":"t","schedule":"0 * * * * *"},{"type":"eventGridTrigger","direction":"in","name":"e"}]}`},
			[]string{"more than one trigger"}},
		{"bad schedule", map[string]string{"host.json": goodHost,
			"functions/F/function.json": `{"bindings":[{"type":"timerTrigger","direction":"in","name":"t","schedule":"*/15 * * * *"}]}`},
			[]string{"schedule", "want 6 fields"}},
		{"no queue", map[string]string{"host.json": goodHost, "functions/F/function.json": `{"bindings":[{"type":"serviceBusTrigger","direction":"in","name":"m"}]}`},
			[]string{"no queueName"}},
		{"topic", map[string]string{"host.json": goodHost, "functions/F/function.json": sb(`,"topicName":"t"`)}, []string{"topic subscription"}},
		{"manual settlement", map[string]string{"host.json": goodHost, "functions/F/function.json": sb(`,"autoCompleteMessages":false`)}, []string{"autoCompleteMessages false"}},
		{"sessions", map[string]string{"host.json": goodHost, "functions/F/function.json": sb(`,"isSessionsEnabled":true`)}, []string{"sessions"}},
		{"two functions on one queue", map[string]string{"host.json": goodHost, "functions/A/function.json": sb(""), "functions/B/function.json": sb("")},
			[]string{`queue "q" is already taken by function A`}},
		{"bad name", map[string]string{"host.json": goodHost, "functions/9lives/function.json": sb("")}, []string{"breaks the host's rule"}},
		{"http without output", map[string]string{"host.json": goodHost,
			"functions/F/function.json": `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","route":"x"}]}`},
			[]string{"without an http output binding"}},
		{"route clash", map[string]string{"host.json": goodHost,
			"functions/A/function.json": `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","route":"x/{id}","methods":["get"]},{"type":"http","direction":"out","name":"res"}]}`,
			"functions/B/function.json": `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","route":"X/{id}","methods":["get","post"]},{"type":"http","direction":"out","name":"res"}]}`},
			[]string{"functions A and B take the same route"}},
		{"bad route", map[string]string{"host.json": goodHost,
			"functions/A/function.json": `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","route":"x/{id?}/y"},{"type":"http","direction":"out","name":"res"}]}`},
			[]string{"optional parameter"}},
		{"no host.json", map[string]string{"functions/F/function.json": sb("")}, []string{"host.json"}},
		{"host.json without forwarding", map[string]string{"functions/F/function.json": sb(""),
			"host.json": `{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler"}},"extensions":{"serviceBus":{"maxAutoLockRenewalDuration":"forever"}}}`},
			[]string{"enableForwardingHttpRequest is false", `maxAutoLockRenewalDuration "forever"`}},
		{"old host.json", map[string]string{"functions/F/function.json": sb(""), "host.json": `{"version":"1.0"}`},
			[]string{`version is "1.0"`, "no customHandler"}},
		{"no functions", map[string]string{"host.json": goodHost}, []string{"no function folders"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadApp(writeApp(t, tc.files))
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadPackagedApp(t *testing.T) {
	t.Parallel()
	// dist/app keeps the function folders beside host.json.
	dir := writeApp(t, map[string]string{
		"host.json": `{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"handler","arguments":["serve"]},"enableForwardingHttpRequest":true},` +
			`"functionTimeout":"1.02:03:04.5","extensions":{"http":{"routePrefix":""}}}`,
		"Janitor/function.json": `{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"0 */15 * * * *"}]}`,
		"Status/function.json":  `{"bindings":[{"type":"httpTrigger","direction":"in","name":"req","authLevel":"anonymous"},{"type":"http","direction":"out","name":"res"}]}`,
		"bin/readme.txt":        "not a function",
	})
	app, err := LoadApp(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(app.Functions) != 2 || app.Host.RoutePrefix != "" || !slices.Equal(app.Host.Arguments, []string{"serve"}) ||
		app.Host.FunctionTimeout != 26*time.Hour+3*time.Minute+4*time.Second+500*time.Millisecond {
		t.Fatalf("app %+v", app)
	}
	if f, _ := app.Function("status"); f.Route != "status" || len(f.Methods) != 0 {
		t.Fatalf("default route %+v", f)
	}
	if got, err := FindAppDir(filepath.Join(dir, "bin")); err != nil || got != dir {
		t.Fatalf("FindAppDir = %q, %v", got, err)
	}
}

func TestFindRoute(t *testing.T) {
	t.Parallel()
	app, err := LoadApp(appDir)
	if err != nil {
		t.Fatal(err)
	}
	routes := httpRoutes(app)
	cases := []struct{ method, path, want string }{
		{"POST", "/api/remediations", "ManualTrigger"},
		{"POST", "/api/remediations/", "ManualTrigger"},
		{"GET", "/api/remediations", "RemediationStatus"},
		{"GET", "/API/Remediations/inc-1", "RemediationStatus"},
		{"POST", "/api/remediations/inc-1/rollback", "RemediationRollback"},
		{"GET", "/api/remediations/inc-1/rollback", ""},
		{"PUT", "/api/remediations", ""},
		{"POST", "/api/remediations/inc-1", ""},
		{"GET", "/api/remediations/a/b", ""},
		{"GET", "/remediations", ""},
		{"GET", "/api", ""},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			t.Parallel()
			f, ok := findRoute(routes, app.Host.RoutePrefix, tc.method, tc.path)
			if ok != (tc.want != "") || f.Name != tc.want {
				t.Fatalf("got %q (%v), want %q", f.Name, ok, tc.want)
			}
		})
	}
	catch, _ := parseRoute("files/{*rest}")
	if !matchRoute(catch, []string{"files"}) || !matchRoute(catch, []string{"files", "a", "b"}) || matchRoute(catch, []string{"other"}) {
		t.Fatal("catch-all")
	}
	constrained, _ := parseRoute("items/{id:int}")
	if !matchRoute(constrained, []string{"items", "7"}) || matchRoute(constrained, []string{"items"}) {
		t.Fatal("constrained parameter")
	}
}

func TestParseTimeSpan(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"00:40:00":       40 * time.Minute,
		"00:00:00.80":    800 * time.Millisecond,
		"1.00:00:00":     24 * time.Hour,
		"00:00:00.00001": 10 * time.Microsecond,
		"-00:00:05":      -5 * time.Second,
		"23:59:59":       24*time.Hour - time.Second,
	} {
		if got, err := parseTimeSpan(in); err != nil || got != want {
			t.Errorf("%q: %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "40m", "00:60:00", "24:00:00", "1:2", "00:00:00.12345678"} {
		if _, err := parseTimeSpan(in); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
}
