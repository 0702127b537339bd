package signing

import (
	"strings"
	"testing"
)

// The published Standard Webhooks test vector: if this holds, receivers'
// existing libraries verify what scanwire sends.
func TestStandardSignatureMatchesPublishedVector(t *testing.T) {
	key, err := StandardKey("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := StandardSignature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("signature %s, want %s", got, want)
	}
}

func TestNewStandardSecretIsUsable(t *testing.T) {
	a, b := NewStandardSecret(), NewStandardSecret()
	if a == b {
		t.Fatal("two secrets are equal")
	}
	key, err := StandardKey(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 32 {
		t.Errorf("key is %d bytes, want 32", len(key))
	}
}

func TestStandardKeyRejects(t *testing.T) {
	tests := []struct{ name, secret, want string }{
		{"no prefix", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", `must start with "whsec_"`},
		{"not base64", "whsec_!!!!", "not valid base64"},
		{"too short", "whsec_c2hvcnQ=", "use at least 24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := StandardKey(tt.secret)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestHexHMAC(t *testing.T) {
	// RFC 4231 test case 2.
	got := HexHMAC([]byte("Jefe"), []byte("what do ya want "), []byte("for nothing?"))
	if want := "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
