package egress

import (
	"context"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ raw, want string }{
		{"https://hooks.example.com/cb", "https://hooks.example.com/cb"},
		{"https://u:pw@h.example/x?y=1", "https://REDACTED@h.example/x?y=1"},
		{"https://token@h.example/", "https://REDACTED@h.example/"},
		{"https://u:p@ss@h.example/", "https://REDACTED@h.example/"},          // the last "@" ends the userinfo
		{"https://u:ab/cd@h.example/", "https://REDACTED@h.example/"},         // base64 holds "/"
		{"https://u:12?abcd@h.example/", "https://REDACTED@h.example/"},       // a parser reads a port and a query
		{"https://u:pa ss@h.example/", "https://REDACTED@h.example/"},         // not a valid URL at all
		{"u:pw@h.example:4222", "REDACTED@h.example:4222"},                    // no scheme
		{"https:u:pw@h.example", "REDACTED@h.example"},                        // opaque
		{"https://h.example/cb?to=a@b.example", "https://REDACTED@b.example"}, // errs toward hiding
	}
	for _, tt := range tests {
		if got := RedactURL(tt.raw); got != tt.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tt.raw, got, tt.want)
		}
	}
}

// A URL with a user and password (issue 11.8): no refusal quotes the
// password, or any run of three of its characters, whatever the password
// holds and whichever check refuses the URL first. The passwords are what
// RFC 3986 allows in userinfo, and some a parser refuses (a space, a bad
// escape, "/" or "#" that make "u:" a host with a bad port). A "/", "?" or
// "#" ends the authority, so "https://ab/cd@h/" names host ab: no password.
func TestURLErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	passwords := []string{"Zq9xW7vK2pLm", "Zq9x:W7vK2pLm", "Zq9x!$&'()*+,;=W7vK", "Zq9x%40W7vK2pLm", "Zq9x W7vK2pLm", "Zq9x%zzW7vK2pLm",
		"Zq9x/W7vK2pLm", "Zq9x#W7vK2pLm"}
	forms := []string{
		"https://u:%s@hooks.example.com/cb",
		"http://u:%s@hooks.example.com/cb", // refused for http before the userinfo is looked at
		"https://u:%s@10.0.0.1/cb",
		"https://u:%s@169.254.169.254/cb",
		"ftp://u:%s@hooks.example.com/cb",
		"https://u:%s@hooks.example.com:99999/cb",
		"https:u:%s@hooks.example.com",
	}
	for _, pw := range passwords {
		raws := make([]string, 0, len(forms)+1)
		for _, form := range forms {
			raws = append(raws, strings.Replace(form, "%s", pw, 1))
		}
		if !strings.ContainsAny(pw, "/#") {
			raws = append(raws, "https://"+pw+"@hooks.example.com/cb") // a token
		}
		for _, raw := range raws {
			for _, p := range []*Policy{{}, {AllowPrivate: true}} {
				checks := map[string]error{
					"CheckURLStatic":   p.CheckURLStatic(raw),
					"CheckURL":         p.CheckURL(context.Background(), raw),
					"CheckCallbackURL": p.CheckCallbackURL(context.Background(), raw),
				}
				for name, err := range checks {
					if err == nil {
						t.Errorf("%s(%q) accepted a URL with a password", name, raw)
						continue
					}
					if run := leak(err.Error(), pw); run != "" {
						t.Errorf("%s(%q), AllowPrivate %v: %q quotes %q of the password", name, raw, p.AllowPrivate, err, run)
					}
				}
			}
		}
	}
}

// leak returns a run of three characters of secret that text holds, or "".
func leak(text, secret string) string {
	for i := 0; i+3 <= len(secret); i++ {
		if strings.Contains(text, secret[i:i+3]) {
			return secret[i : i+3]
		}
	}
	return ""
}
