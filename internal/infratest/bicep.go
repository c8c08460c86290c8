// Package infratest checks the infrastructure templates in infra/ against the code: the app
// settings the handler reads (internal/config), the queue names (internal/incident, the function
// table and functions/*/function.json), the ARM actions the code performs (internal/permissions),
// and that no template outputs a secret.
//
// The Bicep compiler does not run here, so the templates are read as text. The reading is
// deliberately small and predictable rather than a Bicep parser:
//
//   - lex blanks out comments and marks which bytes belong to string literals, following Bicep's
//     lexical rules (single-quoted strings with backslash escapes and ${...} interpolation, ”'
//     multi-line strings, // and /* */ comments), so that a "//" inside 'https://...' is not taken
//     for a comment and a brace inside a string does not unbalance a block;
//   - block finds the extent of an object or array literal by counting brackets outside strings;
//   - the conventions the templates follow, each stated where it is relied on (app settings are
//     the keys of "var ...Settings = { }" objects; the queue names are in servicebus.bicep's
//     stageQueues and failedQueueName; the custom role's actions are role-definitions.bicep's
//     operatorActions), are what the checks look for. A template that breaks a convention makes a
//     check fail loudly (nothing found), never pass silently.
package infratest

import (
	"regexp"
	"strings"
)

// Bicep is one template, as text.
type Bicep struct {
	Path string
	// Src is the template with comments replaced by spaces (newlines kept, so offsets and line
	// numbers match the file).
	Src string
	// inString marks the bytes of Src that are inside a string literal, quotes included.
	inString []bool
}

// ParseBicep lexes a template.
func ParseBicep(path, src string) *Bicep {
	clean, mask := lex(src)
	return &Bicep{Path: path, Src: clean, inString: mask}
}

type lexMode int

const (
	modeCode lexMode = iota
	modeString
	modeMultiline
)

// lex blanks comments and marks string bytes. Interpolations ${...} inside a string are code:
// their braces are counted on a stack so that the string resumes at the matching brace.
func lex(src string) (string, []bool) {
	out := []byte(src)
	mask := make([]bool, len(src))
	mode := modeCode
	var interp []int // per open interpolation: depth of plain braces inside it
	blank := func(from, to int) {
		for k := from; k < to && k < len(out); k++ {
			if out[k] != '\n' {
				out[k] = ' '
			}
		}
	}
	for i := 0; i < len(src); {
		c := src[i]
		switch mode {
		case modeCode:
			switch {
			case strings.HasPrefix(src[i:], "//"):
				end := strings.IndexByte(src[i:], '\n')
				if end < 0 {
					end = len(src) - i
				}
				blank(i, i+end)
				i += end
			case strings.HasPrefix(src[i:], "/*"):
				end := strings.Index(src[i+2:], "*/")
				if end < 0 {
					end = len(src) - i - 2
				}
				blank(i, i+2+end+2)
				i += 2 + end + 2
			case strings.HasPrefix(src[i:], "'''"):
				mark(mask, i, 3)
				mode = modeMultiline
				i += 3
			case c == '\'':
				mask[i] = true
				mode = modeString
				i++
			case c == '{' && len(interp) > 0:
				interp[len(interp)-1]++
				i++
			case c == '}' && len(interp) > 0:
				if interp[len(interp)-1] == 0 {
					// The brace that closes ${ belongs to the string, like the one that opened it.
					mask[i] = true
					interp = interp[:len(interp)-1]
					mode = modeString
				} else {
					interp[len(interp)-1]--
				}
				i++
			default:
				i++
			}
		case modeString:
			mask[i] = true
			switch {
			case c == '\\' && i+1 < len(src):
				mask[i+1] = true
				i += 2
			case c == '$' && i+1 < len(src) && src[i+1] == '{':
				mask[i+1] = true
				interp = append(interp, 0)
				mode = modeCode
				i += 2
			case c == '\'':
				mode = modeCode
				i++
			default:
				i++
			}
		case modeMultiline:
			if strings.HasPrefix(src[i:], "'''") {
				mark(mask, i, 3)
				mode = modeCode
				i += 3
				continue
			}
			mask[i] = true
			i++
		}
	}
	return string(out), mask
}

func mark(mask []bool, from, n int) {
	for k := from; k < from+n && k < len(mask); k++ {
		mask[k] = true
	}
}

