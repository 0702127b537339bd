package schemas

import (
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// jsonNumber is RFC 8259's number grammar; a json.Number handed to
// ValidateValue by a caller need not follow it.
var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// badNumbers reports the numbers that the validator must not see. It turns
// every number into a big.Rat: an exponent past a million makes that
// conversion fail and the library panic, and one near it costs about 100ms,
// so a 256 KiB event full of them would stall fan-out for minutes. Nothing
// scanwire stores needs more than a float64, so anything beyond one is
// refused before validation, by pointer like every other violation.
func badNumbers(v any, loc []string, out *Error) {
	switch v := v.(type) {
	case map[string]any: // loc is a stack, reused: a copy per level would be quadratic in depth
		for k, c := range v {
			badNumbers(c, append(loc, k), out)
		}
	case []any:
		for i, c := range v {
			badNumbers(c, append(loc, strconv.Itoa(i)), out)
		}
	case json.Number:
		if !numberOK(string(v)) {
			out.Violations = append(out.Violations, Violation{pointer(loc),
				"must be a number that fits a 64-bit float, at most 100 characters long with an exponent within ±400, but found " + cut(string(v))})
		}
	case float64:
		if math.IsInf(v, 0) || math.IsNaN(v) {
			out.Violations = append(out.Violations, Violation{pointer(loc), "must be a finite number"})
		}
	case float32:
		badNumbers(float64(v), loc, out)
	}
}

func numberOK(s string) bool {
	if len(s) > 100 || !jsonNumber.MatchString(s) {
		return false
	}
	if f, err := strconv.ParseFloat(s, 64); err != nil || math.IsInf(f, 0) {
		return false
	}
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		return err == nil && e >= -400 && e <= 400
	}
	return true
}
