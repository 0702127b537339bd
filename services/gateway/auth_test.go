package gateway

import (
	"strings"
	"testing"
)

// A malformed SCANWIRE_API_KEYS entry ("acme:key" for "acme=key") printed
// the whole entry, key included. Every error names the entry by its
// position (and tenant, once it has one) and shows no three characters of
// any key.
func TestParseKeysErrorsShowNoKey(t *testing.T) {
	t.Parallel()
	const (
		k1 = "Zq9xKv7Wm2Lp4Rt8Yb3N"
		k2 = "Hs5jDc6Fg1Qw3Ex9Vu7B"
	)
	tests := []struct {
		name, admin, tenants string
		keys                 []string // the key material in the input
		want                 string   // the error names this
	}{
		{"colon for equals", "", "acme:" + k1, []string{k1, "acme:" + k1}, "entry 1 is not of the form tenant=key"},
		{"colon, second entry", "", "acme=" + k2 + ",globex:" + k1, []string{k1, k2}, "entry 2 is not of the form"},
		{"key alone", "", k1, []string{k1}, "entry 1 is not of the form"},
		{"equals at the end", "", "acme:" + k1 + "=", []string{k1}, "entry 1 is not of the form"},
		{"key split by a comma", "", "acme=" + k1[:10] + "," + k1[10:], []string{k1}, "entry 1: the key of tenant acme is shorter than 16"},
		{"bad tenant", "", "acme:" + k1[:8] + "=" + k2, []string{k1, k2}, "entry 1: the tenant before '=' must be"},
		{"tenant with a space", "", "ac me=" + k1, []string{k1}, "entry 1: the tenant before '=' must be"},
		{"short key", "", "acme=" + k1[:10], []string{k1[:10]}, "the key of tenant acme is shorter than 16 characters"},
		{"same key twice", "", "acme=" + k1 + ",globex=" + k1, []string{k1}, "entry 2: the key of tenant globex is used twice"},
		{"admin key reused", k2, "acme=" + k2, []string{k2}, "entry 1: the key of tenant acme is used twice"},
		{"short admin key", k1[:10], "", []string{k1[:10]}, "SCANWIRE_ADMIN_KEY: use at least 16 characters"},
		{"tenant twice", "", "acme=" + k1 + ",acme=" + k2, []string{k1, k2}, "entry 2: tenant acme has a key already"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKeys(tt.admin, tt.tenants)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
			for _, key := range tt.keys {
				for i := 0; i+3 <= len(key); i++ {
					if strings.Contains(err.Error(), key[i:i+3]) {
						t.Errorf("error %q shows %q of a key", err, key[i:i+3])
					}
				}
			}
		})
	}
	if k, err := ParseKeys(k1, "acme="+k2+", globex=x"+k1); err != nil || k.Tenants["acme"] != k2 || len(k.Tenants) != 2 {
		t.Errorf("valid keys: %+v %v", k, err)
	}
}
