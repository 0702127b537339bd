package main

import (
	"testing"
	"unicode/utf8"
)

// oneLine joins lines and cuts long text without cutting a character in
// two.
func TestOneLine(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\n  b\tc", 10, "a b c"},
		{"abcdef", 3, "abc…"},
		{"ééé", 3, "é…"}, // byte 3 is inside the second é
		{"ééé", 4, "éé…"},
	} {
		got := oneLine(c.in, c.n)
		if got != c.want || !utf8.ValidString(got) {
			t.Errorf("oneLine(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
