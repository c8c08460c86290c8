package resourceid

import (
	"errors"
	"strings"
	"testing"
)

const vm = "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg-erp/providers/Microsoft.Compute/virtualMachines/erp-app-01"

func TestParseVM(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"valid", vm, nil},
		{"case variant", strings.ToLower(vm), nil},
		{"parentheses in group", strings.Replace(vm, "rg-erp", "rg(erp).x", 1), nil},
		{"empty", "", ErrMalformed},
		{"no leading slash", vm[1:], ErrMalformed},
		{"trailing slash", vm + "/", ErrMalformed},
		{"extra segment", vm + "/extensions/x", ErrMalformed},
		{"extension resource", vm + "/providers/Microsoft.ResourceHealth/resourceAnnotations/x", ErrMalformed},
		{"disk not vm", strings.Replace(vm, "virtualMachines", "disks", 1), ErrWrongType},
		{"other provider", strings.Replace(vm, "Microsoft.Compute", "Microsoft.ClassicCompute", 1), ErrWrongType},
		{"subscription not guid", strings.Replace(vm, "11111111-2222-3333-4444-555555555555", "sub1", 1), ErrMalformed},
		{"shell in name", strings.Replace(vm, "erp-app-01", "erp;rm -rf", 1), ErrMalformed},
		{"subshell in name", strings.Replace(vm, "erp-app-01", "$(whoami)", 1), ErrMalformed},
		{"backtick in group", strings.Replace(vm, "rg-erp", "rg`id`", 1), ErrMalformed},
		{"quote in name", strings.Replace(vm, "erp-app-01", "a'b", 1), ErrMalformed},
		{"name ends in dot", strings.Replace(vm, "erp-app-01", "erp.", 1), ErrMalformed},
		{"newline", vm + "\n", ErrMalformed},
		{"too long", strings.Replace(vm, "erp-app-01", strings.Repeat("a", 600), 1), ErrMalformed},
		{"missing resourceGroups keyword", strings.Replace(vm, "resourceGroups", "resourcegroupz", 1), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id, err := ParseVM(tc.in)
			if cerr := CheckVM(tc.in); !errors.Is(cerr, tc.want) && (tc.want != nil || cerr != nil) {
				t.Errorf("CheckVM(%q) = %v, want %v", tc.in, cerr, tc.want)
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("ParseVM(%q) = %v, want success", tc.in, err)
				}
				if !Equal(id.String(), tc.in) {
					t.Fatalf("String() = %q, want %q", id.String(), tc.in)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseVM(%q) = %v, want %v", tc.in, err, tc.want)
			}
		})
	}
}

func FuzzParseVM(f *testing.F) {
	f.Add(vm)
	f.Add(vm + "/x")
	f.Add("/subscriptions//resourceGroups")
	f.Add(strings.Replace(vm, "erp-app-01", "a;b", 1))
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseVM(s)
		if cerr := CheckVM(s); (cerr == nil) != (err == nil) {
			t.Fatalf("CheckVM and ParseVM disagree on %q: %v vs %v", s, cerr, err)
		}
		if err != nil {
			return
		}
		// Whatever is accepted is safe to pass on: canonical, round-trips, no metacharacters.
		if !Equal(id.String(), s) {
			t.Fatalf("accepted %q but canonical form is %q", s, id.String())
		}
		if strings.ContainsAny(s, " \t\r\n\"'`$;&|<>\\*?{}[]!#%^,~=+@") {
			t.Fatalf("accepted metacharacters in %q", s)
		}
		if _, err := ParseVM(id.String()); err != nil {
			t.Fatalf("canonical form %q rejected: %v", id.String(), err)
		}
	})
}
