package functions_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/functions"
)

// appRoot is the app's root: host.json and functions/ as `make package` lays them out.
const appRoot = "../.."

// The Functions host's naming rules (azure-functions-host Utility.FunctionNameValidationRegex and
// BindingNameValidationRegex): a function name is a letter then up to 127 letters, digits, _ or -,
// and not "host"; a binding name is a letter then up to 127 letters or digits, or $return.
var (
	functionNameRule = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,127}$`)
	bindingNameRule  = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9]{0,127}|\$return)$`)
)

// Settings host.json must carry.
const (
	executable    = "handler"
	bundleID      = "Microsoft.Azure.Functions.ExtensionBundle"
	bundleVersion = "[4.*, 5.0.0)"
	routePrefix   = "api"
	authLevel     = "function"
	// maxConcurrentCalls bounds how many stage messages of one queue an instance runs at once.
	// The stages wait on ARM and in line for rescue capacity rather than use CPU (host.json
	// sets 32), but each running one holds ARM polls and a message lock.
	maxConcurrentCalls = 64
)

// wantBindings is function.json's bindings for d, exactly: every key and value, nothing more.
func wantBindings(d functions.Def) []map[string]any {
	strs := func(ss []string) []any {
		out := make([]any, len(ss))
		for i, s := range ss {
			out[i] = s
		}
		return out
	}
	switch d.Trigger {
	case functions.EventGrid:
		return []map[string]any{{"type": d.Trigger, "direction": "in", "name": d.Binding}}
	case functions.HTTP:
		return []map[string]any{
			{"type": d.Trigger, "direction": "in", "name": d.Binding, "authLevel": authLevel, "methods": strs(d.Methods), "route": d.Route},
			{"type": "http", "direction": "out", "name": functions.HTTPOutput},
		}
	case functions.ServiceBus:
		return []map[string]any{{
			"type": d.Trigger, "direction": "in", "name": d.Binding, "queueName": d.Queue,
			"connection": functions.Connection, "autoCompleteMessages": true,
		}}
	case functions.Timer:
		return []map[string]any{{"type": d.Trigger, "direction": "in", "name": d.Binding, "schedule": d.Schedule}}
	}
	return nil
}

// checkTable checks the function table against the host's rules.
func checkTable(defs []functions.Def) []error {
	var errs []error
	seen := map[string]string{}
	for _, d := range defs {
		if !functionNameRule.MatchString(d.Name) || strings.EqualFold(d.Name, "host") {
			errs = append(errs, fmt.Errorf("function name %q breaks the host's rules", d.Name))
		}
		if prev, dup := seen[strings.ToLower(d.Name)]; dup {
			errs = append(errs, fmt.Errorf("function names %q and %q collide: the host ignores case", prev, d.Name))
		}
		seen[strings.ToLower(d.Name)] = d.Name
		if !bindingNameRule.MatchString(d.Binding) {
			errs = append(errs, fmt.Errorf("%s: binding name %q breaks the host's rules", d.Name, d.Binding))
		}
		if wantBindings(d) == nil {
			errs = append(errs, fmt.Errorf("%s: unknown trigger %q", d.Name, d.Trigger))
		}
		if d.Trigger == functions.HTTP && (d.Route == "" || len(d.Methods) == 0 || strings.HasPrefix(d.Route, "/") || strings.HasPrefix(d.Route, routePrefix+"/")) {
			errs = append(errs, fmt.Errorf("%s: route %q and methods %v: need a route without the %s/ prefix and methods", d.Name, d.Route, d.Methods, routePrefix))
		}
		if d.Trigger == functions.ServiceBus && (d.Queue == "" || !d.Stage.Valid()) {
			errs = append(errs, fmt.Errorf("%s: queue %q, stage %q: need both", d.Name, d.Queue, d.Stage))
		}
		if d.Trigger == functions.Timer && len(strings.Fields(d.Schedule)) != 6 {
			errs = append(errs, fmt.Errorf("%s: schedule %q is not a six-field NCRONTAB expression", d.Name, d.Schedule))
		}
	}
	return errs
}

