// Package skus reads VM sizes from Resource SKUs: how many data disks a rescue VM can take, and
// how much memory a VM has (the crash dump must fit). The list is read once per region and
// process and cached; a size the cached list lacks has it read again, at most every
// RefreshAfter, before the size is called unknown.
package skus

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v8"
)

// API is the part of *armcompute.ResourceSKUsClient vmrescue calls.
type API interface {
	NewListPager(options *armcompute.ResourceSKUsClientListOptions) *runtime.Pager[armcompute.ResourceSKUsClientListResponse]
}

var _ API = (*armcompute.ResourceSKUsClient)(nil)

// listTimeout bounds the read of one region's SKU list, all pages.
const listTimeout = 2 * time.Minute

// Size is a VM size's capabilities.
type Size struct {
	Name              string
	MemoryGB          float64
	MaxDataDiskCount  int
	HyperVGenerations []string
}

// RefreshAfter is how old a region's cached list must be before a size it lacks has it read again.
const RefreshAfter = 15 * time.Minute

// Catalog caches the VM sizes of each region.
type Catalog struct {
	API API
	Now func() time.Time // nil: time.Now

	mu      sync.Mutex
	regions map[string]map[string]Size // location -> lower size name -> size
	read    map[string]time.Time       // location -> when its list was read
}

// NewCatalog returns a catalog reading through api.
func NewCatalog(api API) *Catalog { return &Catalog{API: api} }

// ErrUnknownSize is wrapped when a region has no such VM size.
var ErrUnknownSize = fmt.Errorf("VM size not offered in the region")

// Size returns a VM size in a region. The first call for a region lists its SKUs.
func (c *Catalog) Size(ctx context.Context, location, name string) (Size, error) {
	location = strings.ToLower(strings.ReplaceAll(location, " ", ""))
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	c.mu.Lock()
	sizes, cached := c.regions[location]
	stale := now().Sub(c.read[location]) >= RefreshAfter
	c.mu.Unlock()
	if s, ok := sizes[strings.ToLower(name)]; ok || (cached && !stale) {
		if !ok {
			return Size{}, fmt.Errorf("%s in %s: %w", name, location, ErrUnknownSize)
		}
		return s, nil
	}
	// Not read yet, or read long enough ago that the region may offer the size since.
	sizes, err := c.list(ctx, location)
	if err != nil {
		return Size{}, err
	}
	if len(sizes) > 0 { // an empty answer is not a region without sizes: ask again next time
		c.mu.Lock()
		if c.regions == nil {
			c.regions, c.read = map[string]map[string]Size{}, map[string]time.Time{}
		}
		c.regions[location], c.read[location] = sizes, now()
		c.mu.Unlock()
	}
	s, ok := sizes[strings.ToLower(name)]
	if !ok {
		return Size{}, fmt.Errorf("%s in %s: %w", name, location, ErrUnknownSize)
	}
	return s, nil
}

func (c *Catalog) list(ctx context.Context, location string) (map[string]Size, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	filter := fmt.Sprintf("location eq '%s'", location)
	pager := c.API.NewListPager(&armcompute.ResourceSKUsClientListOptions{Filter: &filter})
	out := map[string]Size{}
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list resource SKUs in %s: %w", location, err)
		}
		for _, sku := range page.Value {
			if sku == nil || sku.Name == nil || !strings.EqualFold(val(sku.ResourceType), "virtualMachines") {
				continue
			}
			s := Size{Name: *sku.Name}
			for _, c := range sku.Capabilities {
				if c == nil || c.Name == nil || c.Value == nil {
					continue
				}
				switch *c.Name {
				case "MemoryGB":
					s.MemoryGB, _ = strconv.ParseFloat(*c.Value, 64)
				case "MaxDataDiskCount":
					s.MaxDataDiskCount, _ = strconv.Atoi(*c.Value)
				case "HyperVGenerations":
					s.HyperVGenerations = strings.Split(*c.Value, ",")
				}
			}
			out[strings.ToLower(s.Name)] = s
		}
	}
	return out, nil
}

func val[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
