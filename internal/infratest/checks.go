package infratest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/functions"
)

// Files of the conventions the checks rely on, relative to the repository root.
const (
	ServiceBusTemplate   = "infra/modules/servicebus.bicep"
	RolesTemplate        = "infra/modules/role-definitions.bicep"
	HealthAlertsTemplate = "infra/modules/health-alerts.bicep"
	MainTemplate         = "infra/main.bicep"
)

// Infra is the set of templates of one tree, by path relative to the root.
type Infra map[string]*Bicep

// LoadInfra reads every .bicep file under root/infra.
func LoadInfra(root string) (Infra, error) {
	infra := Infra{}
	err := filepath.WalkDir(filepath.Join(root, "infra"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".bicep") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		infra[rel] = ParseBicep(rel, string(src))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read templates: %w", err)
	}
	if len(infra) == 0 {
		return nil, fmt.Errorf("no .bicep files under %s", filepath.Join(root, "infra"))
	}
	return infra, nil
}

// paths returns the template paths in a stable order.
func (in Infra) paths() []string {
	var ps []string
	for p := range in {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// AppSettings returns every app setting name the templates set (the keys of their
// "var ...Settings" objects).
func (in Infra) AppSettings() map[string]bool {
	set := map[string]bool{}
	for _, p := range in.paths() {
		for _, k := range in[p].SettingsKeys() {
			set[k] = true
		}
	}
	return set
}

// CheckAppSettings reports each setting the handler needs (config.Settings with Infra) that the
// templates do not set, each Service Bus trigger connection without its
// <connection>__fullyQualifiedNamespace, and each VMRESCUE_ setting the templates set that the
// handler does not know (a misspelt name would otherwise be silently ignored).
func CheckAppSettings(set map[string]bool, settings []config.Setting, connections []string) []error {
	var errs []error
	known := map[string]bool{}
	for _, s := range settings {
		known[s.Name] = true
		if s.Infra && !set[s.Name] {
			errs = append(errs, fmt.Errorf("app setting %s: the handler reads it (config.Settings, Infra) but infra does not set it", s.Name))
		}
	}
	for _, c := range connections {
		if name := c + "__fullyQualifiedNamespace"; !set[name] {
			errs = append(errs, fmt.Errorf("app setting %s: function.json uses connection %q but infra does not set it", name, c))
		}
	}
	var names []string
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.HasPrefix(n, "VMRESCUE_") && !known[n] {
			errs = append(errs, fmt.Errorf("app setting %s: infra sets it but the handler does not read it (not in config.Settings)", n))
		}
	}
	return errs
}

// Queues returns the queue names the Service Bus template creates: the "name" entries of
// stageQueues and failedQueueName.
func (in Infra) Queues() ([]string, error) {
	b, ok := in[ServiceBusTemplate]
	if !ok {
		return nil, fmt.Errorf("%s: missing", ServiceBusTemplate)
	}
	stages, ok := b.VarBlock("stageQueues")
	if !ok {
		return nil, fmt.Errorf("%s: no var stageQueues = [ ... ]", ServiceBusTemplate)
	}
	var queues []string
	for _, m := range regexp.MustCompile(`(?m)^\s*name:\s*'([^'\\$]+)'`).FindAllStringSubmatch(stages, -1) {
		queues = append(queues, m[1])
	}
	failed, ok := b.VarString("failedQueueName")
	if !ok {
		return nil, fmt.Errorf("%s: no var failedQueueName = '...'", ServiceBusTemplate)
	}
	return append(queues, failed), nil
}

// QueueSource is one place that names the queues, for CheckQueues.
type QueueSource struct {
	Name   string
	Queues []string
}

// CheckQueues reports every queue name that one source has and another lacks, and duplicates
// within a source.
func CheckQueues(sources ...QueueSource) []error {
	var errs []error
	all := map[string]bool{}
	for _, s := range sources {
		seen := map[string]bool{}
		for _, q := range s.Queues {
			if seen[q] {
				errs = append(errs, fmt.Errorf("queue %q: listed twice in %s", q, s.Name))
			}
			seen[q] = true
			all[q] = true
		}
	}
	var names []string
	for q := range all {
		names = append(names, q)
	}
	sort.Strings(names)
	for _, q := range names {
		var has, lacks []string
		for _, s := range sources {
			if slices.Contains(s.Queues, q) {
				has = append(has, s.Name)
			} else {
				lacks = append(lacks, s.Name)
			}
		}
		if len(lacks) > 0 {
			errs = append(errs, fmt.Errorf("queue %q: in %s but not in %s", q, strings.Join(has, ", "), strings.Join(lacks, ", ")))
		}
	}
	return errs
}

// CheckQueueSettings reports stage queues that lack duplicate detection or dead-letter forwarding to
// the failed queue, and lock durations over the service's five-minute maximum.
func (in Infra) CheckQueueSettings() []error {
	b, ok := in[ServiceBusTemplate]
	if !ok {
		return []error{fmt.Errorf("%s: missing", ServiceBusTemplate)}
	}
	var errs []error
	for _, want := range []string{
		"requiresDuplicateDetection: true",
		"duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow",
		"forwardDeadLetteredMessagesTo: failedQueue.name",
		"maxDeliveryCount: maxDeliveryCount",
	} {
		if !strings.Contains(b.Src, want) {
			errs = append(errs, fmt.Errorf("%s: no %q", ServiceBusTemplate, want))
		}
	}
	for _, m := range regexp.MustCompile(`lockDuration:\s*'([^']*)'`).FindAllStringSubmatch(b.Src, -1) {
		if d, ok := isoMinutes(m[1]); !ok || d > 5 || d <= 0 {
			errs = append(errs, fmt.Errorf("%s: lockDuration %s is not between PT1M and PT5M", ServiceBusTemplate, m[1]))
		}
	}
	return errs
}

// isoMinutes reads PT<n>M or PT<n>S as minutes.
func isoMinutes(s string) (float64, bool) {
	var n float64
	if _, err := fmt.Sscanf(s, "PT%gM", &n); err == nil && strings.HasSuffix(s, "M") {
		return n, true
	}
	if _, err := fmt.Sscanf(s, "PT%gS", &n); err == nil && strings.HasSuffix(s, "S") {
		return n / 60, true
	}
	return 0, false
}

// RoleActions returns the string literals of "var <name> = [ ... ]" in the roles template, after
// checking that a role definition uses the variable as its <property> (actions or dataActions).
func (in Infra) RoleActions(varName, property string) ([]string, error) {
	b, ok := in[RolesTemplate]
	if !ok {
		return nil, fmt.Errorf("%s: missing", RolesTemplate)
	}
	block, ok := b.VarBlock(varName)
	if !ok {
		return nil, fmt.Errorf("%s: no var %s = [ ... ]", RolesTemplate, varName)
	}
	if !regexp.MustCompile(`\b` + property + `:\s*` + varName + `\b`).MatchString(b.Src) {
		return nil, fmt.Errorf("%s: no role definition has %s: %s", RolesTemplate, property, varName)
	}
	return Literals(block), nil
}

// CheckRoleActions reports each action the code performs (want) that the role lacks, each action
// the role grants that the code does not perform, wildcards, and duplicates. ARM compares actions
// without regard to case, and so does this.
func CheckRoleActions(role string, granted, want []string) []error {
	var errs []error
	norm := func(s []string) map[string]string {
		m := map[string]string{}
		for _, a := range s {
			k := strings.ToLower(a)
			if _, dup := m[k]; dup {
				errs = append(errs, fmt.Errorf("role %s: action %s listed twice", role, a))
			}
			m[k] = a
		}
		return m
	}
	g, w := norm(granted), norm(want)
	for _, a := range want {
		if _, ok := g[strings.ToLower(a)]; !ok {
			errs = append(errs, fmt.Errorf("role %s: lacks %s, which the code performs (internal/permissions)", role, a))
		}
	}
	for _, a := range granted {
		if strings.Contains(a, "*") {
			errs = append(errs, fmt.Errorf("role %s: grants the wildcard %s", role, a))
			continue
		}
		if _, ok := w[strings.ToLower(a)]; !ok {
			errs = append(errs, fmt.Errorf("role %s: grants %s, which the code does not perform (internal/permissions)", role, a))
		}
	}
	return errs
}

// secretWords match names and expressions that carry a credential: list* functions (listKeys,
// listSecrets, listAccountSas, ...), connection strings, keys, SAS tokens, passwords, secrets.
var secretWords = regexp.MustCompile(`(?i)(\blist\w*\s*\(|\.list\w*\s*\(|connectionstring|connection_string|primarykey|secondarykey|accountkey|sharedaccess|instrumentationkey|sastoken|\bsas\b|_sas\b|\w+sas\b|sas_|password|secret)`)

// CheckOutputs reports outputs that expose a secret: a @secure() output, an output whose name or
// expression matches secretWords, or one that returns a @secure() parameter.
func (in Infra) CheckOutputs() []error {
	var errs []error
	for _, p := range in.paths() {
		b := in[p]
		secure := b.SecureParams()
		for _, o := range b.Outputs() {
			where := fmt.Sprintf("%s:%d: output %s", p, o.Line, o.Name)
			switch {
			case o.Secure:
				errs = append(errs, fmt.Errorf("%s is a @secure() output: templates output no secret", where))
			case secretWords.MatchString(o.Name):
				errs = append(errs, fmt.Errorf("%s: its name says it holds a secret (%s)", where, secretWords.FindString(o.Name)))
			case secretWords.MatchString(o.Expression):
				errs = append(errs, fmt.Errorf("%s exposes a secret (%s)", where, strings.TrimSpace(secretWords.FindString(o.Expression))))
			default:
				for _, s := range secure {
					if regexp.MustCompile(`\b` + s + `\b`).MatchString(o.Expression) {
						errs = append(errs, fmt.Errorf("%s returns the @secure() parameter %s", where, s))
					}
				}
			}
		}
	}
	return errs
}

// FunctionTarget returns the function the Health Resources event subscriptions deliver to (the
// default of health-alerts.bicep's functionName parameter).
func (in Infra) FunctionTarget() (string, error) {
	b, ok := in[HealthAlertsTemplate]
	if !ok {
		return "", fmt.Errorf("%s: missing", HealthAlertsTemplate)
	}
	m := regexp.MustCompile(`(?m)^param\s+functionName\s+string\s*=\s*'([^']+)'`).FindStringSubmatch(b.Src)
	if m == nil {
		return "", fmt.Errorf("%s: no param functionName string = '...'", HealthAlertsTemplate)
	}
	if !strings.Contains(b.Src, "/functions/${functionName}'") {
		return "", fmt.Errorf("%s: the event subscription destination does not use functionName", HealthAlertsTemplate)
	}
	return m[1], nil
}

// CheckFunctionTarget reports a target that is not an Event Grid-triggered function of the table.
func CheckFunctionTarget(name string, defs []functions.Def) []error {
	for _, d := range defs {
		if d.Name == name {
			if d.Trigger != functions.EventGrid {
				return []error{fmt.Errorf("function %s: Event Grid delivers to it but its trigger is %s", name, d.Trigger)}
			}
			return nil
		}
	}
	return []error{fmt.Errorf("function %s: Event Grid delivers to it but it is not in the function table", name)}
}

// CheckParameterFiles reports parameters set in a parameters file that the template does not
// declare (ARM refuses them).
func CheckParameterFiles(template *Bicep, files map[string][]byte) []error {
	declared := map[string]bool{}
	for _, p := range template.Params() {
		declared[p] = true
	}
	var errs []error
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var doc struct {
			Parameters map[string]json.RawMessage `json:"parameters"`
		}
		if err := json.Unmarshal(files[n], &doc); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
			continue
		}
		if len(doc.Parameters) == 0 {
			errs = append(errs, fmt.Errorf("%s: no parameters", n))
		}
		var ps []string
		for p := range doc.Parameters {
			ps = append(ps, p)
		}
		sort.Strings(ps)
		for _, p := range ps {
			if !declared[p] {
				errs = append(errs, fmt.Errorf("%s: parameter %s is not declared in %s", n, p, template.Path))
			}
		}
	}
	return errs
}

