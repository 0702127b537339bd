package subscriptions

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

// dns resolves the names it holds and counts every lookup; a name it does
// not hold does not resolve.
type dns struct {
	mu      sync.Mutex
	names   map[string]netip.Addr
	lookups int
}

func (d *dns) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups++
	if a, ok := d.names[host]; ok {
		return []netip.Addr{a}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (d *dns) set(host string, a netip.Addr, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ok {
		d.names[host] = a
	} else {
		delete(d.names, host)
	}
}

func (d *dns) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lookups
}

// Issue 11.4: a write resolves the URL's host only when the URL is new or
// changed, so a subscription whose name was withdrawn can still be
// disabled, enabled, rotated and have its health recorded.
func TestOnlyNewURLsAreResolved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := &dns{names: map[string]netip.Addr{"hooks.example.com": netip.MustParseAddr("93.184.216.34"), "other.example.com": netip.MustParseAddr("93.184.216.35")}}
	st := NewStore(natsxtest.KeyValue(t, natsxtest.JetStream(t), natsx.BucketSubscriptions), &egress.Policy{Resolver: d})
	s, err := st.Create(ctx, Subscription{Tenant: "acme", URL: "https://hooks.example.com/x", Events: []string{"scan.started"}})
	if err != nil {
		t.Fatal(err)
	}
	if d.count() != 1 {
		t.Fatalf("create made %d lookups, want 1", d.count())
	}
	d.set("hooks.example.com", netip.Addr{}, false) // withdrawn

	cur, rev, err := st.Get(ctx, "acme", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	cur.Disabled, cur.DisabledReason = true, "endpoint moving"
	if _, err := st.Update(ctx, *cur, rev); err != nil {
		t.Errorf("disable: %v", err)
	}
	if _, err := st.Change(ctx, "acme", s.ID, func(s *Subscription) error { s.Disabled = false; return nil }); err != nil {
		t.Errorf("enable through Change: %v", err)
	}
	if _, err := st.Rotate(ctx, "acme", s.ID, time.Hour, ""); err != nil {
		t.Errorf("rotate: %v", err)
	}
	if d.count() != 1 {
		t.Errorf("writes that kept the URL made %d lookups in all, want only create's", d.count())
	}

	// A changed URL is resolved, through Update and through Change.
	cur, rev, _ = st.Get(ctx, "acme", s.ID)
	cur.URL = "https://other.example.com/x"
	if _, err := st.Update(ctx, *cur, rev); err != nil || d.count() != 2 {
		t.Errorf("update of the URL: %v, %d lookups", err, d.count())
	}
	_, err = st.Change(ctx, "acme", s.ID, func(s *Subscription) error { s.URL = "https://hooks.example.com/y"; return nil })
	if err == nil || d.count() != 3 {
		t.Errorf("change to a withdrawn name: %v, %d lookups", err, d.count())
	}
}

// A name that does not resolve at create is refused with DNS named as the
// likely cause; a name that resolves only to blocked addresses is refused
// for that, without the DNS hint.
func TestCreateNamesDNSAsTheLikelyCause(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := &dns{names: map[string]netip.Addr{"internal.example.com": netip.MustParseAddr("10.1.2.3")}}
	st := NewStore(natsxtest.KeyValue(t, natsxtest.JetStream(t), natsx.BucketSubscriptions), &egress.Policy{Resolver: d})
	_, err := st.Create(ctx, Subscription{Tenant: "acme", URL: "https://nowhere.example.com/x", Events: []string{"scan.started"}})
	if err == nil || !strings.HasPrefix(err.Error(), `subscription.url: "https://nowhere.example.com/x": host nowhere.example.com does not resolve`) ||
		!strings.Contains(err.Error(), "DNS may be the cause") {
		t.Errorf("unresolvable: %v", err)
	}
	_, err = st.Create(ctx, Subscription{Tenant: "acme", URL: "https://internal.example.com/x", Events: []string{"scan.started"}})
	if err == nil || !strings.Contains(err.Error(), "resolves only to blocked addresses") || strings.Contains(err.Error(), "DNS may be") {
		t.Errorf("blocked: %v", err)
	}
}

// A rotation never fails for the number of secrets: rotated again and
// again within the overlap, a subscription keeps the newest MaxSecrets,
// the newest signing, and the schema's limit states the same number.
func TestRotateManyTimesWithinTheOverlap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := &dns{names: map[string]netip.Addr{"hooks.example.com": netip.MustParseAddr("93.184.216.34")}}
	st := NewStore(natsxtest.KeyValue(t, natsxtest.JetStream(t), natsx.BucketSubscriptions), &egress.Policy{Resolver: d})
	s, err := st.Create(ctx, Subscription{Tenant: "acme", URL: "https://hooks.example.com/x", Events: []string{"scan.started"}})
	if err != nil {
		t.Fatal(err)
	}
	var last *Subscription
	for i := range MaxSecrets + 3 {
		if last, err = st.Rotate(ctx, "acme", s.ID, 24*time.Hour, ""); err != nil {
			t.Fatalf("rotation %d: %v", i+1, err)
		}
	}
	if n := len(last.Secrets); n != MaxSecrets {
		t.Errorf("%d secrets after %d rotations, want the newest %d", n, MaxSecrets+3, MaxSecrets)
	}
	if last.Secrets[0].Expires != nil {
		t.Errorf("the newest secret expires at %v; it signs until the next rotation", last.Secrets[0].Expires)
	}
	schema, err := os.ReadFile("../../schemas/subscription.json")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`"maxItems": %d,`, MaxSecrets); !strings.Contains(string(schema), want) {
		t.Errorf("schemas/subscription.json does not state %s for secrets", want)
	}
}
