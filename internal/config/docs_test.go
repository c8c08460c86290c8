package config

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestSettingsAppearInSampleAndREADME fails when a setting the handler reads is missing from
// local.settings.sample.json or from the README's configuration table.
func TestSettingsAppearInSampleAndREADME(t *testing.T) {
	var sample struct {
		Values map[string]string
	}
	data, err := os.ReadFile("../../local.settings.sample.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &sample); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if sample.Values["FUNCTIONS_WORKER_RUNTIME"] != "custom" || sample.Values["AzureWebJobsStorage"] != "UseDevelopmentStorage=true" {
		t.Error("sample must set FUNCTIONS_WORKER_RUNTIME=custom and AzureWebJobsStorage=UseDevelopmentStorage=true")
	}
	for _, s := range Settings {
		if _, ok := sample.Values[s.Name]; !ok && s.Name != Port {
			t.Errorf("local.settings.sample.json lacks %s", s.Name)
		}
		if !strings.Contains(string(readme), "| `"+s.Name+"` |") {
			t.Errorf("README configuration table lacks %s", s.Name)
		}
	}
	for k := range sample.Values {
		if k == "FUNCTIONS_WORKER_RUNTIME" || k == "AzureWebJobsStorage" {
			continue
		}
		found := false
		for _, s := range Settings {
			found = found || s.Name == k
		}
		if !found {
			t.Errorf("local.settings.sample.json sets %s, which the handler does not read", k)
		}
	}
}
