package localhost

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/functions"
	"github.com/vmrescue/vmrescue/internal/localhost/ncrontab"
)

// Function is one function of the app as its function.json declares it.
type Function struct {
	Name    string // the folder name
	Trigger string // trigger binding type
	Binding string // trigger binding name: the key of Data in an invocation
	// serviceBusTrigger
	Queue    string
	DataType string // "", "string" or "binary"
	// httpTrigger
	Route     string   // route template without the route prefix
	Methods   []string // lower-case; empty allows every method
	AuthLevel string
	// timerTrigger
	Schedule *ncrontab.Schedule
}

// App is an Azure Functions app folder: host.json and one folder per function.
type App struct {
	Dir       string
	Functions []Function // sorted by name
	Host      HostConfig
}

// Function finds a function by name, case-insensitively as the host does.
func (a *App) Function(name string) (Function, bool) {
	for _, f := range a.Functions {
		if strings.EqualFold(f.Name, name) {
			return f, true
		}
	}
	return Function{}, false
}

// HostConfig is the part of host.json that the local host applies.
type HostConfig struct {
	ExecutablePath     string
	Arguments          []string
	ForwardHTTP        bool          // customHandler.enableForwardingHttpRequest
	RoutePrefix        string        // extensions.http.routePrefix, default "api"
	FunctionTimeout    time.Duration // default 30 minutes
	MaxConcurrentCalls int           // extensions.serviceBus.maxConcurrentCalls
	MaxAutoLockRenewal time.Duration // extensions.serviceBus.maxAutoLockRenewalDuration, default 5 minutes
}

// Defaults of host.json settings, as the Functions host applies them.
const (
	defaultRoutePrefix        = "api"
	defaultFunctionTimeout    = 30 * time.Minute
	defaultMaxAutoLockRenewal = 5 * time.Minute
)

// defaultMaxConcurrentCalls is the Service Bus extension's default: 16 per core.
var defaultMaxConcurrentCalls = func() int { return 16 * runtime.NumCPU() }

