// Package resourceid validates the Azure resource ids that vmrescue accepts from alerts, requests
// and configuration. Every id is parsed with the SDK's arm.ParseResourceID and then checked against
// the exact shape and character set Azure allows, so that nothing else reaches a blob name, a tag,
// a URL or a Run Command parameter.
package resourceid

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
)

// MaxLen bounds an accepted id; real VM ids are far shorter.
const MaxLen = 512

var (
	subscriptionRE  = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	resourceGroupRE = regexp.MustCompile(`^[-\w._()]{1,90}$`)
	// VM, disk and snapshot names: letters, digits, '-', '_', '.'; Azure allows up to 80 for disks
	// and 64 for Windows VMs.
	resourceNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$`)
)

// ID is a validated resource id, split into its parts.
type ID struct {
	SubscriptionID string
	ResourceGroup  string
	Provider       string // e.g. Microsoft.Compute
	Type           string // e.g. virtualMachines
	Name           string
}

// String is the canonical form of the id, as ARM prints it.
func (id ID) String() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/%s/%s/%s",
		id.SubscriptionID, id.ResourceGroup, id.Provider, id.Type, id.Name)
}

// Equal compares ids the way Azure does: case-insensitively.
func Equal(a, b string) bool { return strings.EqualFold(a, b) }

// Errors returned by Parse, for errors.Is.
var (
	ErrMalformed = errors.New("malformed resource id")
	ErrWrongType = errors.New("wrong resource type")
)

// ParseVM accepts exactly /subscriptions/{guid}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}.
func ParseVM(s string) (ID, error) { return Parse(s, "Microsoft.Compute", "virtualMachines") }

// ParseDisk accepts a managed disk id.
func ParseDisk(s string) (ID, error) { return Parse(s, "Microsoft.Compute", "disks") }

// ParseSnapshot accepts a snapshot id.
func ParseSnapshot(s string) (ID, error) { return Parse(s, "Microsoft.Compute", "snapshots") }

// CheckVM applies ParseVM's strict shape and character checks without the SDK's parse, for hot
// paths that re-validate ids vmrescue itself produced (stage messages). Anything it accepts,
// ParseVM accepts too (tested).
func CheckVM(s string) error {
	_, err := check(s, "Microsoft.Compute", "virtualMachines")
	return err
}

// Parse accepts a top-level resource id of the given provider namespace and type, and nothing
// else: no child resources, no extension resources, no extra segments, no characters outside the
// ones Azure allows in each part.
func Parse(s, provider, typ string) (ID, error) {
	id, err := check(s, provider, typ)
	if err != nil {
		return ID{}, err
	}
	parsed, err := arm.ParseResourceID(s)
	if err != nil {
		return ID{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !strings.EqualFold(parsed.ResourceType.Namespace, provider) || !strings.EqualFold(parsed.ResourceType.Type, typ) ||
		parsed.Parent == nil || parsed.Parent.ResourceType.String() != arm.ResourceGroupResourceType.String() {
		return ID{}, fmt.Errorf("%w: %s is not %s/%s", ErrWrongType, parsed.ResourceType, provider, typ)
	}
	return id, nil
}

// check is the strict part of Parse: exact segments and Azure's character sets.
func check(s, provider, typ string) (ID, error) {
	if s == "" {
		return ID{}, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(s) > MaxLen {
		return ID{}, fmt.Errorf("%w: longer than %d characters", ErrMalformed, MaxLen)
	}
	if strings.ContainsAny(s, " \t\r\n\"'`$;&|<>\\*?{}[]!#%^,~=+@") {
		return ID{}, fmt.Errorf("%w: contains a character Azure never uses in a resource id", ErrMalformed)
	}
	if !strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") || strings.Contains(s, "//") {
		return ID{}, fmt.Errorf("%w: must start with / and have no empty segment", ErrMalformed)
	}
	var segs [8]string
	rest := s[1:]
	for i := range segs {
		seg, tail, found := strings.Cut(rest, "/")
		if (i < 7) != found {
			return ID{}, fmt.Errorf("%w: want /subscriptions/{id}/resourceGroups/{name}/providers/%s/%s/{name}, got %d segments",
				ErrMalformed, provider, typ, strings.Count(s, "/"))
		}
		segs[i], rest = seg, tail
	}
	if !strings.EqualFold(segs[0], "subscriptions") || !strings.EqualFold(segs[2], "resourceGroups") ||
		!strings.EqualFold(segs[4], "providers") {
		return ID{}, fmt.Errorf("%w: want /subscriptions/{id}/resourceGroups/{name}/providers/...", ErrMalformed)
	}
	if !strings.EqualFold(segs[5], provider) || !strings.EqualFold(segs[6], typ) {
		return ID{}, fmt.Errorf("%w: %s/%s is not %s/%s", ErrWrongType, segs[5], segs[6], provider, typ)
	}
	id := ID{SubscriptionID: segs[1], ResourceGroup: segs[3], Provider: provider, Type: typ, Name: segs[7]}
	var errs []error
	if !subscriptionRE.MatchString(id.SubscriptionID) {
		errs = append(errs, errors.New("subscription id is not a GUID"))
	}
	if !resourceGroupRE.MatchString(id.ResourceGroup) || strings.HasSuffix(id.ResourceGroup, ".") {
		errs = append(errs, errors.New("resource group name has characters Azure does not allow"))
	}
	if !resourceNameRE.MatchString(id.Name) || strings.HasSuffix(id.Name, ".") {
		errs = append(errs, errors.New("resource name has characters Azure does not allow"))
	}
	if len(errs) > 0 {
		return ID{}, fmt.Errorf("%w: %w", ErrMalformed, errors.Join(errs...))
	}
	return id, nil
}
