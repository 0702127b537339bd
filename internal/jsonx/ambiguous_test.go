package jsonx

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestAmbiguities(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		want []string // pointer + " " + a piece of the message, one per ambiguity
	}{
		{"none", `{"a":[1,{"b":"\ud83d\ude00 é"}],"c":{"a":1}}`, nil},
		{"a repeated key", `{"cvss_score":9.8,"cvss_score":6.1}`, []string{` key "cvss_score" appears twice`}},
		{"repeated after decoding", `{"a":1,"\u0061":2}`, []string{` key "a" appears twice`}},
		{"nested repeats", `{"x":{"b":[1,{"c":1,"c":2}]},"y":{"d":1,"d":2}}`, []string{`/x/b/1 key "c"`, `/y key "d"`}},
		{"pointer escapes", `{"a/~b":{"k":1,"k":1}}`, []string{`/a~1~0b key "k"`}},
		{"not UTF-8", "{\"a\":[\"ok\",\"x\xff\"]}", []string{`/a/1 byte 13 (0xff) is not valid UTF-8`}},
		{"an encoded surrogate is not UTF-8", "\"\xed\xa0\x80\"", []string{` byte 1 (0xed)`}},
		{"lone high surrogate", `{"t":"\ud800x"}`, []string{`/t \ud800 at byte 6 is half`}},
		{"high then high", `["\ud800\ud800"]`, []string{`/0 \ud800 at byte 2`}},
		{"lone low surrogate in a key", `{"\udc00":1}`, []string{` key "\udc00": \udc00 at byte 2`}},
		{"two values", `{} {}`, []string{` not valid JSON: invalid character '{' after top-level value at byte 4`}},
		{"not JSON", `{"a":}`, []string{` not valid JSON`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Ambiguities([]byte(tt.doc))
			if len(got) != len(tt.want) {
				t.Fatalf("Ambiguities(%s) = %+v, want %d", tt.doc, got, len(tt.want))
			}
			for i, a := range got {
				if s := a.Pointer + " " + a.Message; !strings.HasPrefix(s, tt.want[i]) {
					t.Errorf("Ambiguities(%s)[%d] = %q, want it to start %q", tt.doc, i, s, tt.want[i])
				}
			}
		})
	}
}

// A document Go writes is never ambiguous, no document makes Ambiguities
// panic, and on a valid one it finds what a walk over encoding/json's
// tokens finds.
func FuzzAmbiguities(f *testing.F) {
	f.Add([]byte(`{"a":1,"a":{"b":"\ud800"}}`), "k")
	f.Add([]byte("[\"\xff\",{}]"), "\u00e9")
	f.Add([]byte(`{"x":[{"a":1},{"a":2,"\u0061":3}],"y":{"z":[[],{"q":"\udc00","q":1}]}}`), "~/")
	f.Add([]byte(`{"\ud800":{"\udbff":1," ":[1," ",{}]}, "k" : [ true , null , -1.5e3 ] }`), "")
	f.Fuzz(func(t *testing.T, doc []byte, s string) {
		got := Ambiguities(doc)
		if json.Valid(doc) {
			var ptrs []string
			for _, a := range got {
				kind := "string"
				if strings.Contains(a.Message, "appears twice") {
					kind = "key " + strings.SplitN(a.Message, " ", 3)[1]
				}
				ptrs = append(ptrs, a.Pointer+" "+kind)
			}
			if want := tokenWalk(t, doc); !slices.Equal(ptrs, want) {
				t.Errorf("Ambiguities(%s) = %q, the token walk finds %q", doc, ptrs, want)
			}
		}
		b, _ := json.Marshal(map[string]any{s: []any{s, map[string]string{s: s, "x" + s: s}}})
		if a := Ambiguities(b); a != nil {
			t.Errorf("Ambiguities(%s) = %+v", b, a)
		}
	})
}

// tokenWalk finds the ambiguities of a valid doc with json.Decoder's
// tokens, each as its pointer and "string" or the repeated key.
func tokenWalk(t *testing.T, doc []byte) []string {
	t.Helper()
	type frame struct {
		object, wantKey bool
		key             string
		keys            map[string]bool
		index           int
	}
	var stack []*frame
	ptr := func(n int) string {
		var b strings.Builder
		for _, f := range stack[:n] {
			if f.object {
				b.WriteString("/" + strings.ReplaceAll(strings.ReplaceAll(f.key, "~", "~0"), "/", "~1"))
			} else {
				fmt.Fprintf(&b, "/%d", f.index)
			}
		}
		return b.String()
	}
	var out []string
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if k, ok := tok.(string); ok {
			isKey := top != nil && top.object && top.wantKey
			q := start + int64(bytes.IndexByte(doc[start:], '"'))
			if _, bad := badString(doc, q, dec.InputOffset()); bad {
				n := len(stack)
				if isKey {
					n--
				}
				out = append(out, ptr(n)+" string")
			}
			if isKey {
				if top.keys[k] {
					out = append(out, ptr(len(stack)-1)+" key "+strconv.Quote(k))
				}
				top.keys[k], top.key, top.wantKey = true, k, false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, wantKey: true, keys: map[string]bool{}})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 {
			if top := stack[len(stack)-1]; top.object {
				top.wantKey = true
			} else {
				top.index++
			}
		}
	}
}
