package app

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/services/gateway"
)

// What would leave NATS open beyond loopback, or a cluster with servers
// that disagree on its credentials, is refused before anything starts,
// naming the flag and the fix.
func TestValidateRefusesAnOpenOrDisagreeingNATS(t *testing.T) {
	keys := gateway.Keys{Admin: "admin-key-0123456789"}
	whole := natsauth.Credentials{}.Complete()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" when valid
	}{
		{"open on loopback", Config{Server: natsx.ServerConfig{DataDir: "d", Listen: "127.0.0.1:4222"}}, ""},
		{"open beyond loopback", Config{Server: natsx.ServerConfig{DataDir: "d", Listen: "0.0.0.0:4222"}}, "--nats-listen 0.0.0.0:4222"},
		{"open routes beyond loopback", Config{Server: natsx.ServerConfig{DataDir: "d", Listen: "127.0.0.1:4222", ClusterListen: "0.0.0.0:6222"}}, "--cluster-listen 0.0.0.0:6222"},
		{"closed beyond loopback", Config{Gateway: gateway.Config{Keys: keys}, Server: natsx.ServerConfig{DataDir: "d", Listen: "0.0.0.0:4222"}}, ""},
		{"a keyed cluster with made-up credentials", Config{Gateway: gateway.Config{Keys: keys},
			Server: natsx.ServerConfig{DataDir: "d", Listen: "0.0.0.0:4222", ClusterListen: "0.0.0.0:6222"}}, "SCANWIRE_NATS_*"},
		{"a keyed cluster with its credentials", Config{Gateway: gateway.Config{Keys: keys}, NATSAuth: whole,
			Server: natsx.ServerConfig{DataDir: "d", Listen: "0.0.0.0:4222", ClusterListen: "0.0.0.0:6222"}}, ""},
		{"an external NATS, open", Config{NATSURL: "nats://n:4222"}, ""},
	} {
		err := tc.cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want it to name %s", tc.name, err, tc.want)
		}
	}
}

// Issue 13.3 and 13.4: a process without keys says at start that its NATS
// is open on loopback only, and one without a secrets key that signing
// secrets are stored in plain text.
func TestStartSaysWhatIsOpen(t *testing.T) {
	log := &lockedBuffer{}
	a, err := Start(context.Background(), Config{Server: natsx.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"},
		Topology: natsx.DefaultTopology(), Log: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	for _, want := range []string{"lets in anyone who connects, and listens on loopback only", "signing secrets are stored in plain text"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the start's log does not say %q:\n%s", want, log.String())
		}
	}
}

// lockedBuffer is a log the process writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
