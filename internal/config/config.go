// Package config reads every setting vmrescue uses from the environment, once, and validates them
// all together so that a misconfigured app names every problem in one message.
//
// Settings is the single list of app settings: the README table, local.settings.sample.json and the
// infrastructure templates are checked against it by tests.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vmrescue/vmrescue/internal/resourceid"
)

// Setting describes one app setting.
type Setting struct {
	Name     string
	Required bool   // the handler refuses to start without it
	Default  string // used when unset
	Example  string // example value for local.settings.sample.json and the README
	Doc      string
	// Infra is false for settings that the platform sets itself (the Functions host's port) or that
	// only the local host uses; the infrastructure templates need not set those.
	Infra bool
}

// Names of the settings.
const (
	Port                   = "FUNCTIONS_CUSTOMHANDLER_PORT"
	PortLegacy             = "FUNCTIONS_HTTPWORKER_PORT"
	ServiceBusNamespace    = "ServiceBus__fullyQualifiedNamespace"
	LocalBusURL            = "VMRESCUE_LOCAL_BUS_URL"
	TimeScale              = "VMRESCUE_TIME_SCALE"
	StorageBlobURL         = "VMRESCUE_STORAGE_BLOB_URL"
	StorageConnection      = "VMRESCUE_STORAGE_CONNECTION_STRING"
	ClientID               = "AZURE_CLIENT_ID"
	ARMEndpoint            = "VMRESCUE_ARM_ENDPOINT"
	AllowedSubscriptions   = "VMRESCUE_ALLOWED_SUBSCRIPTIONS"
	AllowedResourceGroups  = "VMRESCUE_ALLOWED_RESOURCE_GROUPS"
	RescueVMs              = "VMRESCUE_RESCUE_VMS"
	ReproWait              = "VMRESCUE_REPRO_WAIT"
	ARMWritesPerHour       = "VMRESCUE_ARM_WRITES_PER_HOUR"
	PollInterval           = "VMRESCUE_POLL_INTERVAL"
	OptOutTag              = "VMRESCUE_OPTOUT_TAG"
	Retention              = "VMRESCUE_RETENTION"
	StallTimeout           = "VMRESCUE_STALL_TIMEOUT"
	LeaveDeallocated       = "VMRESCUE_LEAVE_DEALLOCATED"
	SupportEnabled         = "VMRESCUE_SUPPORT_TICKETS"
	SupportSeverity        = "VMRESCUE_SUPPORT_SEVERITY"
	SupportClassification  = "VMRESCUE_SUPPORT_PROBLEM_CLASSIFICATION"
	ContactFirstName       = "VMRESCUE_SUPPORT_CONTACT_FIRST_NAME"
	ContactLastName        = "VMRESCUE_SUPPORT_CONTACT_LAST_NAME"
	ContactEmail           = "VMRESCUE_SUPPORT_CONTACT_EMAIL"
	ContactCountry         = "VMRESCUE_SUPPORT_CONTACT_COUNTRY"
	ContactLanguage        = "VMRESCUE_SUPPORT_CONTACT_LANGUAGE"
	ContactTimeZone        = "VMRESCUE_SUPPORT_CONTACT_TIMEZONE"
	EventGridTopicEndpoint = "VMRESCUE_EVENTGRID_TOPIC_ENDPOINT"
	AuditContainer         = "VMRESCUE_AUDIT_CONTAINER"
	DumpsContainer         = "VMRESCUE_DUMPS_CONTAINER"
	LocksContainer         = "VMRESCUE_LOCKS_CONTAINER"
	ToolsContainer         = "VMRESCUE_TOOLS_CONTAINER"
	AgentBinary            = "VMRESCUE_AGENT_BINARY"
	ShutdownTimeout        = "VMRESCUE_SHUTDOWN_TIMEOUT"
	LogLevel               = "VMRESCUE_LOG_LEVEL"
)

