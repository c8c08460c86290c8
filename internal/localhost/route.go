package localhost

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// A route template of an httpTrigger, as ASP.NET Core routing reads it: literal segments, which
// match case-insensitively, "{name}" parameters, "{name?}" optional trailing parameters,
// "{name:constraint}" (the constraint is not checked) and a trailing "{*name}" catch-all.
type routeSegment struct {
	literal  string
	param    string
	optional bool
	catchAll bool
}

func parseRoute(tmpl string) ([]routeSegment, error) {
	if tmpl == "" {
		return nil, nil
	}
	parts := strings.Split(tmpl, "/")
	segs := make([]routeSegment, 0, len(parts))
	for i, p := range parts {
		last := i == len(parts)-1
		switch {
		case p == "":
			return nil, fmt.Errorf("route %q has an empty segment", tmpl)
		case strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}"):
			name := p[1 : len(p)-1]
			s := routeSegment{}
			if strings.HasPrefix(name, "*") {
				s.catchAll, name = true, strings.TrimPrefix(name, "*")
				if !last {
					return nil, fmt.Errorf("route %q: catch-all %s must be the last segment", tmpl, p)
				}
			}
			if strings.HasSuffix(name, "?") {
				s.optional, name = true, strings.TrimSuffix(name, "?")
				if !last {
					return nil, fmt.Errorf("route %q: optional parameter %s must be the last segment", tmpl, p)
				}
			}
			name, _, _ = strings.Cut(name, ":")
			if name == "" || strings.ContainsAny(name, "{}") {
				return nil, fmt.Errorf("route %q: bad parameter %s", tmpl, p)
			}
			s.param = name
			segs = append(segs, s)
		case strings.ContainsAny(p, "{}"):
			return nil, fmt.Errorf("route %q: segment %q mixes text and parameters, which the local host does not support", tmpl, p)
		default:
			segs = append(segs, routeSegment{literal: p})
		}
	}
	return segs, nil
}

// matchRoute reports whether the path segments (after the route prefix) match the template.
func matchRoute(segs []routeSegment, path []string) bool {
	for i, s := range segs {
		if i >= len(path) {
			return s.optional || s.catchAll
		}
		switch {
		case s.catchAll:
			return true
		case s.param != "":
			if path[i] == "" {
				return false
			}
		case !strings.EqualFold(s.literal, path[i]):
			return false
		}
	}
	return len(path) == len(segs)
}

// splitPath cuts a request path into segments after the route prefix; ok is false when the path
// is not under the prefix.
func splitPath(prefix, path string) ([]string, bool) {
	p := strings.Trim(path, "/")
	if prefix != "" {
		head, rest, _ := strings.Cut(p, "/")
		if !strings.EqualFold(head, prefix) {
			return nil, false
		}
		p = rest
	}
	if p == "" {
		return nil, true
	}
	return strings.Split(p, "/"), true
}

// httpRoute is an httpTrigger function's route, parsed.
type httpRoute struct {
	fn   Function
	segs []routeSegment
}

func (r httpRoute) allows(method string) bool {
	return len(r.fn.Methods) == 0 || slices.Contains(r.fn.Methods, strings.ToLower(method))
}

func httpRoutes(app *App) []httpRoute {
	var out []httpRoute
	for _, f := range app.Functions {
		if f.Trigger != "httpTrigger" {
			continue
		}
		segs, _ := parseRoute(f.Route) // validated by LoadApp
		out = append(out, httpRoute{fn: f, segs: segs})
	}
	// As in ASP.NET Core routing, a literal segment takes precedence over a parameter, a
	// parameter over an optional one, and that over a catch-all.
	slices.SortStableFunc(out, func(a, b httpRoute) int {
		for i := range min(len(a.segs), len(b.segs)) {
			if c := a.segs[i].rank() - b.segs[i].rank(); c != 0 {
				return c
			}
		}
		return len(b.segs) - len(a.segs)
	})
	return out
}

func (s routeSegment) rank() int {
	switch {
	case s.catchAll:
		return 3
	case s.optional:
		return 2
	case s.param != "":
		return 1
	}
	return 0
}

// findRoute returns the function that takes method on path, or false. A path that matches a
// route whose methods exclude method is not found, as in the Functions host.
func findRoute(routes []httpRoute, prefix, method, path string) (Function, bool) {
	segs, ok := splitPath(prefix, path)
	if !ok {
		return Function{}, false
	}
	for _, r := range routes {
		if r.allows(method) && matchRoute(r.segs, segs) {
			return r.fn, true
		}
	}
	return Function{}, false
}

// checkRoutes refuses two httpTrigger functions with the same route template and a common method.
func checkRoutes(app *App) error {
	var errs []error
	routes := httpRoutes(app)
	for i, a := range routes {
		for _, b := range routes[i+1:] {
			if !strings.EqualFold(a.fn.Route, b.fn.Route) {
				continue
			}
			common := len(a.fn.Methods) == 0 || len(b.fn.Methods) == 0
			for _, m := range a.fn.Methods {
				common = common || slices.Contains(b.fn.Methods, m)
			}
			if common {
				errs = append(errs, fmt.Errorf("functions %s and %s take the same route %q and method", a.fn.Name, b.fn.Name, a.fn.Route))
			}
		}
	}
	return errors.Join(errs...)
}