// functionNameRE is the host's rule for function names.
var functionNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,127}$`)

// supportedTriggers are the trigger types the local host runs.
var supportedTriggers = []string{functions.EventGrid, functions.HTTP, functions.ServiceBus, functions.Timer}

// LoadApp reads dir/host.json and dir/*/function.json and validates them all together, naming
// every problem in one error.
func LoadApp(dir string) (*App, error) {
	app := &App{Dir: dir}
	var errs []error
	hc, err := loadHostJSON(filepath.Join(dir, "host.json"))
	if err != nil {
		errs = append(errs, err)
	}
	app.Host = hc

	fnDir := FunctionsDir(dir)
	entries, err := os.ReadDir(fnDir)
	if err != nil {
		return nil, fmt.Errorf("app folder: %w", err)
	}
	queues := map[string]string{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		path := filepath.Join(fnDir, e.Name(), "function.json")
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // not a function folder
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fn, err := parseFunction(e.Name(), data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		if fn.Queue != "" {
			if other, dup := queues[fn.Queue]; dup {
				errs = append(errs, fmt.Errorf("%s: queue %q is already taken by function %s", path, fn.Queue, other))
				continue
			}
			queues[fn.Queue] = fn.Name
		}
		app.Functions = append(app.Functions, fn)
	}
	if len(app.Functions) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("no function folders (*/function.json) in %s", fnDir))
	}
	if err := checkRoutes(app); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("load app %s:\n%w", dir, errors.Join(errs...))
	}
	slices.SortFunc(app.Functions, func(a, b Function) int { return strings.Compare(a.Name, b.Name) })
	return app, nil
}

type bindingJSON struct {
	Type                 string   `json:"type"`
	Direction            string   `json:"direction"`
	Name                 string   `json:"name"`
	QueueName            string   `json:"queueName"`
	TopicName            string   `json:"topicName"`
	Connection           string   `json:"connection"`
	AutoCompleteMessages *bool    `json:"autoCompleteMessages"`
	IsSessionsEnabled    bool     `json:"isSessionsEnabled"`
	Cardinality          string   `json:"cardinality"`
	DataType             string   `json:"dataType"`
	Route                *string  `json:"route"`
	Methods              []string `json:"methods"`
	AuthLevel            string   `json:"authLevel"`
	Schedule             string   `json:"schedule"`
}

type functionJSON struct {
	Disabled bool          `json:"disabled"`
	Bindings []bindingJSON `json:"bindings"`
}

func parseFunction(name string, data []byte) (Function, error) {
	fn := Function{Name: name}
	if !functionNameRE.MatchString(name) {
		return fn, fmt.Errorf("function name %q breaks the host's rule (a letter, then up to 127 letters, digits, _ or -)", name)
	}
	var fj functionJSON
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&fj); err != nil {
		return fn, fmt.Errorf("function.json is not valid: %w", err)
	}
	if fj.Disabled {
		return fn, errors.New(`"disabled": true is not supported by the local host`)
	}
	var trigger *bindingJSON
	var hasHTTPOut bool
	var errs []error
	for i := range fj.Bindings {
		b := &fj.Bindings[i]
		switch {
		case b.Name == "":
			errs = append(errs, fmt.Errorf("binding %d has no name", i))
		case strings.HasSuffix(b.Type, "Trigger"):
			if trigger != nil {
				errs = append(errs, fmt.Errorf("more than one trigger (%s and %s)", trigger.Type, b.Type))
				continue
			}
			if !slices.Contains(supportedTriggers, b.Type) {
				errs = append(errs, fmt.Errorf("trigger type %q is not supported by the local host (supported: %s)",
					b.Type, strings.Join(supportedTriggers, ", ")))
				continue
			}
			if b.Direction != "in" {
				errs = append(errs, fmt.Errorf("trigger %s has direction %q, want in", b.Name, b.Direction))
			}
			trigger = b
		case b.Type == "http" && b.Direction == "out":
			hasHTTPOut = true
		default:
			errs = append(errs, fmt.Errorf("binding %s of type %q (direction %q) is not supported by the local host", b.Name, b.Type, b.Direction))
		}
	}
	if trigger == nil && len(errs) == 0 {
		errs = append(errs, errors.New("no trigger binding"))
	}
	if len(errs) > 0 {
		return fn, errors.Join(errs...)
	}
	fn.Trigger, fn.Binding = trigger.Type, trigger.Name
	switch trigger.Type {
	case functions.ServiceBus:
		fn.Queue, fn.DataType = trigger.QueueName, trigger.DataType
		switch {
		case trigger.TopicName != "":
			errs = append(errs, errors.New("serviceBusTrigger on a topic subscription is not supported by the local host; use a queue"))
		case fn.Queue == "":
			errs = append(errs, errors.New("serviceBusTrigger has no queueName"))
		}
		if trigger.IsSessionsEnabled {
			errs = append(errs, errors.New("serviceBusTrigger with sessions is not supported by the local host"))
		}
		if trigger.AutoCompleteMessages != nil && !*trigger.AutoCompleteMessages {
			errs = append(errs, errors.New("serviceBusTrigger with autoCompleteMessages false is not supported: a custom handler cannot settle messages itself"))
		}
		if strings.EqualFold(trigger.Cardinality, "many") {
			errs = append(errs, errors.New(`serviceBusTrigger with cardinality "many" is not supported by the local host`))
		}
		if fn.DataType != "" && fn.DataType != "string" && fn.DataType != "binary" {
			errs = append(errs, fmt.Errorf("serviceBusTrigger dataType %q is not string or binary", fn.DataType))
		}
	case functions.HTTP:
		if !hasHTTPOut {
			errs = append(errs, errors.New("httpTrigger without an http output binding"))
		}
		route := strings.ToLower(name)
		if trigger.Route != nil {
			route = *trigger.Route
		}
		fn.Route = strings.Trim(route, "/")
		if _, err := parseRoute(fn.Route); err != nil {
			errs = append(errs, err)
		}
		for _, m := range trigger.Methods {
			fn.Methods = append(fn.Methods, strings.ToLower(m))
		}
		fn.AuthLevel = trigger.AuthLevel
	case functions.Timer:
		s, err := ncrontab.Parse(trigger.Schedule)
		if err != nil {
			errs = append(errs, fmt.Errorf("timerTrigger schedule: %w", err))
		}
		fn.Schedule = s
	case functions.EventGrid:
	}
	return fn, errors.Join(errs...)
}

type hostJSON struct {
	Version       string `json:"version"`
	CustomHandler *struct {
		Description struct {
			DefaultExecutablePath string   `json:"defaultExecutablePath"`
			WorkingDirectory      string   `json:"workingDirectory"`
			Arguments             []string `json:"arguments"`
		} `json:"description"`
		EnableForwardingHTTPRequest bool `json:"enableForwardingHttpRequest"`
	} `json:"customHandler"`
	FunctionTimeout string `json:"functionTimeout"`
	Extensions      struct {
		HTTP struct {
			RoutePrefix *string `json:"routePrefix"`
		} `json:"http"`
		ServiceBus struct {
			MaxConcurrentCalls         int    `json:"maxConcurrentCalls"`
			AutoCompleteMessages       *bool  `json:"autoCompleteMessages"`
			MaxAutoLockRenewalDuration string `json:"maxAutoLockRenewalDuration"`
		} `json:"serviceBus"`
	} `json:"extensions"`
}

func loadHostJSON(path string) (HostConfig, error) {
	hc := HostConfig{RoutePrefix: defaultRoutePrefix, FunctionTimeout: defaultFunctionTimeout,
		MaxConcurrentCalls: defaultMaxConcurrentCalls(), MaxAutoLockRenewal: defaultMaxAutoLockRenewal}
	data, err := os.ReadFile(path)
	if err != nil {
		return hc, fmt.Errorf("host.json: %w", err)
	}
	var hj hostJSON
	if err := json.Unmarshal(data, &hj); err != nil {
		return hc, fmt.Errorf("host.json is not valid: %w", err)
	}
	var errs []error
	if hj.Version != "2.0" {
		errs = append(errs, fmt.Errorf(`host.json version is %q, want "2.0"`, hj.Version))
	}
	if hj.CustomHandler == nil {
		errs = append(errs, errors.New("host.json has no customHandler section"))
	} else {
		hc.ExecutablePath = hj.CustomHandler.Description.DefaultExecutablePath
		hc.Arguments = hj.CustomHandler.Description.Arguments
		hc.ForwardHTTP = hj.CustomHandler.EnableForwardingHTTPRequest
		if !hc.ForwardHTTP {
			errs = append(errs, errors.New("host.json customHandler.enableForwardingHttpRequest is false: the local host only forwards HTTP requests as they are"))
		}
	}
	if p := hj.Extensions.HTTP.RoutePrefix; p != nil {
		hc.RoutePrefix = strings.Trim(*p, "/")
	}
	if s := hj.FunctionTimeout; s != "" {
		d, err := parseTimeSpan(s)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("host.json functionTimeout %q is not a positive TimeSpan", s))
		} else {
			hc.FunctionTimeout = d
		}
	}
	sb := hj.Extensions.ServiceBus
	if sb.MaxConcurrentCalls < 0 {
		errs = append(errs, fmt.Errorf("host.json serviceBus.maxConcurrentCalls %d is negative", sb.MaxConcurrentCalls))
	} else if sb.MaxConcurrentCalls > 0 {
		hc.MaxConcurrentCalls = sb.MaxConcurrentCalls
	}
	if sb.AutoCompleteMessages != nil && !*sb.AutoCompleteMessages {
		errs = append(errs, errors.New("host.json serviceBus.autoCompleteMessages false is not supported: a custom handler cannot settle messages itself"))
	}
	if s := sb.MaxAutoLockRenewalDuration; s != "" {
		d, err := parseTimeSpan(s)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("host.json serviceBus.maxAutoLockRenewalDuration %q is not a TimeSpan", s))
		} else {
			hc.MaxAutoLockRenewal = d
		}
	}
	return hc, errors.Join(errs...)
}

// timeSpanRE matches .NET TimeSpan text: [-][d.]hh:mm:ss[.fffffff].
var timeSpanRE = regexp.MustCompile(`^(-)?(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$`)

// parseTimeSpan parses a .NET TimeSpan as host.json writes it ("00:40:00", "1.00:00:00",
// "00:00:00.80").
func parseTimeSpan(s string) (time.Duration, error) {
	m := timeSpanRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("TimeSpan %q: want [d.]hh:mm:ss[.fffffff]", s)
	}
	num := func(t string) int64 {
		if t == "" {
			return 0
		}
		n, _ := strconv.ParseInt(t, 10, 64)
		return n
	}
	h, mi, se := num(m[3]), num(m[4]), num(m[5])
	if h > 23 || mi > 59 || se > 59 {
		return 0, fmt.Errorf("TimeSpan %q: hours, minutes or seconds out of range", s)
	}
	d := time.Duration(num(m[2]))*24*time.Hour + time.Duration(h)*time.Hour +
		time.Duration(mi)*time.Minute + time.Duration(se)*time.Second
	if f := m[6]; f != "" {
		d += time.Duration(num(f+strings.Repeat("0", 7-len(f)))) * 100 * time.Nanosecond
	}
	if m[1] == "-" {
		d = -d
	}
	return d, nil
}

// FindAppDir returns the folder holding host.json: start itself or its nearest ancestor that has
// one.
func FindAppDir(start string) (string, error) {
	dir := start
	for {
		if _, err := os.Stat(filepath.Join(dir, "host.json")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no host.json in %s or its parents: run from the app folder or pass --app", start)
		}
		dir = parent
	}
}

// FunctionsDir is where the function folders of the app at dir are: dir/functions in the source
// tree, dir itself in a packaged app.
func FunctionsDir(dir string) string {
	if st, err := os.Stat(filepath.Join(dir, "functions")); err == nil && st.IsDir() {
		return filepath.Join(dir, "functions")
	}
	return dir
}
