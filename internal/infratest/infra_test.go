package infratest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmrescue/vmrescue/internal/config"
	"github.com/vmrescue/vmrescue/internal/functions"
	"github.com/vmrescue/vmrescue/internal/incident"
	"github.com/vmrescue/vmrescue/internal/permissions"
)

// repoRoot is the directory holding go.mod, above the test's working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}

func loadRepo(t *testing.T) (string, Infra) {
	t.Helper()
	root := repoRoot(t)
	infra, err := LoadInfra(root)
	if err != nil {
		t.Fatal(err)
	}
	return root, infra
}

// functionQueues returns the Service Bus queues and connections of functions/*/function.json; when
// the folders are not there yet, it says so and returns ok false.
func functionQueues(t *testing.T, root string) (map[string]string, []string, bool) {
	t.Helper()
	fns, err := LoadFunctionJSON(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) == 0 {
		t.Log("no functions/*/function.json: checking against internal/functions only")
		return nil, nil, false
	}
	q, conns := ServiceBusTriggers(fns)
	return q, conns, true
}

func tableQueues() []string {
	var qs []string
	for _, d := range functions.All {
		if d.Trigger == functions.ServiceBus {
			qs = append(qs, d.Queue)
		}
	}
	return qs
}

func codeQueues() []string {
	var qs []string
	for _, s := range incident.Queues {
		qs = append(qs, s.Queue())
	}
	return qs
}

func report(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		t.Error(err)
	}
}

// TestRepository runs every check on the repository's own templates, function.json files and
// code: each must find nothing wrong.
func TestRepository(t *testing.T) {
	t.Parallel()
	root, infra := loadRepo(t)
	jsonQueues, conns, haveJSON := functionQueues(t, root)
	if !haveJSON {
		conns = []string{functions.Connection}
	}

	tests := []struct {
		name  string
		check func(t *testing.T) []error
	}{
		{"every app setting the handler needs is set", func(t *testing.T) []error {
			set := infra.AppSettings()
			t.Logf("infra sets %d app settings", len(set))
			return CheckAppSettings(set, config.Settings, conns)
		}},
		{"queue names agree", func(t *testing.T) []error {
			iq, err := infra.Queues()
			if err != nil {
				return []error{err}
			}
			t.Logf("infra queues: %v", iq)
			sources := []QueueSource{
				{"incident.Queues", codeQueues()},
				{"functions.All", tableQueues()},
				{ServiceBusTemplate, iq},
			}
			errs := CheckTriggerQueuesIf(haveJSON, jsonQueues)
			if haveJSON {
				sources = append(sources, QueueSource{"functions/*/function.json", Values(jsonQueues)})
			}
			return append(errs, CheckQueues(sources...)...)
		}},
		{"queues detect duplicates, lock at most five minutes and forward dead letters", func(t *testing.T) []error {
			return infra.CheckQueueSettings()
		}},
		{"operator role grants exactly permissions.ARMActions", func(t *testing.T) []error {
			granted, err := infra.RoleActions("operatorActions", "actions")
			if err != nil {
				return []error{err}
			}
			t.Logf("operator role: %d actions", len(granted))
			return CheckRoleActions("vmrescue operator", granted, permissions.ARMActions)
		}},
		{"blob tags role grants exactly permissions.BlobDataActions", func(t *testing.T) []error {
			granted, err := infra.RoleActions("blobTagDataActions", "dataActions")
			if err != nil {
				return []error{err}
			}
			return CheckRoleActions("vmrescue blob index tags", granted, permissions.BlobDataActions)
		}},
		{"no template outputs a secret", func(t *testing.T) []error {
			return infra.CheckOutputs()
		}},
		{"Event Grid delivers to the HealthAlert function", func(t *testing.T) []error {
			name, err := infra.FunctionTarget()
			if err != nil {
				return []error{err}
			}
			return CheckFunctionTarget(name, functions.All)
		}},
		{"parameter files only set declared parameters", func(t *testing.T) []error {
			files := map[string][]byte{}
			for _, n := range []string{"infra/main.parameters.json", "infra/main.parameters.example.json"} {
				raw, err := os.ReadFile(filepath.Join(root, n))
				if err != nil {
					return []error{err}
				}
				files[n] = raw
			}
			return CheckParameterFiles(infra[MainTemplate], files)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			report(t, tc.check(t))
		})
	}
}

