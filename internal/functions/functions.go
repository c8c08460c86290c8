// Package functions is the table of the app's Azure Functions: name, trigger, binding name, and the
// queue, route or schedule that triggers each. The handler routes by this table, and a test checks
// it against functions/*/function.json, so the two cannot drift apart.
package functions

import (
	"time"

	"github.com/vmrescue/vmrescue/internal/incident"
)

// Trigger types, as function.json spells them.
const (
	EventGrid  = "eventGridTrigger"
	HTTP       = "httpTrigger"
	ServiceBus = "serviceBusTrigger"
	Timer      = "timerTrigger"
)

// Def describes one function of the contract.
type Def struct {
	Name    string   // function name = folder under functions/ = path the host POSTs to
	Trigger string   // trigger binding type
	Binding string   // name of the trigger binding, the key the handler reads in Data
	Queue   string   // serviceBusTrigger: queue name
	Route   string   // httpTrigger: route template, without the api/ prefix
	Methods []string // httpTrigger: allowed methods
	// Schedule is the timerTrigger's NCRONTAB expression.
	Schedule string
	// Stage is the pipeline stage a serviceBusTrigger function runs.
	Stage incident.Stage
}

// Connection is the app setting prefix of the identity-based Service Bus connection
// (ServiceBus__fullyQualifiedNamespace).
const Connection = "ServiceBus"

// HTTPOutput is the name of the http output binding of every httpTrigger function.
const HTTPOutput = "res"

// MaxStageDuration is the longest one invocation may run: a Run Command patch or dump harvest.
// host.json's functionTimeout must allow it, and its Service Bus lock renewal must outlast
// functionTimeout, so that no message is redelivered while its invocation still runs.
const MaxStageDuration = 20 * time.Minute

// JanitorSchedule runs the Janitor every 15 minutes.
const JanitorSchedule = "0 */15 * * * *"

// All lists every function of the contract.
var All = func() []Def {
	defs := []Def{
		{Name: "HealthAlert", Trigger: EventGrid, Binding: "event"},
		{Name: "ManualTrigger", Trigger: HTTP, Binding: "req", Route: "remediations", Methods: []string{"post"}},
		{Name: "RemediationStatus", Trigger: HTTP, Binding: "req", Route: "remediations/{incidentId?}", Methods: []string{"get"}},
		{Name: "RemediationRollback", Trigger: HTTP, Binding: "req", Route: "remediations/{incidentId}/rollback", Methods: []string{"post"}},
	}
	for _, s := range incident.Queues {
		defs = append(defs, Def{Name: s.Function(), Trigger: ServiceBus, Binding: "message", Queue: s.Queue(), Stage: s})
	}
	defs = append(defs, Def{Name: "Janitor", Trigger: Timer, Binding: "timer", Schedule: JanitorSchedule})
	return defs
}()

// Lookup finds a function by name; names are case-insensitive to the host, but vmrescue's are
// matched exactly so that a typo fails loudly.
func Lookup(name string) (Def, bool) {
	for _, d := range All {
		if d.Name == name {
			return d, true
		}
	}
	return Def{}, false
}
