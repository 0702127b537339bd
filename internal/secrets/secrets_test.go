package secrets

import (
	"errors"
	"strings"
	"testing"
)

func mustKeyring(t *testing.T, s string) *Keyring {
	t.Helper()
	k, err := ParseKeyring(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A keyring is base64 keys of 32 bytes; a bad entry is named by its
// position, never quoted.
func TestParseKeyring(t *testing.T) {
	good := NewKey()
	for _, tc := range []struct{ in, want string }{
		{"c2hvcnQ=", "key 1 is not 32 bytes"},
		{good + ",not base64!", "key 2 is not 32 bytes"},
		{good + "," + good, "key 2 is there twice"},
	} {
		_, err := ParseKeyring(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), EnvKey) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), good[:8]) {
			t.Errorf("the error quotes a key: %v", err)
		}
	}
	if k := mustKeyring(t, ""); k.Enabled() {
		t.Error("the empty keyring seals")
	}
	url := strings.NewReplacer("+", "-", "/", "_").Replace(strings.TrimRight(good, "="))
	if a, b := mustKeyring(t, good), mustKeyring(t, url); a.Current() != b.Current() {
		t.Error("the same key in base64url is another key")
	}
}

// A sealed secret opens where it was sealed, under any key of the ring,
// and nowhere else; damaged, it does not open; plain text passes.
func TestSealOpen(t *testing.T) {
	oldKey, newKey := NewKey(), NewKey()
	old, both, other := mustKeyring(t, oldKey), mustKeyring(t, newKey+","+oldKey), mustKeyring(t, NewKey())
	const secret, where = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "subscriptions/acme.sub_1/secret"

	sealed := old.Seal(secret, where)
	if strings.Contains(sealed, "MfKQ9r8") || !strings.HasPrefix(sealed, "sealed:v1:"+old.Current()+":") {
		t.Fatalf("sealed: %q", sealed)
	}
	if again := old.Seal(secret, where); again == sealed {
		t.Error("two seals of one secret are equal: the nonce is not fresh")
	}
	if old.Seal(sealed, where) != sealed {
		t.Error("a sealed value was sealed again")
	}
	for name, k := range map[string]*Keyring{"its key": old, "a ring that still holds it": both} {
		if got, err := k.Open(sealed, where); err != nil || got != secret {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	if _, err := other.Open(sealed, where); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), old.Current()) {
		t.Errorf("a ring without its key: %v", err)
	}
	var none *Keyring
	if _, err := none.Open(sealed, where); !errors.Is(err, ErrNoKey) {
		t.Errorf("no keyring: %v", err)
	}
	if _, err := old.Open(sealed, "subscriptions/globex.sub_2/secret"); err == nil || !strings.Contains(err.Error(), "moved") {
		t.Errorf("moved to another document: %v", err)
	}
	damaged := sealed[:len(sealed)-3] + "AAA"
	if _, err := old.Open(damaged, where); err == nil {
		t.Error("a damaged value opened")
	}
	if got, err := other.Open(secret, where); err != nil || got != secret {
		t.Errorf("plain text: %q, %v", got, err)
	}
	if none.Seal(secret, where) != secret {
		t.Error("no keyring sealed")
	}
}

// SealDoc seals the secrets of a document at any depth and nothing else;
// OpenDoc gives the document back; NeedsRekey finds plain and old secrets.
func TestSealDoc(t *testing.T) {
	oldKey, newKey := NewKey(), NewKey()
	old, both := mustKeyring(t, oldKey), mustKeyring(t, newKey+","+oldKey)
	doc := []byte(`{"id":"sub_1","url":"https://h.example.com/x?a=1&b=<2>","secrets":[{"secret":"whsec_one","created":"2026-01-01T00:00:00Z"},{"secret":"whsec_two"}],"limits":{"findings_per_scan":100}}`)
	sealed, err := old.SealDoc(doc, "b/k", DefaultFields)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"whsec_one", "whsec_two"} {
		if strings.Contains(string(sealed), s) {
			t.Errorf("sealed document holds %s: %s", s, sealed)
		}
	}
	if !strings.Contains(string(sealed), `"https://h.example.com/x?a=1&b=<2>"`) || !strings.Contains(string(sealed), `"findings_per_scan":100`) {
		t.Errorf("the rest of the document changed: %s", sealed)
	}
	if !both.NeedsRekey(sealed, DefaultFields) || old.NeedsRekey(sealed, DefaultFields) || !old.NeedsRekey(doc, DefaultFields) {
		t.Error("NeedsRekey")
	}
	opened, err := both.OpenDoc(sealed, "b/k", DefaultFields)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"whsec_one", "whsec_two"} {
		if !strings.Contains(string(opened), `"`+s+`"`) {
			t.Errorf("opened document lacks %s: %s", s, opened)
		}
	}
	if _, err := both.OpenDoc(sealed, "b/other", DefaultFields); err == nil {
		t.Error("a document opened under another key name")
	}
	if same, _ := old.OpenDoc(doc, "b/k", DefaultFields); string(same) != string(doc) {
		t.Error("a plain document was rewritten when read")
	}
}
