// Package schemas embeds scanwire's JSON Schemas (draft 2020-12) and
// validates documents against them. The .json files beside this one are the
// published contract; this package only compiles and applies them.
package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Schema file names.
const (
	ScanStarted  = "scan.started.json"
	ScanFinished = "scan.finished.json"
	Finding      = "finding.json"
	WebhookTest  = "webhook.test.json"
	Subscription = "subscription.json"
)

//go:embed *.json
var files embed.FS

const baseURL = "https://scanwire.dev/schemas/"

var (
	compileOnce sync.Once
	compiled    map[string]*jsonschema.Schema
	compileErr  error
	printer     = message.NewPrinter(language.English)
)

// compile builds every schema once, on first use: a broken embedded schema
// is a build defect, reported by the first Validate and by the tests.
func compile() (map[string]*jsonschema.Schema, error) {
	compileOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		c.AssertFormat()
		out := map[string]*jsonschema.Schema{}
		for _, name := range Names() {
			raw, _ := files.ReadFile(name)
			doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
			if err != nil {
				compileErr = fmt.Errorf("schema %s: %w", name, err)
				return
			}
			if err := c.AddResource(baseURL+name, doc); err != nil {
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

// Source returns the raw bytes of a schema, for documentation and the API.
func Source(name string) ([]byte, bool) {
	b, err := files.ReadFile(name)
	return b, err == nil
}

// Error lists every violation a document has.
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

func (e *Error) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		p := v.Pointer
		if p == "" {
			p = "/"
		}
		parts[i] = p + ": " + v.Message
	}
	return strings.Join(parts, "; ")
}

// Validate checks doc (raw JSON) against the named schema. It returns nil or
// an *Error.
func Validate(name string, doc []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return &Error{Schema: name, Violations: []Violation{{Message: "not valid JSON: " + err.Error()}}}
	}
	return ValidateValue(name, v)
}

// ValidateValue checks an already-decoded value (as jsonschema.UnmarshalJSON
// or encoding/json with UseNumber produce) against the named schema.
func ValidateValue(name string, v any) error {
	all, err := compile()
	if err != nil {
		return err
	}
	s, ok := all[name]
	if !ok {
		return fmt.Errorf("unknown schema %q", name)
	}
	err = s.Validate(v)
	if err == nil {
		return nil
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return err
	}
	out := &Error{Schema: name}
	collect(ve, out)
	slices.SortFunc(out.Violations, func(a, b Violation) int {
		return strings.Compare(a.Pointer+"\x00"+a.Message, b.Pointer+"\x00"+b.Message)
	})
	out.Violations = slices.Compact(out.Violations)
	return out
}

// collect flattens the error tree to its leaves: the nodes above them only
// say "a subschema failed", which helps nobody fix a document.
func collect(ve *jsonschema.ValidationError, out *Error) {
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			collect(c, out)
		}
		return
	}
	if r, ok := ve.ErrorKind.(*kind.Required); ok {
		// Point at the missing property itself: "/title", not "/".
		for _, m := range r.Missing {
			out.Violations = append(out.Violations, Violation{
				Pointer: pointer(append(slices.Clone(ve.InstanceLocation), m)),
				Message: "missing required property",
			})
		}
		return
	}
	out.Violations = append(out.Violations, Violation{Pointer: pointer(ve.InstanceLocation), Message: message1(ve)})
}

func message1(ve *jsonschema.ValidationError) string {
	switch k := ve.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		quoted := make([]string, len(k.Properties))
		for i, p := range k.Properties {
			quoted[i] = fmt.Sprintf("%q", p)
		}
		return "unknown property " + strings.Join(quoted, ", ") + "; remove it"
	}
	return ve.ErrorKind.LocalizedString(printer)
}

func pointer(loc []string) string {
	var b strings.Builder
	for _, tok := range loc {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1"))
	}
	return b.String()
}