// Settings lists every app setting the handler reads.
var Settings = []Setting{
	{Name: Port, Required: true, Example: "8080", Doc: "Port the custom handler listens on, on 127.0.0.1. Set by the Functions host; FUNCTIONS_HTTPWORKER_PORT is accepted as a fallback."},
	{Name: ServiceBusNamespace, Example: "vmrescue-sb.servicebus.windows.net", Infra: true, Doc: "Service Bus namespace (identity-based connection `ServiceBus`): the queue triggers read it, and the handler sends the next stage's message there. Required unless VMRESCUE_LOCAL_BUS_URL is set."},
	{Name: LocalBusURL, Example: "", Doc: "Local host only: URL of the in-memory queues of `handler local`. Replaces Service Bus."},
	{Name: TimeScale, Default: "1", Example: "1", Doc: "Local host only: the factor by which `handler local` compresses scheduled waits (its --time-scale). A wait the handler measures on the clock (ARM's Retry-After, the time a snapshot copy has left) is divided by it before it is scheduled, so that the host does not shorten it a second time. Always 1 in Azure."},
	{Name: StorageBlobURL, Example: "https://vmrescuest.blob.core.windows.net", Infra: true, Doc: "Blob endpoint of the storage account holding the audit trail, locks, dumps and the agent binary; reached with the managed identity. Required unless VMRESCUE_STORAGE_CONNECTION_STRING is set."},
	{Name: StorageConnection, Example: "UseDevelopmentStorage=true", Doc: "Local development only: a storage connection string (Azurite). Takes precedence over VMRESCUE_STORAGE_BLOB_URL."},
	{Name: ClientID, Example: "00000000-0000-0000-0000-000000000000", Infra: true, Doc: "Client id of the user-assigned managed identity. Empty uses the developer's credentials (Azure CLI, environment)."},
	{Name: ARMEndpoint, Default: "https://management.azure.com", Example: "https://management.azure.com", Doc: "Azure Resource Manager endpoint. Only changed to point at the local simulator."},
	{Name: AllowedSubscriptions, Required: true, Example: "11111111-2222-3333-4444-555555555555", Infra: true, Doc: "Comma-separated subscription ids whose VMs vmrescue may remediate. Alerts and requests for any other subscription are refused."},
	{Name: AllowedResourceGroups, Example: "", Infra: true, Doc: "Optional comma-separated resource groups (`name` or `subscriptionId/name`) that further narrow the scope. Empty allows every group of the allowed subscriptions."},
	{Name: RescueVMs, Required: true, Example: "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-vmrescue/providers/Microsoft.Compute/virtualMachines/rescue-weu-1", Infra: true, Doc: "Comma-separated resource ids of the rescue VMs (Windows, one or more per region and zone)."},
	{Name: ARMWritesPerHour, Default: "1200", Example: "1200", Infra: true, Doc: "ARM write budget per subscription of the app's identity (ARM's default: 1,200 writes an hour; deletes are counted apart). The pipeline spends it at the rate it refills, Run Commands first, then attaches, detaches and disk copies, so that a storm never empties it and leaves the rescue VMs idle. 0 turns pacing off. Each instance paces to the whole budget."},
	{Name: ReproWait, Default: "10m", Example: "10m", Infra: true, Doc: "How long to wait after restarting the patched VM before harvesting the dump, unless a new crash alert arrives first."},
	{Name: PollInterval, Default: "10s", Example: "10s", Doc: "Pause between reads of work in progress (a snapshot's background copy, a resumed Run Command). `handler local` scales it with --time-scale."},
	{Name: OptOutTag, Default: "vmrescue-optout", Example: "vmrescue-optout", Infra: true, Doc: "A VM carrying this tag (any value) is never remediated."},
	{Name: Retention, Default: "168h", Example: "168h", Infra: true, Doc: "How long backup snapshots are kept after an incident closes, before the Janitor removes them."},
	{Name: StallTimeout, Default: "2h", Example: "2h", Infra: true, Doc: "An incident with no progress for this long is marked failed and rolled back by the Janitor."},
	{Name: LeaveDeallocated, Default: "true", Example: "true", Infra: true, Doc: "Leave the VM deallocated once the ticket is open (true), or start it again (false)."},
	{Name: SupportEnabled, Default: "true", Example: "true", Infra: true, Doc: "Open an Azure support ticket at the end of the pipeline. false stops after the dump harvest."},
	{Name: SupportSeverity, Default: "moderate", Example: "moderate", Infra: true, Doc: "Support ticket severity: minimal, moderate, critical or highestcriticalimpact."},
	{Name: SupportClassification, Example: "", Infra: true, Doc: "Optional problem classification resource id; empty looks it up at runtime for the service \"Virtual Machine running Windows\"."},
	{Name: ContactFirstName, Example: "Ops", Infra: true, Doc: "Support ticket contact: first name. Required when tickets are enabled."},
	{Name: ContactLastName, Example: "Team", Infra: true, Doc: "Support ticket contact: last name. Required when tickets are enabled."},
	{Name: ContactEmail, Example: "ops@example.com", Infra: true, Doc: "Support ticket contact: email address. Required when tickets are enabled."},
	{Name: ContactCountry, Default: "usa", Example: "usa", Infra: true, Doc: "Support ticket contact: country, ISO 3166-1 alpha-3."},
	{Name: ContactLanguage, Default: "en-us", Example: "en-us", Infra: true, Doc: "Support ticket contact: preferred language."},
	{Name: ContactTimeZone, Default: "UTC", Example: "UTC", Infra: true, Doc: "Support ticket contact: time zone, as Windows names it (for example \"Pacific Standard Time\")."},
	{Name: EventGridTopicEndpoint, Example: "", Infra: true, Doc: "Optional Event Grid custom topic endpoint for lifecycle CloudEvents (incident opened, closed, failed)."},
	{Name: AuditContainer, Default: "audit", Example: "audit", Doc: "Blob container of the audit trail."},
	{Name: DumpsContainer, Default: "dumps", Example: "dumps", Doc: "Blob container for harvested dumps."},
	{Name: LocksContainer, Default: "locks", Example: "locks", Doc: "Blob container for VM locks and rescue LUN reservations."},
	{Name: ToolsContainer, Default: "tools", Example: "tools", Doc: "Blob container where the rescue agent binary is uploaded under its SHA-256."},
	{Name: AgentBinary, Default: "handler-agent.exe", Example: "handler-agent.exe", Doc: "Path of the rescue agent (the handler built for windows/amd64) that Run Command runs on the rescue VM; relative paths are resolved against the handler's directory. `make package` puts it at the app root."},
	{Name: ShutdownTimeout, Default: "25s", Example: "25s", Doc: "On SIGTERM, how long in-flight invocations may run before the handler exits."},
	{Name: LogLevel, Default: "info", Example: "info", Doc: "debug, info, warn or error."},
}

