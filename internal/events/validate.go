package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"mime"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/scanwire/scanwire/internal/jsonx"
	"github.com/scanwire/scanwire/schemas"
)

// Problem is one reason an event is refused, named by the attribute or the
// JSON pointer into the data ("data/cvss_score").
type Problem struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// InvalidError is returned by Validate: every problem found, not just the
// first, so a scanner author fixes them in one round.
type InvalidError struct {
	Problems []Problem
	// TooLarge is set when the event is over MaxEventSize: the gateway
	// answers 413 rather than 422.
	TooLarge bool
}

func (e *InvalidError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Field + ": " + p.Message
	}
	return "invalid event: " + strings.Join(parts, "; ")
}

var dataSchemas = map[string]string{
	TypeScanStarted:   schemas.ScanStarted,
	TypeScanFinished:  schemas.ScanFinished,
	TypeFindingHigh:   schemas.Finding,
	TypeFindingMedium: schemas.Finding,
	TypeWebhookTest:   schemas.WebhookTest,
}

// Validate checks e as published on the SCAN_EVENTS subject addr: the
// CloudEvents attributes, the data against its schema, and that subject,
// attributes and data tell the same story. Fan-out, the gateway and
// `scanwire publish` all call it, so a scanner sees one message for one
// mistake whichever door it used.
func Validate(addr Address, e *event.Event) error {
	_, err := ValidateEncoded(addr, e)
	return err
}

// ValidateEncoded is Validate that also returns the event's structured
// encoding (Structured), which the size check makes anyway: fan-out stores
// it in every job, and need not encode the event a second time.
func ValidateEncoded(addr Address, e *event.Event) ([]byte, error) {
	v := &validator{}
	v.attributes(e)
	v.consistency(addr, e)
	if v.size(e) {
		v.data(e)
	}
	if len(v.problems) > 0 {
		return nil, &InvalidError{Problems: v.problems, TooLarge: v.tooLarge}
	}
	if v.structured == nil { // not reached: valid data always encodes
		return Structured(e)
	}
	return v.structured, nil
}

type validator struct {
	problems   []Problem
	tooLarge   bool
	structured []byte // the size check's Structured(e)
}

// maxAmbiguities bounds the data problems of one kind that an error
// lists: 256 KiB of repeated keys would otherwise make a megabyte error.
const maxAmbiguities = 10

func (v *validator) add(field, format string, args ...any) {
	v.problems = append(v.problems, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) attributes(e *event.Event) {
	if e.SpecVersion() != event.CloudEventsVersionV1 {
		v.add("specversion", "must be %q, got %q", event.CloudEventsVersionV1, e.SpecVersion())
	}
	switch id := e.ID(); {
	case id == "":
		v.add("id", "missing; set a unique id per event (it is the dedupe key), e.g. a UUID or ULID")
	case len(id) > MaxTokenLen || strings.IndexFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
		v.add("id", "must be 1-%d printable ASCII characters without spaces", MaxTokenLen)
	}
	if e.Source() == "" {
		v.add("source", "missing; name the scanner as a URI-reference, e.g. //scanners/zap-eu-1")
	}
	switch t := e.Type(); {
	case t == "":
		v.add("type", "missing; use one of %s", strings.Join(Types(), ", "))
	case !Known(t):
		v.add("type", "unknown event type %q; use one of %s", t, strings.Join(Types(), ", "))
	}
	if s := e.Subject(); s == "" {
		v.add("subject", "missing; set it to the scan id")
	} else if p := BadToken(s); p != "" {
		v.add("subject", "scan id %s", p)
	}
	if t := Tenant(e); t == "" {
		v.add("tenant", "missing extension attribute; set ce-tenant to the tenant id")
	} else if p := BadToken(t); p != "" {
		v.add("tenant", "%s", p)
	}
	if ct := e.DataContentType(); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != event.ApplicationJSON {
			v.add("datacontenttype", "must be application/json, got %q", ct)
		}
	}
	v.text("source", e.Source())
	v.text("datacontenttype", e.DataContentType())
	v.text("dataschema", e.DataSchema())
	exts := e.Extensions()
	for _, name := range slices.Sorted(maps.Keys(exts)) {
		if name == "data" {
			// In structured mode it would be a second "data" member beside
			// the event's data, and receivers would read either.
			v.add("ce-data", "\"data\" is the event's data, not an extension attribute name: remove the ce-data header or rename the extension")
			continue
		}
		if s, err := types.Format(exts[name]); err == nil {
			v.text(name, s)
		}
	}
}

