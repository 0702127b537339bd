package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// english renders the library's own messages for the rare kinds describe
// does not word itself.
var english = message.NewPrinter(language.English)

// describe says in plain English what was expected and what was found; the
// library's own wording ("maximum: got 11, want 10") is kept for rare kinds.
func describe(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = article(w)
		}
		return "must be " + strings.Join(want, " or ") + " but found " + article(k.Got)
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = show(w)
		}
		return "must be one of " + strings.Join(want, ", ") + " but found " + show(k.Got)
	case *kind.Format:
		if k.Want == "date-time" {
			return "must be an RFC 3339 date-time such as 2026-01-02T15:04:05Z but found " + show(k.Got)
		}
		return "must be a valid " + k.Want + " but found " + show(k.Got)
	case *kind.Pattern:
		if words, ok := patternWords[k.Want]; ok {
			return words + " but found " + show(k.Got)
		}
		return "must match " + k.Want + " but found " + show(k.Got)
	case *kind.MinLength:
		return fmt.Sprintf("must be at least %s long but has %d", count(k.Want, "character"), k.Got)
	case *kind.MaxLength:
		return fmt.Sprintf("must be at most %s long but has %d", count(k.Want, "character"), k.Got)
	case *kind.MinItems:
		return fmt.Sprintf("must have at least %s but has %d", count(k.Want, "item"), k.Got)
	case *kind.MaxItems:
		return fmt.Sprintf("must have at most %s but has %d", count(k.Want, "item"), k.Got)
	case *kind.UniqueItems:
		return fmt.Sprintf("must not repeat items, but items %d and %d are equal", k.Duplicates[0], k.Duplicates[1])
	case *kind.Minimum:
		return "must be >= " + num(k.Want) + " but found " + num(k.Got)
	case *kind.Maximum:
		return "must be <= " + num(k.Want) + " but found " + num(k.Got)
	case *kind.ExclusiveMinimum:
		return "must be > " + num(k.Want) + " but found " + num(k.Got)
	case *kind.ExclusiveMaximum:
		return "must be < " + num(k.Want) + " but found " + num(k.Got)
	case *kind.FalseSchema:
		return "not allowed here"
	}
	return k.LocalizedString(english)
}

// patternWords says in words what the schemas' patterns ask for: a
// regular expression is not an answer a person can act on.
var patternWords = map[string]string{
	`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`: "must be a duration such as 30s, 5m, 2h or 1h30m (units ns, us, ms, s, m, h; a number needs its unit, and there is no d: write 24h)",
	`^[A-Za-z0-9_-]{1,128}$`:                    "must be 1-128 characters of A-Z, a-z, 0-9, '_' or '-'",
	`^sub_[0-9A-HJKMNP-TV-Z]{26}$`:              "must be a subscription id: sub_ and 26 characters of a ULID, as scanwire assigns",
	`^[a-z*]+(\.[a-z*-]+)*$`:                    "must be an event type such as finding.high, or a pattern such as finding.* or *",
	`^CWE-[0-9]{1,6}$`:                          "must be a CWE id such as CWE-79",
	`^https?://`:                                "must be an http or https URL",
	`^[A-Za-z0-9_.:-]+$`:                        "must be letters, digits, '_', '.', ':' or '-'",
}

// jsonProblem words a decoding error for a sender who cannot see our code:
// encoding/json's bare "EOF" becomes "empty document", and a syntax error
// says at which byte it was found.
func jsonProblem(err error, doc []byte) string {
	var se *json.SyntaxError
	switch {
	case len(bytes.TrimSpace(doc)) == 0:
		return "empty document"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the document ends too early"
	case errors.As(err, &se):
		return fmt.Sprintf("%v at byte %d", se, se.Offset)
	}
	return err.Error()
}

func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func article(jsonType string) string {
	switch jsonType {
	case "null":
		return "null"
	case "object", "array", "integer":
		return "an " + jsonType
	}
	return "a " + jsonType
}

// show renders a found value for a message, cut short so that a 64 KiB
// evidence string cannot flood an error response or a log line.
func show(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(cut(s))
	}
	b, _ := json.Marshal(v)
	return cut(string(b))
}

func cut(s string) string {
	if r := []rune(s); len(r) > 64 {
		return string(r[:64]) + "…"
	}
	return s
}

func num(r *big.Rat) string {
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// pointer builds an RFC 6901 pointer: "~" and "/" in a key are escaped as
// "~0" and "~1", in that order, so that "a/b" and nested "a","b" differ.
func pointer(loc []string) string {
	var b strings.Builder
	for _, tok := range loc {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1"))
	}
	return b.String()
}