// Config is the validated configuration.
type Config struct {
	Port                  int
	ServiceBusNamespace   string
	LocalBusURL           string
	TimeScale             float64 // of the local host's scheduled waits; 1 in Azure
	StorageBlobURL        string
	StorageConnection     string
	ClientID              string
	ARMEndpoint           string
	AllowedSubscriptions  []string // lower-cased
	AllowedResourceGroups []string // lower-cased, "name" or "sub/name"
	RescueVMs             []string
	ReproWait             time.Duration
	ARMWritesPerHour      int // 0 paces nothing
	PollInterval          time.Duration
	OptOutTag             string
	Retention             time.Duration
	StallTimeout          time.Duration
	LeaveDeallocated      bool
	Support               Support
	EventGridTopic        string
	AuditContainer        string
	DumpsContainer        string
	LocksContainer        string
	ToolsContainer        string
	AgentBinary           string
	ShutdownTimeout       time.Duration
	LogLevel              slog.Level
}

// Support holds the support ticket settings.
type Support struct {
	Enabled        bool
	Severity       string
	Classification string
	FirstName      string
	LastName       string
	Email          string
	Country        string
	Language       string
	TimeZone       string
}

// Load reads and validates every setting; getenv is os.Getenv in production.
func Load(getenv func(string) string) (Config, error) {
	r := reader{getenv: getenv}
	var c Config
	c.Port = r.port()
	c.ServiceBusNamespace = r.str(ServiceBusNamespace)
	c.LocalBusURL = r.url(LocalBusURL, "http")
	c.TimeScale = r.scale(TimeScale)
	if c.ServiceBusNamespace == "" && c.LocalBusURL == "" {
		r.fail(ServiceBusNamespace, "is required (or VMRESCUE_LOCAL_BUS_URL for the local host)")
	}
	if ns := c.ServiceBusNamespace; ns != "" && (strings.Contains(ns, "/") || !strings.Contains(ns, ".")) {
		r.fail(ServiceBusNamespace, "must be a host name such as name.servicebus.windows.net, got %q", ns)
	}
	c.StorageConnection = r.str(StorageConnection)
	c.StorageBlobURL = r.url(StorageBlobURL, "https")
	if c.StorageBlobURL == "" && c.StorageConnection == "" {
		r.fail(StorageBlobURL, "is required (or VMRESCUE_STORAGE_CONNECTION_STRING for local development)")
	}
	c.ClientID = r.str(ClientID)
	c.ARMEndpoint = r.url(ARMEndpoint, "http")
	c.AllowedSubscriptions = r.subscriptions()
	c.AllowedResourceGroups = r.list(AllowedResourceGroups, true)
	c.RescueVMs = r.rescueVMs()
	c.ReproWait = r.duration(ReproWait, time.Second, 24*time.Hour)
	c.ARMWritesPerHour = r.count(ARMWritesPerHour, 0, 1_000_000)
	c.PollInterval = r.duration(PollInterval, time.Millisecond, 5*time.Minute)
	c.OptOutTag = r.str(OptOutTag)
	c.Retention = r.duration(Retention, time.Hour, 365*24*time.Hour)
	c.StallTimeout = r.duration(StallTimeout, 10*time.Minute, 7*24*time.Hour)
	c.LeaveDeallocated = r.bool(LeaveDeallocated)
	c.Support = Support{
		Enabled:        r.bool(SupportEnabled),
		Severity:       strings.ToLower(r.str(SupportSeverity)),
		Classification: r.str(SupportClassification),
		FirstName:      r.str(ContactFirstName),
		LastName:       r.str(ContactLastName),
		Email:          r.str(ContactEmail),
		Country:        strings.ToLower(r.str(ContactCountry)),
		Language:       strings.ToLower(r.str(ContactLanguage)),
		TimeZone:       r.str(ContactTimeZone),
	}
	switch c.Support.Severity {
	case "minimal", "moderate", "critical", "highestcriticalimpact":
	default:
		r.fail(SupportSeverity, "must be minimal, moderate, critical or highestcriticalimpact, got %q", c.Support.Severity)
	}
	if c.Support.Enabled {
		for _, n := range []string{ContactFirstName, ContactLastName, ContactEmail} {
			if r.str(n) == "" {
				r.fail(n, "is required when support tickets are enabled")
			}
		}
		if e := c.Support.Email; e != "" {
			if a, err := mail.ParseAddress(e); err != nil || a.Address != e {
				r.fail(ContactEmail, "is not an email address: %q", e)
			}
		}
		if len(c.Support.Country) != 3 {
			r.fail(ContactCountry, "must be an ISO 3166-1 alpha-3 code such as usa, got %q", c.Support.Country)
		}
	}
	if c.Support.Classification != "" && !strings.HasPrefix(strings.ToLower(c.Support.Classification), "/providers/microsoft.support/services/") {
		r.fail(SupportClassification, "must be a problem classification id (/providers/Microsoft.Support/services/.../problemClassifications/...)")
	}
	c.EventGridTopic = r.url(EventGridTopicEndpoint, "https")
	c.AuditContainer = r.container(AuditContainer)
	c.DumpsContainer = r.container(DumpsContainer)
	c.LocksContainer = r.container(LocksContainer)
	c.ToolsContainer = r.container(ToolsContainer)
	c.AgentBinary = r.str(AgentBinary)
	c.ShutdownTimeout = r.duration(ShutdownTimeout, time.Second, 10*time.Minute)
	if err := c.LogLevel.UnmarshalText([]byte(r.str(LogLevel))); err != nil {
		r.fail(LogLevel, "must be debug, info, warn or error")
	}
	if len(r.errs) > 0 {
		return Config{}, fmt.Errorf("invalid configuration:\n%w", errors.Join(r.errs...))
	}
	return c, nil
}

