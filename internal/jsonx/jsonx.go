// Package jsonx encodes JSON as scanwire stores and sends it: encoding/json
// without HTML escaping. json.Marshal turns "<", ">" and "&" into \u003c
// and friends, also inside a json.RawMessage it embeds, so a finding title
// "<script> & x" would reach receivers and stored documents as something
// else than was sent. UnescapeHTML undoes those escapes in JSON passed on
// as is, and Ambiguities finds what receivers' parsers would read
// differently (repeated keys, bytes that are not UTF-8, lone surrogates).
package jsonx

import (
	"bytes"
	"encoding/json"
)

// Marshal is json.Marshal without HTML escaping: compact, and without the
// trailing newline an Encoder adds.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
