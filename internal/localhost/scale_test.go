package localhost

import (
	"slices"
	"testing"

	"github.com/vmrescue/vmrescue/internal/config"
)

// TestScaleSettings: the handler's poll interval follows the simulator's time scale, so that it
// does not sleep through work the time scale made short; a value set by the operator wins.
func TestScaleSettings(t *testing.T) {
	t.Parallel()
	unset := func(string) (string, bool) { return "", false }
	cases := []struct {
		name   string
		scale  float64
		lookup func(string) (string, bool)
		want   []string
	}{
		{"demo scale", 0.01, unset, []string{"VMRESCUE_POLL_INTERVAL=100ms"}},
		{"twentieth", 0.05, unset, []string{"VMRESCUE_POLL_INTERVAL=500ms"}},
		{"floor", 0.00001, unset, []string{"VMRESCUE_POLL_INTERVAL=1ms"}},
		{"real time keeps the default", 1, unset, nil},
		{"no waiting keeps the default", 0, unset, nil},
		{"operator's value wins", 0.01, func(k string) (string, bool) { return "3s", k == config.PollInterval }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := ScaleSettings(tc.scale, tc.lookup); !slices.Equal(got, tc.want) {
				t.Errorf("ScaleSettings(%v) = %v, want %v", tc.scale, got, tc.want)
			}
		})
	}
	// The value is one the handler accepts.
	env := map[string]string{config.LocalBusURL: "http://127.0.0.1:1", config.StorageConnection: "UseDevelopmentStorage=true",
		config.AllowedSubscriptions: "11111111-2222-3333-4444-555555555555", config.Port: "8080",
		config.RescueVMs:        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/r1",
		config.ContactFirstName: "A", config.ContactLastName: "B", config.ContactEmail: "a@example.com"}
	env[config.PollInterval] = "100ms"
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PollInterval.String() != "100ms" {
		t.Errorf("PollInterval %v, want 100ms", cfg.PollInterval)
	}
}