// InScope reports whether the VM's subscription and resource group are allowed.
func (c Config) InScope(id resourceid.ID) bool {
	sub := strings.ToLower(id.SubscriptionID)
	ok := false
	for _, s := range c.AllowedSubscriptions {
		if s == sub {
			ok = true
		}
	}
	if !ok {
		return false
	}
	if len(c.AllowedResourceGroups) == 0 {
		return true
	}
	rg := strings.ToLower(id.ResourceGroup)
	for _, g := range c.AllowedResourceGroups {
		if g == rg || g == sub+"/"+rg {
			return true
		}
	}
	return false
}

type reader struct {
	getenv func(string) string
	errs   []error
}

func (r *reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s %s", name, fmt.Sprintf(format, args...)))
}

// str returns the trimmed value, or the setting's default.
func (r *reader) str(name string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	for _, s := range Settings {
		if s.Name == name {
			return s.Default
		}
	}
	return ""
}

func (r *reader) port() int {
	name, v := Port, r.str(Port)
	if v == "" {
		name, v = PortLegacy, r.str(PortLegacy)
	}
	if v == "" {
		r.fail(Port, "is required (the Functions host sets it; FUNCTIONS_HTTPWORKER_PORT is accepted too)")
		return 0
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		r.fail(name, "must be a TCP port 1-65535, got %q", v)
		return 0
	}
	return p
}