// text refuses an attribute that is not UTF-8: the structured event and
// every profile carry it in JSON, which decoders read as U+FFFD or refuse.
func (v *validator) text(field, s string) {
	if utf8.ValidString(s) {
		return
	}
	at := 0
	for at < len(s) {
		r, size := utf8.DecodeRuneInString(s[at:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		at += size
	}
	v.add(field, "byte %d (0x%02x) is not valid UTF-8; attributes are JSON strings in structured mode and must be UTF-8", at, s[at])
}

func (v *validator) consistency(addr Address, e *event.Event) {
	if t := Tenant(e); t != "" && t != addr.Tenant {
		v.add("tenant", "%q disagrees with the NATS subject's tenant %q; publish to scans.%s.<scan_id>.<kind>", t, addr.Tenant, t)
	}
	if s := e.Subject(); s != "" && s != addr.ScanID {
		v.add("subject", "scan id %q disagrees with the NATS subject's scan id %q", s, addr.ScanID)
	}
	if want, ok := kinds[e.Type()]; ok && want != addr.Kind {
		v.add("type", "%q must be published on a subject ending in .%s, not .%s", e.Type(), want, addr.Kind)
	}
}

func (v *validator) data(e *event.Event) {
	data := e.Data()
	if len(bytes.TrimSpace(data)) == 0 {
		v.add("data", "missing; every event carries a JSON object (see schemas/)")
		return
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil {
		if !json.Valid(data) {
			v.add("data", "not valid JSON: %v", err)
		} else {
			v.add("data", "must be a JSON object")
		}
		return
	}
	// Go's decoder, and so the schema check, reads a repeated key as its
	// last value, and bytes that are not UTF-8 or a lone surrogate escape
	// as U+FFFD; a receiver may read the first value, or keep them. Such
	// data is refused, so that what passes here is what every receiver
	// reads.
	if amb := jsonx.Ambiguities(data); len(amb) > 0 {
		for i, a := range amb {
			if i == maxAmbiguities {
				v.add("data", "%d more places like the ones above; fix them the same way", len(amb)-i)
				break
			}
			v.add("data"+a.Pointer, "%s", a.Message)
		}
		return
	}
	name, ok := dataSchemas[e.Type()]
	if !ok {
		return // unknown type, already reported
	}
	if err := schemas.Validate(name, data); err != nil {
		var se *schemas.Error
		if !errors.As(err, &se) {
			v.add("data", "%v", err)
			return
		}
		for _, vi := range se.Violations {
			v.add("data"+vi.Pointer, "%s", vi.Message)
		}
		return
	}
	if id, ok := obj["scan_id"].(string); ok && e.Subject() != "" && id != e.Subject() {
		v.add("data/scan_id", "%q disagrees with the event's subject %q; both are the scan id", id, e.Subject())
	}
	if IsFinding(e.Type()) {
		n, _ := obj["cvss_score"].(json.Number)
		score, err := n.Float64()
		if err != nil {
			return // schema reported it
		}
		switch {
		case e.Type() == TypeFindingHigh && score < 6.0:
			v.add("data/cvss_score", "%v is below 6.0, the floor of finding.high; send it as finding.medium (3.0 <= CVSS < 6.0)", score)
		case e.Type() == TypeFindingMedium && (score < 3.0 || score >= 6.0):
			v.add("data/cvss_score", "%v is outside 3.0 <= CVSS < 6.0 of finding.medium; CVSS >= 6.0 is finding.high, below 3.0 is not sent", score)
		}
	}
}
