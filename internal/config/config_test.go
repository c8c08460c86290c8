package config

import (
	"strings"
	"testing"
	"time"

	"github.com/vmrescue/vmrescue/internal/resourceid"
)

const rescue = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-vmrescue/providers/Microsoft.Compute/virtualMachines/rescue-1"

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func valid() map[string]string {
	return map[string]string{
		Port:                 "8080",
		ServiceBusNamespace:  "ns.servicebus.windows.net",
		StorageBlobURL:       "https://acct.blob.core.windows.net",
		AllowedSubscriptions: "11111111-2222-3333-4444-555555555555",
		RescueVMs:            rescue,
		ContactFirstName:     "Ops",
		ContactLastName:      "Team",
		ContactEmail:         "ops@example.com",
	}
}

func TestLoadValid(t *testing.T) {
	c, err := Load(env(valid()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 8080 || c.ReproWait != 10*time.Minute || c.ARMWritesPerHour != 1200 || c.AuditContainer != "audit" || !c.LeaveDeallocated ||
		c.Support.Severity != "moderate" || c.ARMEndpoint != "https://management.azure.com" || c.TimeScale != 1 {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestLoadNamesEveryProblem(t *testing.T) {
	tests := []struct {
		name string
		set  map[string]string
		want []string // every one must appear in the error
	}{
		{"nothing set", map[string]string{}, []string{Port, ServiceBusNamespace, StorageBlobURL, AllowedSubscriptions, RescueVMs, ContactEmail}},
		{"legacy port accepted", map[string]string{Port: "", PortLegacy: "x"}, []string{PortLegacy + " must be a TCP port"}},
		{"bad values", map[string]string{Port: "70000", ReproWait: "soon", SupportSeverity: "urgent", ContactEmail: "not-an-email",
			AuditContainer: "Audit_Trail", StorageBlobURL: "http://acct.blob.core.windows.net", LeaveDeallocated: "maybe"},
			[]string{Port, ReproWait, SupportSeverity, ContactEmail, AuditContainer, StorageBlobURL + " must use https", LeaveDeallocated}},
		{"bad ids", map[string]string{AllowedSubscriptions: "sub1", RescueVMs: rescue + ",/subscriptions/x;rm"}, []string{AllowedSubscriptions, RescueVMs}},
		{"tickets off need no contact", map[string]string{SupportEnabled: "false", ContactEmail: "", Port: ""}, []string{Port}},
		{"time scale out of range", map[string]string{TimeScale: "0"}, []string{TimeScale + " must be a number greater than 0"}},
		{"time scale negative", map[string]string{TimeScale: "-2"}, []string{TimeScale}},
		{"write budget not a count", map[string]string{ARMWritesPerHour: "-1"}, []string{ARMWritesPerHour + " must be a whole number"}},
		{"write budget not a number", map[string]string{ARMWritesPerHour: "lots"}, []string{ARMWritesPerHour}},
		{"time scale not a number", map[string]string{TimeScale: "fast"}, []string{TimeScale}},
		{"namespace with path", map[string]string{ServiceBusNamespace: "https://ns.servicebus.windows.net/"}, []string{ServiceBusNamespace}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kv := valid()
			if tc.name == "nothing set" {
				kv = map[string]string{}
			}
			for k, v := range tc.set {
				kv[k] = v
			}
			_, err := Load(env(kv))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q:\n%v", w, err)
				}
			}
			if tc.name == "tickets off need no contact" && strings.Contains(err.Error(), ContactEmail) {
				t.Errorf("contact required with tickets off:\n%v", err)
			}
		})
	}
}

func TestInScope(t *testing.T) {
	kv := valid()
	kv[AllowedResourceGroups] = "rg-erp, 11111111-2222-3333-4444-555555555555/RG-Web"
	c, err := Load(env(kv))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id   string
		want bool
	}{
		{"/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/RG-ERP/providers/Microsoft.Compute/virtualMachines/a", true},
		{"/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/a", true},
		{"/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-other/providers/Microsoft.Compute/virtualMachines/a", false},
		{"/subscriptions/99999999-2222-3333-4444-555555555555/resourceGroups/rg-erp/providers/Microsoft.Compute/virtualMachines/a", false},
	}
	for _, tc := range tests {
		id, err := resourceid.ParseVM(tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.InScope(id); got != tc.want {
			t.Errorf("InScope(%s) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestSettingsDocumented(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Settings {
		if s.Doc == "" || seen[s.Name] {
			t.Errorf("setting %s: missing doc or listed twice", s.Name)
		}
		seen[s.Name] = true
	}
}
