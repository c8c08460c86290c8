package skus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
	"github.com/vmrescue/vmrescue/internal/azsim"
	"github.com/vmrescue/vmrescue/internal/skus"
)

// TestCatalog: a region's list is read once; a size it lacks is unknown at once, and has the
// list read again only once the cached one is RefreshAfter old.
func TestCatalog(t *testing.T) {
	t.Parallel()
	fleet := azsim.DefaultFleet()
	sim, err := azsim.New(fleet, azsim.Options{TimeScale: 0.001})
	if err != nil {
		t.Fatal(err)
	}
	api, err := armcompute.NewResourceSKUsClient(fleet.SubscriptionID, azsim.Credential(), sim.ClientOptions())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	c := skus.NewCatalog(api)
	c.Now = func() time.Time { return now }
	ctx := context.Background()
	lists := func() int { return sim.CallCount("ResourceSKUs.NewListPager") }
	steps := []struct {
		name    string
		advance time.Duration
		size    string
		unknown bool
		lists   int
	}{
		{"first read lists the region", 0, "Standard_D4s_v5", false, 1},
		{"a known size from the cache", 0, "standard_d4s_v5", false, 1},
		{"an unknown size, list fresh", time.Minute, "Standard_Imaginary_v9", true, 1},
		{"an unknown size, list old: read again", skus.RefreshAfter, "Standard_Imaginary_v9", true, 2},
		{"and not again at once", time.Second, "Standard_Imaginary_v9", true, 2},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		got, err := c.Size(ctx, fleet.Location, s.size)
		if unknown := errors.Is(err, skus.ErrUnknownSize); unknown != s.unknown || (!s.unknown && (err != nil || got.MemoryGB <= 0)) {
			t.Errorf("%s: size %+v, err %v", s.name, got, err)
		}
		if n := lists(); n != s.lists {
			t.Errorf("%s: %d list reads, want %d", s.name, n, s.lists)
		}
	}
}
