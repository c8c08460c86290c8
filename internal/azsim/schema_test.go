package azsim_test

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vmrescue/vmrescue/internal/azsim"
)

// TestFleetSchemaMatchesTypes keeps fleets/fleet.schema.json (documented in the README) in step
// with the Go types: the same property names, and the same sizes.
func TestFleetSchemaMatchesTypes(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("fleets/fleet.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties map[string]struct {
			Items struct {
				Properties map[string]struct {
					Items struct {
						Properties map[string]any `json:"properties"`
					} `json:"items"`
				} `json:"properties"`
			} `json:"items"`
		} `json:"properties"`
		Defs struct {
			Size struct {
				Enum []string `json:"enum"`
			} `json:"size"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	keys := func(m any) []string {
		var out []string
		for _, k := range reflect.ValueOf(m).MapKeys() {
			out = append(out, k.String())
		}
		slices.Sort(out)
		return out
	}
	tags := func(v any) []string {
		var out []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			out = append(out, name)
		}
		slices.Sort(out)
		return out
	}
	check := func(what string, got, want []string) {
		if !slices.Equal(got, want) {
			t.Errorf("%s: schema has %v, Go type has %v", what, got, want)
		}
	}
	check("fleet", keys(schema.Properties), tags(azsim.Fleet{}))
	check("rescueVms", keys(schema.Properties["rescueVms"].Items.Properties), tags(azsim.RescueVMSpec{}))
	check("vms", keys(schema.Properties["vms"].Items.Properties), tags(azsim.VMSpec{}))
	check("dataDisks", keys(schema.Properties["vms"].Items.Properties["dataDisks"].Items.Properties), tags(azsim.DataDiskSpec{}))
	var sizes []string
	for _, s := range azsim.Sizes {
		sizes = append(sizes, s.Name)
	}
	check("sizes", schema.Defs.Size.Enum, sizes)
}
