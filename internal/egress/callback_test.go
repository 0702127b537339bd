package egress

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// hangingResolver answers only when ctx ends, as a dead DNS server does.
type hangingResolver struct{}

func (hangingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestCheckCallbackURL(t *testing.T) {
	tests := []struct {
		name, url    string
		allowPrivate bool
		want         string // part of the error; "" means accepted
		blocked      bool
	}{
		{"public name", "https://hooks.example.com/cb", false, "", false},
		{"public IP", "https://8.8.8.8/cb", false, "", false},
		{"some address public", "https://mixed.example.com/cb", false, "", false},
		// DNS may be down, or the name not yet published: delivery judges
		// the address it dials.
		{"does not resolve", "https://nxdomain.example.com/cb", false, "", false},
		{"resolver failing", "https://flaky.example.com/cb", false, "", false},

		{"http", "http://hooks.example.com/cb", false, "must use https", false},
		{"userinfo", "https://u@hooks.example.com/cb", false, "user or password", false},
		{"loopback literal", "http://127.0.0.1/cb", true, "", false},
		{"loopback literal, strict", "https://127.0.0.1/cb", false, `"https://127.0.0.1/cb" is a loopback address (127.0.0.0/8)`, true},
		{"SIIT loopback", "https://[::ffff:0:7f00:1]/cb", false, "embeds 127.0.0.1, a loopback address", true},
		{"metadata", "http://169.254.169.254/latest", true, "cloud metadata", true},
		{"localhost", "https://localhost/cb", false, "loopback name", true},
		{"resolves only to loopback", "https://loopback.example.com/cb", false,
			`egress blocked: "https://loopback.example.com/cb": loopback.example.com resolves only to blocked addresses: 127.0.0.1 is a loopback address (127.0.0.0/8); subscriptions must reach the public internet (scanwire run --allow-private-targets allows it for local development)`, true},
		{"resolves only to loopback, allowed", "https://loopback.example.com/cb", true, "", false},
		{"resolves only to blocked", "https://rebind.example.com/cb", false, "127.0.0.1 is a loopback address (127.0.0.0/8), and 169.254.169.254 is a link-local address (cloud metadata)", true},
		{"resolves only to metadata", "https://metadata.example.com/cb", true, "metadata.example.com resolves only to blocked addresses: 169.254.169.254", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Policy{AllowPrivate: tt.allowPrivate, Resolver: testResolver}
			checkURLError(t, p.CheckCallbackURL(context.Background(), tt.url), tt.want, tt.blocked)
		})
	}
}

// A resolver that never answers costs a few seconds, not the caller's
// whole deadline, and refuses nothing.
func TestCheckCallbackURLDoesNotWaitOnDNS(t *testing.T) {
	t.Parallel()
	p := &Policy{Resolver: hangingResolver{}}
	start := time.Now()
	if err := p.CheckCallbackURL(context.Background(), "https://hooks.example.com/cb"); err != nil {
		t.Errorf("refused while DNS hangs: %v", err)
	}
	if d := time.Since(start); d > callbackLookup+time.Second {
		t.Errorf("took %s", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.CheckCallbackURL(ctx, "https://hooks.example.com/cb"); err != nil {
		t.Errorf("refused with ctx done: %v", err)
	}
	if err := p.CheckCallbackURL(ctx, "https://10.0.0.1/cb"); !errors.Is(err, ErrBlocked) {
		t.Errorf("an IP literal needs no DNS and is judged with ctx done: %v", err)
	}
}