// CheckTriggerQueuesIf compares function.json with the function table when function.json files
// exist.
func CheckTriggerQueuesIf(have bool, jsonQueues map[string]string) []error {
	if !have {
		return nil
	}
	return CheckTriggerQueues(jsonQueues, functions.All)
}

// infraOf builds an in-memory tree of templates.
func infraOf(files map[string]string) Infra {
	in := Infra{}
	for p, src := range files {
		in[p] = ParseBicep(p, src)
	}
	return in
}

// wantErrors asserts that errs has one error containing each of want, and no other.
func wantErrors(t *testing.T, errs []error, want ...string) {
	t.Helper()
	got := errors.Join(errs...)
	if len(errs) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(errs), len(want), got)
	}
	for _, w := range want {
		if got == nil || !strings.Contains(got.Error(), w) {
			t.Errorf("no problem mentions %q; got:\n%v", w, got)
		}
	}
}

// TestChecksFail proves that each check can fail: each case feeds a small template (or list) with
// one known fault and asserts that exactly that fault is reported.
func TestChecksFail(t *testing.T) {
	t.Parallel()

	settings := []config.Setting{
		{Name: "VMRESCUE_A", Infra: true},
		{Name: "VMRESCUE_B", Infra: true},
		{Name: "VMRESCUE_LOCAL_ONLY"},
	}
	serviceBus := func(stages, failed string) Infra {
		return infraOf(map[string]string{ServiceBusTemplate: `
var failedQueueName = '` + failed + `'
var stageQueues = [
  {
    name: 'snapshot' // the first stage
    lockDuration: 'PT5M'
  }
  {
    name: '` + stages + `'
    lockDuration: 'PT5M'
  }
]
resource q 'x' = [for q in stageQueues: {
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
    forwardDeadLetteredMessagesTo: failedQueue.name
    maxDeliveryCount: maxDeliveryCount
  }
}]
`})
	}
	roles := func(actions string) Infra {
		return infraOf(map[string]string{RolesTemplate: `
var operatorActions = [
` + actions + `
]
resource r 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  properties: {
    permissions: [
      {
        actions: operatorActions
      }
    ]
  }
}
`})
	}

	tests := []struct {
		name  string
		check func() []error
		want  []string // substrings, one per expected problem; none: the case must pass
	}{
		{
			name: "app setting missing",
			check: func() []error {
				in := infraOf(map[string]string{"infra/main.bicep": `
var handlerSettings = {
  'VMRESCUE_A': 'x'
  nested: {
    VMRESCUE_B: 'not a top-level key'
  }
}`})
				return CheckAppSettings(in.AppSettings(), settings, nil)
			},
			want: []string{"VMRESCUE_B: the handler reads it"},
		},
		{
			name: "app setting only in a comment",
			check: func() []error {
				in := infraOf(map[string]string{"infra/main.bicep": `
var appSettings = {
  VMRESCUE_A: 'x'
  // 'VMRESCUE_B': 'commented out'
  /* VMRESCUE_B: 'also' */
}`})
				return CheckAppSettings(in.AppSettings(), settings, nil)
			},
			want: []string{"VMRESCUE_B: the handler reads it"},
		},
		{
			name: "app setting the handler does not read",
			check: func() []error {
				in := infraOf(map[string]string{"infra/main.bicep": `
var appSettings = {
  'VMRESCUE_A': 'https://a.example//x'
  'VMRESCUE_B': '${x ? '}' : '{'}'
  'VMRESCUE_TYPO': 'x'
}`})
				return CheckAppSettings(in.AppSettings(), settings, nil)
			},
			want: []string{"VMRESCUE_TYPO: infra sets it but the handler does not read it"},
		},
		{
			name: "trigger connection without its namespace setting",
			check: func() []error {
				in := infraOf(map[string]string{"infra/main.bicep": `
var appSettings = {
  'VMRESCUE_A': 'a'
  'VMRESCUE_B': 'b'
  'ServiceBus__fullyQualifiedNamespace': 'ns'
}`})
				return CheckAppSettings(in.AppSettings(), settings, []string{"ServiceBus", "OtherBus"})
			},
			want: []string{"OtherBus__fullyQualifiedNamespace"},
		},
		{
			name: "all app settings set",
			check: func() []error {
				in := infraOf(map[string]string{"infra/main.bicep": `
var appSettings = {
  'VMRESCUE_A': 'a'
  VMRESCUE_B: 'b'
}`})
				return CheckAppSettings(in.AppSettings(), settings, nil)
			},
		},
		{
			name: "queue renamed in infra",
			check: func() []error {
				iq, err := serviceBus("rescue-attach", "dead").Queues()
				if err != nil {
					return []error{err}
				}
				return CheckQueues(
					QueueSource{"code", []string{"snapshot", "rescue-attach", "failed"}},
					QueueSource{"infra", iq},
				)
			},
			want: []string{`queue "dead": in infra but not in code`, `queue "failed": in code but not in infra`},
		},
		{
			name: "queue missing from function.json",
			check: func() []error {
				return CheckQueues(
					QueueSource{"code", []string{"snapshot", "failed"}},
					QueueSource{"function.json", []string{"snapshot", "snapshot"}},
				)
			},
			want: []string{"listed twice in function.json", `queue "failed": in code but not in function.json`},
		},
		{
			name: "function.json listens on another queue than the table",
			check: func() []error {
				defs := []functions.Def{{Name: "Snapshot", Trigger: functions.ServiceBus, Queue: "snapshot"}, {Name: "Failed", Trigger: functions.ServiceBus, Queue: "failed"}}
				return CheckTriggerQueues(map[string]string{"Snapshot": "snapshots"}, defs)
			},
			want: []string{`function Snapshot: function.json listens on "snapshots"`, "function Failed: no serviceBusTrigger"},
		},
		{
			name: "queues agree",
			check: func() []error {
				iq, err := serviceBus("rescue-attach", "failed").Queues()
				if err != nil {
					return []error{err}
				}
				return CheckQueues(QueueSource{"code", []string{"snapshot", "rescue-attach", "failed"}}, QueueSource{"infra", iq})
			},
		},
		{
			name: "lock duration over five minutes, no forwarding",
			check: func() []error {
				return infraOf(map[string]string{ServiceBusTemplate: `
var stageQueues = [
  {
    name: 'snapshot'
    lockDuration: 'PT10M'
  }
]
requiresDuplicateDetection: true
duplicateDetectionHistoryTimeWindow: duplicateDetectionWindow
maxDeliveryCount: maxDeliveryCount
`}).CheckQueueSettings()
			},
			want: []string{"lockDuration PT10M", `no "forwardDeadLetteredMessagesTo: failedQueue.name"`},
		},
		{
			name: "role lacks an action and grants another",
			check: func() []error {
				granted, err := roles(`  'Microsoft.Compute/disks/read'
  'Microsoft.Compute/virtualMachines/delete'
  // 'Microsoft.Compute/snapshots/read'`).RoleActions("operatorActions", "actions")
				if err != nil {
					return []error{err}
				}
				return CheckRoleActions("operator", granted, []string{"Microsoft.Compute/disks/read", "Microsoft.Compute/snapshots/read"})
			},
			want: []string{"lacks Microsoft.Compute/snapshots/read", "grants Microsoft.Compute/virtualMachines/delete"},
		},
		{
			name: "role with a wildcard and a duplicate",
			check: func() []error {
				granted, err := roles(`  'Microsoft.Compute/disks/read'
  'microsoft.compute/DISKS/read'
  'Microsoft.Compute/*'`).RoleActions("operatorActions", "actions")
				if err != nil {
					return []error{err}
				}
				return CheckRoleActions("operator", granted, []string{"Microsoft.Compute/disks/read"})
			},
			want: []string{"listed twice", "wildcard Microsoft.Compute/*"},
		},
		{
			name: "role variable not used by any role definition",
			check: func() []error {
				_, err := infraOf(map[string]string{RolesTemplate: `
var operatorActions = [
  'Microsoft.Compute/disks/read'
]
resource r 'x' = {
  properties: {
    permissions: [
      {
        actions: [
          'Microsoft.Compute/*'
        ]
      }
    ]
  }
}`}).RoleActions("operatorActions", "actions")
				return []error{err}
			},
			want: []string{"no role definition has actions: operatorActions"},
		},
		{
			name: "role matches, case aside",
			check: func() []error {
				granted, err := roles(`  'microsoft.compute/disks/READ'`).RoleActions("operatorActions", "actions")
				if err != nil {
					return []error{err}
				}
				return CheckRoleActions("operator", granted, []string{"Microsoft.Compute/disks/read"})
			},
		},
		{
			name: "outputs that expose secrets",
			check: func() []error {
				return infraOf(map[string]string{"infra/modules/x.bicep": `
@secure()
param adminPassword string

@description('''
A multi-line description.
''')
@secure()
param token string

output name string = account.name
output endpoint string = account.properties.primaryEndpoints.blob
output key string = account.listKeys().keys[0].value
output keys object = listKeys(account.id, '2023-05-01')
output conn string = 'DefaultEndpointsProtocol=https;AccountName=${account.name};AccountKey=${k}'
output ai string = appInsights.properties.ConnectionString
output url string = '${blob}?${account.listServiceSas('2023-05-01', {
    canonicalizedResource: '/blob/x'
  }).serviceSasToken}'
output pw string = adminPassword
output copied object = {
  value: token
}
@secure()
output hidden string = 'x'
output storageSasToken string = 'x'
// output commented string = listKeys(account.id, '2023-05-01')
output site string = 'https://a.example//x'
`}).CheckOutputs()
			},
			want: []string{
				"output key exposes a secret",
				"output keys exposes a secret",
				"output conn exposes a secret",
				"output ai exposes a secret",
				"output url exposes a secret",
				"output pw exposes a secret (Password)",
				"output copied returns the @secure() parameter token",
				"output hidden is a @secure() output",
				"output storageSasToken: its name says it holds a secret",
			},
		},
		{
			name: "event subscription to a function that is not Event Grid-triggered",
			check: func() []error {
				name, err := infraOf(map[string]string{HealthAlertsTemplate: `
param functionName string = 'Snapshot'
var d = '${functionAppId}/functions/${functionName}'
`}).FunctionTarget()
				if err != nil {
					return []error{err}
				}
				return CheckFunctionTarget(name, functions.All)
			},
			want: []string{"function Snapshot: Event Grid delivers to it but its trigger is serviceBusTrigger"},
		},
		{
			name: "event subscription to an unknown function",
			check: func() []error {
				return CheckFunctionTarget("HealthAlerts", functions.All)
			},
			want: []string{"not in the function table"},
		},
		{
			name: "parameter file sets an undeclared parameter",
			check: func() []error {
				main := ParseBicep(MainTemplate, "param location string\n@secure()\nparam password string = ''\n")
				return CheckParameterFiles(main, map[string][]byte{
					"good.json": []byte(`{"parameters": {"location": {"value": "x"}, "password": {"value": "y"}}}`),
					"bad.json":  []byte(`{"parameters": {"location": {"value": "x"}, "locaton": {"value": "y"}}}`),
				})
			},
			want: []string{"bad.json: parameter locaton is not declared"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantErrors(t, tc.check(), tc.want...)
		})
	}
}

// TestLex checks the lexer on the cases the checks depend on.
func TestLex(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src, want string
	}{
		{"line comment", "a // b\nc", "a     \nc"},
		{"block comment keeps newlines", "a /* b\nc */ d", "a     \n     d"},
		{"slashes in a string", "x = 'https://a'// c", "x = 'https://a'    "},
		{"escaped quote", `x = 'it\'s // not'`, `x = 'it\'s // not'`},
		{"interpolation with strings", "x = '${a ? '//' : 'b'}' // c", "x = '${a ? '//' : 'b'}'     "},
		{"multi-line string", "x = '''\n// kept\n''' // gone", "x = '''\n// kept\n'''        "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got, _ := lex(tc.src); got != tc.want {
				t.Errorf("lex(%q) =\n%q\nwant\n%q", tc.src, got, tc.want)
			}
		})
	}
}
