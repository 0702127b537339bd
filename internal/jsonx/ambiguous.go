package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Ambiguity is a place where a JSON document says different things to
// different parsers: a key given twice in one object (Go and JavaScript
// keep the last value, others the first or refuse the document), bytes
// that are not UTF-8, or an escaped UTF-16 surrogate without its other
// half (read as U+FFFD, kept, or refused). A document without any is read
// the same way by every receiver.
type Ambiguity struct {
	// Pointer is the RFC 6901 JSON pointer of the object that repeats a
	// key, or of the value whose string is at fault; "" is the document.
	Pointer string
	// Offset is the byte offset in the document of the fault.
	Offset int64
	// Message names the fault and its fix.
	Message string
}

// Ambiguities returns every ambiguity of doc in document order, or nil.
// A doc that is not valid JSON is one ambiguity: where parsing failed.
//
// Lone surrogates (\ud800 without a following \udc00-\udfff) count as
// ambiguous, not as text: they are no Unicode character, so a receiver
// cannot store or compare them without choosing what they mean.
//
// Keys are compared as decoded ("a" and "\u0061" are the same key), as
// receivers compare them. It reads doc in one pass, without decoding
// values: event validation runs it on every event of up to 256 KiB.
func Ambiguities(doc []byte) []Ambiguity {
	if !json.Valid(doc) {
		var v any
		err := json.Unmarshal(doc, &v)
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return []Ambiguity{{"", se.Offset, fmt.Sprintf("not valid JSON: %v at byte %d", err, se.Offset)}}
		}
		return []Ambiguity{{"", 0, fmt.Sprintf("not valid JSON: %v", err)}}
	}
	var out []Ambiguity
	var stack []frame
	wantKey := false // the next string is an object's key
	for i := 0; i < len(doc); {
		switch doc[i] {
		case ' ', '\t', '\n', '\r', ':':
			i++
		case '{':
			stack = append(stack, frame{object: true})
			wantKey = true
			i++
		case '[':
			stack = append(stack, frame{})
			i++
		case '}', ']':
			stack = stack[:len(stack)-1]
			i++
		case ',':
			if top := &stack[len(stack)-1]; top.object {
				wantKey = true
			} else {
				top.index++
			}
			i++
		case '"':
			end := stringEnd(doc, i)
			if a, bad := badString(doc, int64(i), int64(end)); bad {
				if wantKey {
					// The key as sent: decoded, its fault would read as U+FFFD.
					a.Pointer, a.Message = pointer(stack, len(stack)-1), fmt.Sprintf("key %s: %s", doc[i:end], a.Message)
				} else {
					a.Pointer = pointer(stack, len(stack))
				}
				out = append(out, a)
			}
			if wantKey {
				top := &stack[len(stack)-1]
				key := decodeKey(doc[i:end])
				if at, seen := top.keys[key]; seen {
					out = append(out, Ambiguity{pointer(stack, len(stack)-1), int64(i), fmt.Sprintf(
						"key %q appears twice in one object (at bytes %d and %d); receivers disagree on which value counts (most keep the last, some the first, some refuse the document): send each key once",
						key, at, i)})
				} else {
					if top.keys == nil {
						top.keys = map[string]int64{}
					}
					top.keys[key] = int64(i)
				}
				top.key, wantKey = key, false
			}
			i = end
		default: // a number, true, false or null
			for i < len(doc) && !endsScalar(doc[i]) {
				i++
			}
		}
	}
	return out
}

func endsScalar(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// frame is one open object or array.
type frame struct {
	object bool
	key    string           // the key of the object's current member
	keys   map[string]int64 // an object's keys so far, at their offsets
	index  int              // the index of an array's current element
}

// pointer is the JSON pointer of the current value of the first n frames.
func pointer(stack []frame, n int) string {
	var b strings.Builder
	for _, f := range stack[:n] {
		b.WriteByte('/')
		if f.object {
			b.WriteString(strings.ReplaceAll(strings.ReplaceAll(f.key, "~", "~0"), "/", "~1"))
		} else {
			b.WriteString(strconv.Itoa(f.index))
		}
	}
	return b.String()
}

// stringEnd is the offset just past the string literal that starts at
// doc[i], in a valid document.
func stringEnd(doc []byte, i int) int {
	for j := i + 1; ; j++ {
		switch doc[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
}

// decodeKey is the key of the literal lit as receivers compare it.
func decodeKey(lit []byte) string {
	if bytes.IndexByte(lit, '\\') < 0 && utf8.Valid(lit) {
		return string(lit[1 : len(lit)-1])
	}
	var k string
	_ = json.Unmarshal(lit, &k) // valid: the document is
	return k
}

// badString checks the string literal doc[q:end], quotes included, for
// bytes that are not UTF-8 and for lone surrogate escapes. It reports the
// first fault only: one is enough to find and fix the string.
func badString(doc []byte, q, end int64) (Ambiguity, bool) {
	lit := doc[q:end]
	for i := 1; i < len(lit)-1; {
		c := lit[i]
		switch {
		case c == '\\' && lit[i+1] == 'u':
			r := hex4(lit[i+2 : i+6])
			if !utf16.IsSurrogate(r) {
				i += 6
				continue
			}
			if r < 0xdc00 && i+12 <= len(lit)-1 && lit[i+6] == '\\' && lit[i+7] == 'u' {
				if lo := hex4(lit[i+8 : i+12]); lo >= 0xdc00 && lo <= 0xdfff {
					i += 12
					continue
				}
			}
			return Ambiguity{Offset: q + int64(i), Message: fmt.Sprintf(
				`\u%04x at byte %d is half of a UTF-16 surrogate pair without the other half, which is no character (receivers read it as U+FFFD, keep it or refuse the document): escape a character beyond U+FFFF as a pair such as \ud83d\ude00, or send it as UTF-8`,
				r, q+int64(i))}, true
		case c == '\\':
			i += 2
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(lit[i:])
			if r == utf8.RuneError && size == 1 {
				return Ambiguity{Offset: q + int64(i), Message: fmt.Sprintf(
					"byte %d (0x%02x) is not valid UTF-8, which JSON requires (RFC 8259, section 8.1): encode text as UTF-8, and binary content as base64 in a string",
					q+int64(i), c)}, true
			}
			i += size
		}
	}
	return Ambiguity{}, false
}

// hex4 is the value of four hex digits, which the decoder has checked.
func hex4(b []byte) rune {
	n, _ := strconv.ParseUint(string(b), 16, 16)
	return rune(n)
}