func (r *reader) url(name, minScheme string) string {
	v := r.str(name)
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		r.fail(name, "must be an absolute URL, got %q", v)
		return ""
	}
	if minScheme == "https" && u.Scheme != "https" && !isLoopback(u.Hostname()) {
		r.fail(name, "must use https, got %q", v)
		return ""
	}
	return strings.TrimSuffix(v, "/")
}

func isLoopback(host string) bool {
	return host == "127.0.0.1" || host == "localhost" || host == "::1"
}

func (r *reader) list(name string, lower bool) []string {
	var out []string
	for _, f := range strings.Split(r.str(name), ",") {
		if f = strings.TrimSpace(f); f != "" {
			if lower {
				f = strings.ToLower(f)
			}
			out = append(out, f)
		}
	}
	return out
}

func (r *reader) subscriptions() []string {
	subs := r.list(AllowedSubscriptions, true)
	if len(subs) == 0 {
		r.fail(AllowedSubscriptions, "is required: list the subscription ids vmrescue may act in")
	}
	for _, s := range subs {
		probe := "/subscriptions/" + s + "/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
		if _, err := resourceid.ParseVM(probe); err != nil {
			r.fail(AllowedSubscriptions, "has %q, which is not a subscription id", s)
		}
	}
	return subs
}

func (r *reader) rescueVMs() []string {
	vms := r.list(RescueVMs, false)
	if len(vms) == 0 {
		r.fail(RescueVMs, "is required: list the resource ids of the rescue VMs")
	}
	for _, v := range vms {
		if _, err := resourceid.ParseVM(v); err != nil {
			r.fail(RescueVMs, "has an invalid VM id %q: %v", v, err)
		}
	}
	return vms
}

func (r *reader) duration(name string, lo, hi time.Duration) time.Duration {
	v := r.str(name)
	d, err := time.ParseDuration(v)
	if err != nil {
		r.fail(name, "must be a duration such as 10m or 2h, got %q", v)
		return 0
	}
	if d < lo || d > hi {
		r.fail(name, "must be between %s and %s, got %s", lo, hi, d)
	}
	return d
}

// count reads a whole number between lo and hi.
func (r *reader) count(name string, lo, hi int) int {
	v := r.str(name)
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		r.fail(name, "must be a whole number from %d to %d, got %q", lo, hi, v)
		return 0
	}
	return n
}

// scale reads a time scale: a positive number.
func (r *reader) scale(name string) float64 {
	v := r.str(name)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 {
		r.fail(name, "must be a number greater than 0, got %q", v)
		return 1
	}
	return f
}

func (r *reader) bool(name string) bool {
	v := r.str(name)
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, "must be true or false, got %q", v)
	}
	return b
}

func (r *reader) container(name string) string {
	v := r.str(name)
	ok := len(v) >= 3 && len(v) <= 63
	for i, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(v)-1) {
			ok = false
		}
	}
	if !ok || strings.Contains(v, "--") {
		r.fail(name, "is not a valid container name: %q", v)
	}
	return v
}