// block returns the end (exclusive) of the bracketed literal that opens at Src[open], counting
// brackets of that kind outside strings; -1 when it does not close.
func (b *Bicep) block(open int) int {
	var closer byte
	switch b.Src[open] {
	case '{':
		closer = '}'
	case '[':
		closer = ']'
	case '(':
		closer = ')'
	default:
		return -1
	}
	opener, depth := b.Src[open], 0
	for i := open; i < len(b.Src); i++ {
		if b.inString[i] {
			continue
		}
		switch b.Src[i] {
		case opener:
			depth++
		case closer:
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// VarBlock returns the literal assigned to "var name = {" or "var name = [", without the
// brackets, and whether it was found.
func (b *Bicep) VarBlock(name string) (string, bool) {
	re := regexp.MustCompile(`(?m)^var\s+` + regexp.QuoteMeta(name) + `\s*=\s*([\[{])`)
	m := re.FindStringSubmatchIndex(b.Src)
	if m == nil {
		return "", false
	}
	end := b.block(m[2])
	if end < 0 {
		return "", false
	}
	return b.Src[m[2]+1 : end-1], true
}

// VarString returns the value of "var name = 'literal'".
func (b *Bicep) VarString(name string) (string, bool) {
	re := regexp.MustCompile(`(?m)^var\s+` + regexp.QuoteMeta(name) + `\s*=\s*'([^'\\$]*)'\s*$`)
	m := re.FindStringSubmatch(b.Src)
	if m == nil {
		return "", false
	}
	return m[1], true
}

var (
	settingsVar = regexp.MustCompile(`(?m)^var\s+(\w*[sS]ettings)\s*=\s*\{`)
	objectKey   = regexp.MustCompile(`^\s*(?:'([^'\\$]+)'|([A-Za-z_][A-Za-z0-9_]*))\s*:`)
	literal     = regexp.MustCompile(`'([^'\\$]*)'`)
)

// SettingsKeys returns the keys of every "var <x>Settings = { ... }" object: the convention for
// app settings, whose names are the keys. Only keys at the object's top level count.
func (b *Bicep) SettingsKeys() []string {
	var keys []string
	for _, m := range settingsVar.FindAllStringSubmatchIndex(b.Src, -1) {
		open := m[1] - 1
		end := b.block(open)
		if end < 0 {
			continue
		}
		keys = append(keys, b.topLevelKeys(open, end)...)
	}
	return keys
}

// topLevelKeys reads object keys at depth one between the braces at open and end-1.
func (b *Bicep) topLevelKeys(open, end int) []string {
	var keys []string
	depth := 0
	lineStart := open + 1
	for i := open; i < end; i++ {
		if b.Src[i] == '\n' {
			if depth == 1 {
				if m := objectKey.FindStringSubmatch(b.Src[lineStart:i]); m != nil {
					keys = append(keys, m[1]+m[2])
				}
			}
			lineStart = i + 1
			continue
		}
		if b.inString[i] {
			continue
		}
		switch b.Src[i] {
		case '{', '[', '(':
			depth++
		case '}', ']', ')':
			depth--
		}
	}
	return keys
}

// Literals returns the plain string literals (no interpolation) in text.
func Literals(text string) []string {
	var out []string
	for _, m := range literal.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

// Output is one "output name type = expression" statement.
type Output struct {
	Name       string
	Expression string
	Secure     bool // decorated with @secure()
	Line       int
}

var (
	outputStmt = regexp.MustCompile(`(?m)^output\s+(\w+)\s+\S+\s*=`)
	statement  = regexp.MustCompile(`^(param|var|output|resource|module|type|func|targetScope|metadata|import)\b`)
)

// Outputs returns the template's outputs. An expression runs to the next line that starts at
// column zero with anything but a closing bracket: continuation lines of multi-line expressions
// are indented or close a bracket.
func (b *Bicep) Outputs() []Output {
	var outs []Output
	for _, m := range outputStmt.FindAllStringSubmatchIndex(b.Src, -1) {
		end := len(b.Src)
		for i := m[1]; i < len(b.Src); i++ {
			if b.Src[i] != '\n' || i+1 >= len(b.Src) {
				continue
			}
			next := b.Src[i+1]
			if next != ' ' && next != '\t' && next != '\n' && next != '\r' && next != '}' && next != ']' && next != ')' {
				end = i
				break
			}
		}
		outs = append(outs, Output{
			Name:       b.Src[m[2]:m[3]],
			Expression: b.Src[m[1]:end],
			Secure:     b.decorated(m[0], "secure"),
			Line:       strings.Count(b.Src[:m[0]], "\n") + 1,
		})
	}
	return outs
}

// decorated reports whether the statement at pos carries @name(...) or @sys.name(...) among the
// decorator lines right above it.
func (b *Bicep) decorated(pos int, name string) bool {
	lines := strings.Split(b.Src[:pos], "\n")
	for i := len(lines) - 2; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "@") {
			// Decorator arguments may span lines (a multi-line description); stop at a blank or
			// at a statement.
			if l == "" || statement.MatchString(l) {
				return false
			}
			continue
		}
		if strings.HasPrefix(l, "@"+name+"(") || strings.HasPrefix(l, "@sys."+name+"(") {
			return true
		}
	}
	return false
}

var paramStmt = regexp.MustCompile(`(?m)^param\s+(\w+)\b`)

// Params returns the template's parameter names.
func (b *Bicep) Params() []string {
	var out []string
	for _, m := range paramStmt.FindAllStringSubmatch(b.Src, -1) {
		out = append(out, m[1])
	}
	return out
}

// SecureParams returns the names of the parameters decorated with @secure().
func (b *Bicep) SecureParams() []string {
	var out []string
	for _, m := range paramStmt.FindAllStringSubmatchIndex(b.Src, -1) {
		if b.decorated(m[0], "secure") {
			out = append(out, b.Src[m[2]:m[3]])
		}
	}
	return out
}
