package jsonx

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestUnescapeHTML(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"escapes in values and keys", `{"a\u003c":"\u003cb\u003E \u0026 x"}`, `{"a<":"<b> & x"}`},
		{"an escaped backslash before u003c is text", `["\\u003c", "\\\u003c"]`, `["\\u003c", "\\<"]`},
		{"an escaped quote does not end the string", `["\" \u0026 \"", "\u0026"]`, `["\" & \"", "&"]`},
		{"other escapes stay", `"\u0027 \u2028 \n \u00e9"`, `"\u0027 \u2028 \n \u00e9"`},
		{"outside strings nothing changes", `{"a":1}`, `{"a":1}`},
		{"cut short", `"\u003`, `"\u003`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := UnescapeHTML([]byte(tt.in)); string(got) != tt.want {
				t.Errorf("UnescapeHTML(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

// Whatever the text, json.Marshal's HTML escapes undone are what Marshal
// writes, and a valid document keeps its meaning.
func FuzzUnescapeHTML(f *testing.F) {
	f.Add(`<script> & "q" \u003c`, []byte(`{"a":"\u003c\\u0026"}`))
	f.Add("\u2028 \\", []byte(`["\"\u0026"]`))
	f.Fuzz(func(t *testing.T, s string, doc []byte) {
		if !strings.ContainsAny(s, "\u2028\u2029") { // json.Marshal escapes those too, Marshal does not
			escaped, _ := json.Marshal(map[string]string{s: s})
			plain, _ := Marshal(map[string]string{s: s})
			if got := UnescapeHTML(escaped); !bytes.Equal(got, plain) {
				t.Errorf("UnescapeHTML(%s) = %s, want %s", escaped, got, plain)
			}
		}
		var before, after any
		if json.Unmarshal(doc, &before) != nil {
			UnescapeHTML(doc) // must not panic
			return
		}
		if err := json.Unmarshal(UnescapeHTML(doc), &after); err != nil || !reflect.DeepEqual(before, after) {
			t.Errorf("UnescapeHTML changed %s into %s (%v)", doc, UnescapeHTML(doc), err)
		}
	})
}