// FunctionJSON is what the checks read of one functions/<Name>/function.json.
type FunctionJSON struct {
	Name     string
	Bindings []struct {
		Type       string `json:"type"`
		Direction  string `json:"direction"`
		Name       string `json:"name"`
		QueueName  string `json:"queueName"`
		Connection string `json:"connection"`
	} `json:"bindings"`
}

// LoadFunctionJSON reads root/functions/*/function.json; none found is not an error (nil).
func LoadFunctionJSON(root string) ([]FunctionJSON, error) {
	paths, err := filepath.Glob(filepath.Join(root, "functions", "*", "function.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []FunctionJSON
	var errs []error
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f := FunctionJSON{Name: filepath.Base(filepath.Dir(p))}
		if err := json.Unmarshal(raw, &f); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		out = append(out, f)
	}
	return out, errors.Join(errs...)
}

// ServiceBusTriggers returns, for the Service Bus-triggered functions, function name → queue, and
// the connections they use.
func ServiceBusTriggers(fns []FunctionJSON) (map[string]string, []string) {
	queues := map[string]string{}
	conns := map[string]bool{}
	for _, f := range fns {
		for _, b := range f.Bindings {
			if b.Type == functions.ServiceBus && b.Direction == "in" {
				queues[f.Name] = b.QueueName
				conns[b.Connection] = true
			}
		}
	}
	var cs []string
	for c := range conns {
		cs = append(cs, c)
	}
	sort.Strings(cs)
	return queues, cs
}

// CheckTriggerQueues reports functions whose function.json queue differs from the function table.
func CheckTriggerQueues(fromJSON map[string]string, defs []functions.Def) []error {
	var errs []error
	for _, d := range defs {
		if d.Trigger != functions.ServiceBus {
			continue
		}
		q, ok := fromJSON[d.Name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("function %s: no serviceBusTrigger in functions/%s/function.json", d.Name, d.Name))
		case q != d.Queue:
			errs = append(errs, fmt.Errorf("function %s: function.json listens on %q, the function table on %q", d.Name, q, d.Queue))
		}
	}
	return errs
}

// Values returns the values of a map, sorted.
func Values(set map[string]string) []string {
	var out []string
	for _, v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}
