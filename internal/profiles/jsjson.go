package profiles

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file writes JSON exactly as JavaScript's JSON.stringify does:
// compact, object keys in their original order, numbers as JavaScript
// prints them (7.0 is 7, 1e21 is 1e+21), and strings escaped only where
// JSON requires it (no \u003c for <, no \u2028). A receiver that parses
// the body and stringifies it again (the PlexTrac document's verification)
// gets the very bytes that were signed.

// member is one key of an object, in order.
type member struct {
	key   string
	value any
}

// object is a JSON object that keeps its key order.
type object []member

// parseOrdered decodes JSON keeping object key order and numbers exact.
func parseOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parseValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func parseValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			var o object
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				o = append(o, member{k.(string), v})
			}
			_, err = dec.Token()
			return o, err
		case '[':
			a := []any{}
			for dec.More() {
				v, err := parseValue(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err = dec.Token()
			return a, err
		}
	}
	return tok, nil // string, json.Number, bool, nil
}

// stringify appends v in JSON.stringify form. v holds what parseOrdered
// returns, plus Go strings, ints, int64s, float64s and []string.
func stringify(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		jsString(b, x)
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			b.WriteString("null")
			return
		}
		b.WriteString(jsNumber(f))
	case float64:
		b.WriteString(jsNumber(x))
	case int:
		b.WriteString(strconv.Itoa(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case []string:
		a := make([]any, len(x))
		for i, s := range x {
			a[i] = s
		}
		stringify(b, a)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			stringify(b, e)
		}
		b.WriteByte(']')
	case object:
		b.WriteByte('{')
		for i, m := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			jsString(b, m.key)
			b.WriteByte(':')
			stringify(b, m.value)
		}
		b.WriteByte('}')
	default:
		panic(fmt.Sprintf("stringify: unsupported %T", v))
	}
}

// jsString quotes s as JSON.stringify does.
func jsString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
}

// jsNumber prints f as JavaScript's Number.prototype.toString does for
// finite numbers: the shortest round-tripping digits, in plain notation
// from 1e-6 up to 1e21 and in exponent notation (1e+21, 1e-7) outside.
func jsNumber(f float64) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "null"
	}
	if f == 0 {
		return "0" // -0 too
	}
	if a := math.Abs(f); a >= 1e21 || a < 1e-6 {
		s := strconv.FormatFloat(f, 'e', -1, 64) // 1e+21, 1.5e-07
		mant, exp, _ := strings.Cut(s, "e")
		sign, digits := exp[:1], strings.TrimLeft(exp[1:], "0")
		return mant + "e" + sign + digits
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// jsStringify returns v in JSON.stringify form.
func jsStringify(v any) []byte {
	var b bytes.Buffer
	stringify(&b, v)
	return b.Bytes()
}