// checkFolders checks root/functions against defs: one folder per function, each with the exact
// bindings the table implies.
func checkFolders(root string, defs []functions.Def) []error {
	var errs []error
	entries, err := os.ReadDir(filepath.Join(root, "functions"))
	if err != nil {
		return []error{err}
	}
	byName := map[string]functions.Def{}
	for _, d := range defs {
		byName[d.Name] = d
	}
	folders := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() {
			errs = append(errs, fmt.Errorf("functions/%s is not a function folder", e.Name()))
			continue
		}
		folders[e.Name()] = true
		d, ok := byName[e.Name()]
		if !ok {
			errs = append(errs, fmt.Errorf("folder functions/%s has no entry in functions.All", e.Name()))
			continue
		}
		errs = append(errs, checkFunctionJSON(filepath.Join(root, "functions", e.Name(), "function.json"), d)...)
	}
	for _, d := range defs {
		if !folders[d.Name] {
			errs = append(errs, fmt.Errorf("function %s has no folder functions/%s", d.Name, d.Name))
		}
	}
	return errs
}

func checkFunctionJSON(path string, d functions.Def) []error {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []error{fmt.Errorf("%s: no function.json", d.Name)}
	}
	if err != nil {
		return []error{err}
	}
	var doc struct {
		Bindings []map[string]any `json:"bindings"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return []error{fmt.Errorf("%s: function.json: %w", d.Name, err)}
	}
	want := wantBindings(d)
	if len(doc.Bindings) != len(want) {
		return []error{fmt.Errorf("%s: %d bindings, want %d", d.Name, len(doc.Bindings), len(want))}
	}
	var errs []error
	for i, w := range want {
		got := doc.Bindings[i]
		for _, k := range sortedKeys(w) {
			v, ok := got[k]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("%s: binding %d lacks %s (want %v)", d.Name, i, k, w[k]))
			case !reflect.DeepEqual(v, w[k]):
				errs = append(errs, fmt.Errorf("%s: binding %d: %s = %v, want %v", d.Name, i, k, v, w[k]))
			}
		}
		for _, k := range sortedKeys(got) {
			if _, ok := w[k]; !ok {
				errs = append(errs, fmt.Errorf("%s: binding %d: unexpected key %s", d.Name, i, k))
			}
		}
	}
	return errs
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// hostJSON is the part of host.json vmrescue depends on.
type hostJSON struct {
	Version       string `json:"version"`
	CustomHandler struct {
		Description struct {
			DefaultExecutablePath string    `json:"defaultExecutablePath"`
			WorkingDirectory      *string   `json:"workingDirectory"`
			Arguments             *[]string `json:"arguments"`
		} `json:"description"`
		EnableForwardingHTTPRequest *bool `json:"enableForwardingHttpRequest"`
	} `json:"customHandler"`
	ExtensionBundle struct {
		ID      string `json:"id"`
		Version string `json:"version"`
	} `json:"extensionBundle"`
	FunctionTimeout string `json:"functionTimeout"`
	Extensions      struct {
		HTTP struct {
			RoutePrefix *string `json:"routePrefix"`
		} `json:"http"`
		ServiceBus struct {
			PrefetchCount              *int   `json:"prefetchCount"`
			MaxConcurrentCalls         int    `json:"maxConcurrentCalls"`
			AutoCompleteMessages       *bool  `json:"autoCompleteMessages"`
			MaxAutoLockRenewalDuration string `json:"maxAutoLockRenewalDuration"`
		} `json:"serviceBus"`
	} `json:"extensions"`
}

func checkHost(path string) []error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return []error{err}
	}
	var h hostJSON
	if err := json.Unmarshal(raw, &h); err != nil {
		return []error{fmt.Errorf("host.json: %w", err)}
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("host.json: "+format, args...)) }
	if h.Version != "2.0" {
		fail("version %q, want 2.0", h.Version)
	}
	d := h.CustomHandler.Description
	if d.DefaultExecutablePath != executable {
		fail("customHandler.description.defaultExecutablePath %q, want %q", d.DefaultExecutablePath, executable)
	}
	if d.WorkingDirectory == nil || d.Arguments == nil || len(*d.Arguments) != 0 {
		fail("customHandler.description needs workingDirectory and an empty arguments list")
	}
	if f := h.CustomHandler.EnableForwardingHTTPRequest; f == nil || !*f {
		fail("customHandler.enableForwardingHttpRequest must be true")
	}
	if h.ExtensionBundle.ID != bundleID || h.ExtensionBundle.Version != bundleVersion {
		fail("extensionBundle %s %s, want %s %s", h.ExtensionBundle.ID, h.ExtensionBundle.Version, bundleID, bundleVersion)
	}
	if p := h.Extensions.HTTP.RoutePrefix; p == nil || *p != routePrefix {
		fail("extensions.http.routePrefix must be %q", routePrefix)
	}
	sb := h.Extensions.ServiceBus
	if sb.MaxConcurrentCalls < 1 || sb.MaxConcurrentCalls > maxConcurrentCalls {
		fail("extensions.serviceBus.maxConcurrentCalls %d, want 1..%d", sb.MaxConcurrentCalls, maxConcurrentCalls)
	}
	if sb.PrefetchCount == nil || *sb.PrefetchCount != 0 {
		fail("extensions.serviceBus.prefetchCount must be 0: a prefetched message's lock runs out unrenewed")
	}
	if sb.AutoCompleteMessages != nil && !*sb.AutoCompleteMessages {
		fail("extensions.serviceBus.autoCompleteMessages must not be false")
	}
	timeout, err := parseTimeSpan(h.FunctionTimeout)
	if err != nil {
		fail("functionTimeout: %v", err)
	} else if timeout < functions.MaxStageDuration {
		fail("functionTimeout %v is shorter than the longest stage (%v)", timeout, functions.MaxStageDuration)
	}
	renewal, err := parseTimeSpan(sb.MaxAutoLockRenewalDuration)
	if err != nil {
		fail("extensions.serviceBus.maxAutoLockRenewalDuration: %v", err)
	} else if timeout > 0 && renewal <= timeout {
		fail("extensions.serviceBus.maxAutoLockRenewalDuration %v must be longer than functionTimeout %v, or a running stage loses its message lock", renewal, timeout)
	}
	return errs
}

// parseTimeSpan reads a bounded .NET TimeSpan as host.json writes it: [d.]hh:mm:ss[.fffffff].
func parseTimeSpan(s string) (time.Duration, error) {
	days := 0
	rest := s
	if i, j := strings.IndexByte(s, '.'), strings.IndexByte(s, ':'); i >= 0 && j > i {
		n, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, fmt.Errorf("%q is not a time span", s)
		}
		days, rest = n, s[i+1:]
	}
	parts := strings.Split(rest, ":")
	if len(parts) != 3 {
		return 0, fmt.Errorf("%q is not a bounded time span (hh:mm:ss)", s)
	}
	h, err1 := strconv.Atoi(parts[0])
	m, err2 := strconv.Atoi(parts[1])
	sec, err3 := strconv.ParseFloat(parts[2], 64)
	if err := errors.Join(err1, err2, err3); err != nil || h < 0 || h > 23 || m < 0 || m > 59 || sec < 0 || sec >= 60 || days < 0 {
		return 0, fmt.Errorf("%q is not a time span", s)
	}
	d := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
		time.Duration(sec*float64(time.Second))
	if d <= 0 {
		return 0, fmt.Errorf("%q is not a positive time span", s)
	}
	return d, nil
}

func reportAll(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		t.Error(err)
	}
}

func TestTable(t *testing.T) {
	t.Parallel()
	reportAll(t, checkTable(functions.All))
	if len(functions.All) != 12 {
		t.Errorf("functions.All has %d functions, the contract 12", len(functions.All))
	}
	for _, d := range functions.All {
		if got, ok := functions.Lookup(d.Name); !ok || got.Name != d.Name {
			t.Errorf("Lookup(%q) = %v, %v", d.Name, got, ok)
		}
	}
}

func TestFunctionFolders(t *testing.T) {
	t.Parallel()
	reportAll(t, checkFolders(appRoot, functions.All))
}

func TestHostJSON(t *testing.T) {
	t.Parallel()
	reportAll(t, checkHost(filepath.Join(appRoot, "host.json")))
}

// copyApp copies host.json and functions/ into a temporary app root.
func copyApp(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(filepath.Join(appRoot, "functions"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(appRoot, path)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(appRoot, "host.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "host.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// editJSON rewrites the JSON file at path through fn.
func editJSON(t *testing.T, path string, fn func(doc map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	fn(doc)
	if b, err = json.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func editBinding(t *testing.T, root, function string, i int, fn func(b map[string]any)) {
	t.Helper()
	editJSON(t, filepath.Join(root, "functions", function, "function.json"), func(doc map[string]any) {
		fn(doc["bindings"].([]any)[i].(map[string]any))
	})
}

func editHost(t *testing.T, root string, fn func(h map[string]any)) {
	t.Helper()
	editJSON(t, filepath.Join(root, "host.json"), fn)
}

func section(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}

// TestChecksCatchDrift breaks a copy of the app one way at a time and expects the checks above to
// name the break, so that they are known to fail when they should.
func TestChecksCatchDrift(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		defs   func() []functions.Def
		mutate func(t *testing.T, root string)
		want   string
	}{
		{name: "folder without entry", mutate: func(t *testing.T, root string) {
			dir := filepath.Join(root, "functions", "Orphan")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "function.json"), []byte(`{"bindings":[]}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: "functions/Orphan has no entry in functions.All"},
		{name: "entry without folder", mutate: func(t *testing.T, root string) {
			if err := os.RemoveAll(filepath.Join(root, "functions", "Janitor")); err != nil {
				t.Fatal(err)
			}
		}, want: "Janitor has no folder"},
		{name: "folder without function.json", mutate: func(t *testing.T, root string) {
			if err := os.Remove(filepath.Join(root, "functions", "HarvestDump", "function.json")); err != nil {
				t.Fatal(err)
			}
		}, want: "HarvestDump: no function.json"},
		{name: "binding name", mutate: func(t *testing.T, root string) {
			editBinding(t, root, "Snapshot", 0, func(b map[string]any) { b["name"] = "msg" })
		}, want: "Snapshot: binding 0: name = msg, want message"},
		{name: "binding type", mutate: func(t *testing.T, root string) {
			editBinding(t, root, "HealthAlert", 0, func(b map[string]any) { b["type"] = "eventHubTrigger" })
		}, want: "HealthAlert: binding 0: type = eventHubTrigger"},
		{name: "queue", mutate: func(t *testing.T, root string) {
			editBinding(t, root, "RescueAttach", 0, func(b map[string]any) { b["queueName"] = "rescue_attach" })
		}, want: "RescueAttach: binding 0: queueName = rescue_attach, want rescue-attach"},
		{name: "connection", mutate: func(t *testing.T, root string) {
			editBinding(t, root, "Failed", 0, func(b map[string]any) { b["connection"] = "AzureWebJobsServiceBus" })
		}, want: "Failed: binding 0: connection = AzureWebJobsServiceBus, want ServiceBus"},
		{name: "autoCompleteMessages missing", mutate: func(t *testing.T, root string) {
			editBinding(t, root, "SupportTicket", 0, func(b map[string]any) { delete(b, "autoCompleteMessages") })
		}, want: "SupportTicket: binding 0 lacks autoCompleteMessages"},
		{name: "autoCompleteMessages misspelt", mutate: func(t *testing.T, root string) {
			editBinding(t, root, "OfflinePatch", 0, func(b map[string]any) {
				delete(b, "autoCompleteMessages")
				b["autoComplete"] = true
			})
		}, want: "OfflinePatch: binding 0: unexpected key autoComplete"},
		{name: "route", mutate: func(t *testing.T, root string) {
			editBinding(t, root, "RemediationRollback", 0, func(b map[string]any) { b["route"] = "remediations/{id}/rollback" })
		}, want: "RemediationRollback: binding 0: route = remediations/{id}/rollback"},
		{name: "methods", mutate: func(t *testing.T, root string) {
			editBinding(t, root, "ManualTrigger", 0, func(b map[string]any) { b["methods"] = []any{"get", "post"} })
		}, want: "ManualTrigger: binding 0: methods = [get post], want [post]"},
		{name: "authLevel", mutate: func(t *testing.T, root string) {
			editBinding(t, root, "RemediationStatus", 0, func(b map[string]any) { b["authLevel"] = "anonymous" })
		}, want: "RemediationStatus: binding 0: authLevel = anonymous, want function"},
		{name: "http output", mutate: func(t *testing.T, root string) {
			editJSON(t, filepath.Join(root, "functions", "ManualTrigger", "function.json"), func(doc map[string]any) {
				doc["bindings"] = doc["bindings"].([]any)[:1]
			})
		}, want: "ManualTrigger: 1 bindings, want 2"},
		{name: "schedule", mutate: func(t *testing.T, root string) {
			editBinding(t, root, "Janitor", 0, func(b map[string]any) { b["schedule"] = "0 */5 * * * *" })
		}, want: "Janitor: binding 0: schedule = 0 */5 * * * *, want 0 */15 * * * *"},
		{name: "unknown top-level key", mutate: func(t *testing.T, root string) {
			editJSON(t, filepath.Join(root, "functions", "Snapshot", "function.json"), func(doc map[string]any) { doc["scriptFile"] = "handler" })
		}, want: `Snapshot: function.json: json: unknown field "scriptFile"`},
		{name: "function name breaks host rules", defs: func() []functions.Def {
			defs := slices.Clone(functions.All)
			defs[0].Name = "9Lives"
			return defs
		}, want: `function name "9Lives" breaks the host's rules`},
		{name: "function named host", defs: func() []functions.Def {
			defs := slices.Clone(functions.All)
			defs[0].Name = "Host"
			return defs
		}, want: `function name "Host" breaks the host's rules`},
		{name: "names differing in case", defs: func() []functions.Def {
			defs := slices.Clone(functions.All)
			defs[1].Name = strings.ToLower(defs[0].Name)
			return defs
		}, want: "collide"},
		{name: "binding name breaks host rules", defs: func() []functions.Def {
			defs := slices.Clone(functions.All)
			defs[0].Binding = "the-event"
			return defs
		}, want: `binding name "the-event" breaks the host's rules`},
		{name: "forwarding off", mutate: func(t *testing.T, root string) {
			editHost(t, root, func(h map[string]any) { delete(section(h, "customHandler"), "enableForwardingHttpRequest") })
		}, want: "enableForwardingHttpRequest must be true"},
		{name: "bundle range", mutate: func(t *testing.T, root string) {
			editHost(t, root, func(h map[string]any) { section(h, "extensionBundle")["version"] = "[3.*, 4.0.0)" })
		}, want: "extensionBundle"},
		{name: "executable", mutate: func(t *testing.T, root string) {
			editHost(t, root, func(h map[string]any) {
				section(h, "customHandler", "description")["defaultExecutablePath"] = "handler.exe"
			})
		}, want: `defaultExecutablePath "handler.exe"`},
		{name: "route prefix", mutate: func(t *testing.T, root string) {
			editHost(t, root, func(h map[string]any) { section(h, "extensions", "http")["routePrefix"] = "" })
		}, want: "routePrefix"},
		{name: "lock renewal not longer than functionTimeout", mutate: func(t *testing.T, root string) {
			editHost(t, root, func(h map[string]any) {
				section(h, "extensions", "serviceBus")["maxAutoLockRenewalDuration"] = h["functionTimeout"]
			})
		}, want: "must be longer than functionTimeout"},
		{name: "functionTimeout shorter than a stage", mutate: func(t *testing.T, root string) {
			editHost(t, root, func(h map[string]any) { h["functionTimeout"] = "00:10:00" })
		}, want: "shorter than the longest stage"},
		{name: "functionTimeout unbounded", mutate: func(t *testing.T, root string) {
			editHost(t, root, func(h map[string]any) { h["functionTimeout"] = "-1" })
		}, want: "not a bounded time span"},
		{name: "unbounded concurrency", mutate: func(t *testing.T, root string) {
			editHost(t, root, func(h map[string]any) { delete(section(h, "extensions", "serviceBus"), "maxConcurrentCalls") })
		}, want: "maxConcurrentCalls 0"},
		{name: "prefetch", mutate: func(t *testing.T, root string) {
			editHost(t, root, func(h map[string]any) { section(h, "extensions", "serviceBus")["prefetchCount"] = 100 })
		}, want: "prefetchCount must be 0"},
		{name: "host.json not JSON", mutate: func(t *testing.T, root string) {
			if err := os.WriteFile(filepath.Join(root, "host.json"), []byte(`{"version": "2.0",}`), 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: "host.json: invalid character"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := copyApp(t)
			defs := functions.All
			if tc.defs != nil {
				defs = tc.defs()
			}
			if tc.mutate != nil {
				tc.mutate(t, root)
			}
			var errs []error
			errs = append(errs, checkTable(defs)...)
			errs = append(errs, checkFolders(root, defs)...)
			errs = append(errs, checkHost(filepath.Join(root, "host.json"))...)
			for _, err := range errs {
				if strings.Contains(err.Error(), tc.want) {
					return
				}
			}
			t.Errorf("no check reported %q; got %v", tc.want, errors.Join(errs...))
		})
	}
}

func TestParseTimeSpan(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"00:30:00", 30 * time.Minute, true},
		{"01:00:00", time.Hour, true},
		{"1.02:03:04", 26*time.Hour + 3*time.Minute + 4*time.Second, true},
		{"00:00:00.80", 800 * time.Millisecond, true},
		{"-1", 0, false},
		{"", 0, false},
		{"00:00:00", 0, false},
		{"30:00", 0, false},
		{"00:60:00", 0, false},
	}
	for _, tc := range cases {
		got, err := parseTimeSpan(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseTimeSpan(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}
