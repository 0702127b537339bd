// Package schemas embeds scanwire's JSON Schemas (draft 2020-12) and
// validates documents against them. The .json files beside this one are the
// published contract; this package only compiles and applies them, and turns
// failures into messages a scanner author or API user can act on.
package schemas

import (
	"bytes"
	"cmp"
	"embed"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// Schema file names. Callers pass these to Validate instead of literals so
// that a renamed file breaks the build, not a deployment.
const (
	// ScanStarted is the data schema of scan.started events.
	ScanStarted = "scan.started.json"
	// ScanFinished is the data schema of scan.finished events.
	ScanFinished = "scan.finished.json"
	// Finding is the data schema of both finding.high and finding.medium:
	// the two differ only in the CVSS band, which is checked outside.
	Finding = "finding.json"
	// WebhookTest is the data schema of webhook.test events.
	WebhookTest = "webhook.test.json"
	// Subscription is the schema of a subscription document (KV value and
	// API body).
	Subscription = "subscription.json"
)

//go:embed *.json
var files embed.FS

// baseURL matches the files' $id, so that a $ref between them resolves
// offline, from the embedded copies.
const baseURL = "https://scanwire.dev/schemas/"

var (
	compileOnce sync.Once
	compiled    map[string]*jsonschema.Schema
	compileErr  error
)

// compile builds every schema once, on first use rather than in init, so
// that importing the package costs nothing; a broken embedded schema is a
// build defect, reported by the first call and by the tests.
func compile() (map[string]*jsonschema.Schema, error) {
	compileOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		c.AssertFormat() // 2020-12 only annotates formats by default; we reject bad date-times
		out := map[string]*jsonschema.Schema{}
		for _, name := range Names() {
			raw, _ := files.ReadFile(name)
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			if err == nil {
				err = c.AddResource(baseURL+name, doc)
			}
			if err != nil {
				compileErr = fmt.Errorf("schema %s: %w", name, err)
				return
			}
		}
		for _, name := range Names() {
			s, err := c.Compile(baseURL + name)
			if err != nil {
				compileErr = fmt.Errorf("schema %s: %w", name, err)
				return
			}
			out[name] = s
		}
		compiled = out
	})
	return compiled, compileErr
}

// Names returns the embedded schema names, sorted.
func Names() []string {
	entries, _ := files.ReadDir(".")
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// Source returns the raw bytes of a schema (a copy), for documentation and
// the API.
func Source(name string) ([]byte, bool) {
	b, err := files.ReadFile(name)
	return b, err == nil
}

// Error lists every violation found in one document, so a sender can fix
// them all in one round trip.
type Error struct {
	Schema     string
	Violations []Violation
}

// Violation is one failed rule. Pointer is an RFC 6901 JSON pointer into the
// document ("" for the document itself); Message says what was expected.
type Violation struct {
	Pointer string
	Message string
}

// Error joins the violations as "pointer: message" with "; ", showing the
// root as "/" so that no entry starts with a bare colon.
func (e *Error) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = cmp.Or(v.Pointer, "/") + ": " + v.Message
	}
	return strings.Join(parts, "; ")
}

// Validate checks doc (raw JSON) against the named schema. It returns nil or
// an *Error; an unknown name is a plain error, as it is the caller's bug.
func Validate(name string, doc []byte) error {
	if _, err := lookup(name); err != nil {
		return err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return &Error{Schema: name, Violations: []Violation{{Message: "not valid JSON: " + jsonProblem(err, doc)}}}
	}
	return ValidateValue(name, v)
}

// ValidateValue checks an already-decoded value (as jsonschema.UnmarshalJSON
// or encoding/json with UseNumber produce) against the named schema.
// Numbers that do not fit a float64 are violations before the schema is even
// applied (see badNumbers): no scanwire field needs them, and they are how a
// sender could make validation panic or crawl.
func ValidateValue(name string, v any) error {
	s, err := lookup(name)
	if err != nil {
		return err
	}
	out := &Error{Schema: name}
	if badNumbers(v, nil, out); len(out.Violations) == 0 {
		err = s.Validate(v)
		verr, ok := err.(*jsonschema.ValidationError)
		if !ok {
			return err // nil; v6 reports every failure as *ValidationError
		}
		out.collect(verr)
	}
	slices.SortFunc(out.Violations, func(a, b Violation) int {
		return cmp.Or(strings.Compare(a.Pointer, b.Pointer), strings.Compare(a.Message, b.Message))
	})
	out.Violations = slices.Compact(out.Violations)
	return out
}

func lookup(name string) (*jsonschema.Schema, error) {
	all, err := compile()
	if err != nil {
		return nil, err
	}
	if s, ok := all[name]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("unknown schema %q", name)
}

// collect flattens the error tree to its leaves: the nodes above them only
// say "a subschema failed", which helps nobody fix a document.
func (e *Error) collect(ve *jsonschema.ValidationError) {
	for _, c := range ve.Causes {
		e.collect(c)
	}
	if len(ve.Causes) > 0 {
		return
	}
	at := func(prop string) string { return pointer(append(slices.Clone(ve.InstanceLocation), prop)) }
	switch k := ve.ErrorKind.(type) {
	case *kind.Required: // point at the missing field itself: "/title", not "/"
		for _, m := range k.Missing {
			e.Violations = append(e.Violations, Violation{at(m), "missing required property"})
		}
	case *kind.AdditionalProperties: // one per field, so each names what to remove
		for _, p := range k.Properties {
			e.Violations = append(e.Violations, Violation{at(p), fmt.Sprintf("unknown property %q", p)})
		}
	default:
		e.Violations = append(e.Violations, Violation{pointer(ve.InstanceLocation), describe(k)})
	}
}
