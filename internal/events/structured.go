package events

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/scanwire/scanwire/internal/jsonx"
)

// Structured returns e in CloudEvents structured JSON mode, as fan-out
// stores it in every job and the standard-webhooks profile sends it. It is
// what sdk-go's json.Marshal(e) writes (attributes, then data, then the
// extensions sorted), with two differences a receiver relies on:
//
//   - "<", ">" and "&" are never escaped, in attributes, extensions or
//     data, so a signed body holds the text the scanner sent; escapes
//     \u003c, \u003e and \u0026 in the data are written as the characters
//     (jsonx.UnescapeHTML). U+2028 and U+2029 stay as they are too.
//   - JSON data that arrived base64-encoded (data_base64 in structured
//     mode) is written as "data", the JSON value receivers expect: these
//     are the bytes Validate checked. Data that is not UTF-8 JSON stays in
//     data_base64.
//
// Call it on a valid event: data that is not JSON makes it fail.
func Structured(e *event.Event) ([]byte, error) {
	out := e
	if e.DataBase64 && jsonMediaType(e.DataContentType()) && utf8.Valid(e.Data()) && json.Valid(e.Data()) {
		c := *e // WriteJson only reads it: a shallow copy is enough
		c.DataBase64 = false
		out = &c
	}
	b, err := jsonx.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode event %s in structured mode: %w", e.ID(), err)
	}
	return jsonx.UnescapeHTML(b), nil
}

// jsonMediaType reports whether sdk-go's WriteJson writes data of content
// type ct as a JSON value rather than as a string (its isJSON): Structured
// may only drop data_base64 where the sdk then writes the bytes raw.
func jsonMediaType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	switch strings.ToLower(strings.TrimSpace(mt)) {
	case "", event.ApplicationJSON, event.TextJSON, event.ApplicationCloudEventsJSON, event.ApplicationCloudEventsBatchJSON:
		return true
	}
	return false
}
