package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/scanwire/scanwire/internal/attempts"
)

// printJSON writes v as indented JSON, with <, > and & left as they are.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// newTable starts a table of tab-separated columns on w with the header
// line header; Flush prints it.
func newTable(w io.Writer, header string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	return tw
}

// oneLine collapses the whitespace of s and cuts it to n bytes, marking a
// cut with an ellipsis.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n-- // never cut a character in two
	}
	return s[:n] + "…"
}

// describe says how an attempt went: the HTTP status or the error, the
// outcome, and when the next attempt comes.
func describe(a attempts.Attempt) string {
	s := fmt.Sprintf("HTTP %d", a.Status)
	if a.Error != "" {
		s = a.Error
	}
	s += ", " + a.Outcome
	if a.RetryIn != "" {
		in := a.RetryIn
		if d, err := time.ParseDuration(in); err == nil {
			in = roundDuration(d).String() // jittered: 1m3.417592716s
		}
		s += " (retry in " + in + ")"
	}
	return s
}

// roundDuration rounds d for people: to the millisecond from a second up,
// to the microsecond below.
func roundDuration(d time.Duration) time.Duration {
	if d >= time.Second || d <= -time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}
