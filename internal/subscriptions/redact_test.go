package subscriptions

import (
	"encoding/json"
	"strings"
	"testing"
)

// A subscription URL with a user and password (issue 11.8) is refused
// without being quoted with them: no run of three of the password's
// characters appears in the problems Validate and Parse report, whether
// the URL parses or not.
func TestURLPasswordNotInErrors(t *testing.T) {
	t.Parallel()
	const pw = "Zq9xW7vK2pLm"
	for _, raw := range []string{
		"https://u:" + pw + "@h.example.com/hook",
		"http://u:" + pw + "@127.0.0.1/hook",
		"ftp://u:" + pw + "@h.example.com/hook",
		"https://u:" + pw + " x@h.example.com/hook", // not a URL at all
		"https://u:" + pw + "%zz@h.example.com/hook",
		"h.example.com/u:" + pw + "@x",
	} {
		s := validSub()
		s.URL = raw
		err := s.Validate()
		if err == nil {
			t.Errorf("Validate accepted %q", raw)
			continue
		}
		doc, _ := json.Marshal(&s)
		_, perr := Parse(doc)
		for _, e := range []error{err, perr} {
			for i := 0; i+3 <= len(pw); i++ {
				if strings.Contains(e.Error(), pw[i:i+3]) {
					t.Errorf("%q: %q quotes %q of the password", raw, e, pw[i:i+3])
					break
				}
			}
		}
	}
}
