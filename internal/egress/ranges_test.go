package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// registry is every entry of the IANA IPv4 and IPv6 Special-Purpose
// Address Registries (2025), plus multicast and the other ranges the
// policy adds, written here independently of the table: each with one
// address inside it, and whether it stays blocked under
// --allow-private-targets. A row missing from the table fails here.
var registry = []struct {
	cidr, addr string
	always     bool
	embeds     string // for a range judged by the IPv4 address it carries: that address
}{
	// IPv4 Special-Purpose Address Registry.
	{"0.0.0.0/8", "0.1.2.3", true, ""},
	{"0.0.0.0/32", "0.0.0.0", true, ""},
	{"10.0.0.0/8", "10.20.30.40", false, ""},
	{"100.64.0.0/10", "100.127.255.254", false, ""},
	{"127.0.0.0/8", "127.0.0.1", false, ""},
	{"169.254.0.0/16", "169.254.10.20", true, ""},
	{"172.16.0.0/12", "172.20.0.1", false, ""},
	{"192.0.0.0/24", "192.0.0.100", false, ""},
	{"192.0.0.0/29", "192.0.0.1", false, ""},
	{"192.0.0.8/32", "192.0.0.8", false, ""},
	{"192.0.0.9/32", "192.0.0.9", false, ""},
	{"192.0.0.10/32", "192.0.0.10", false, ""},
	{"192.0.0.170/32", "192.0.0.170", false, ""},
	{"192.0.0.171/32", "192.0.0.171", false, ""},
	{"192.0.2.0/24", "192.0.2.55", false, ""},
	{"192.31.196.0/24", "192.31.196.1", false, ""},
	{"192.52.193.0/24", "192.52.193.1", false, ""},
	{"192.88.99.0/24", "192.88.99.1", false, ""},
	{"192.88.99.2/32", "192.88.99.2", false, ""},
	{"192.168.0.0/16", "192.168.1.1", false, ""},
	{"192.175.48.0/24", "192.175.48.6", false, ""},
	{"198.18.0.0/15", "198.19.255.1", false, ""},
	{"198.51.100.0/24", "198.51.100.7", false, ""},
	{"203.0.113.0/24", "203.0.113.9", false, ""},
	{"240.0.0.0/4", "250.1.2.3", false, ""},
	{"255.255.255.255/32", "255.255.255.255", true, ""},
	// IPv4 multicast.
	{"224.0.0.0/4", "239.1.2.3", true, ""},

	// IPv6 Special-Purpose Address Registry.
	{"::1/128", "::1", false, ""},
	{"::/128", "::", true, ""},
	{"::ffff:0:0/96", "::ffff:127.0.0.1", false, "127.0.0.1"},
	{"64:ff9b::/96", "64:ff9b::a00:1", false, "10.0.0.1"},
	{"64:ff9b:1::/48", "64:ff9b:1:ab::808:808", false, ""},
	{"100::/64", "100::1", false, ""},
	{"100:0:0:1::/64", "100:0:0:1::1", false, ""},
	{"2001::/23", "2001:1ff::1", false, ""},
	{"2001::/32", "2001:0:4136:e378:8000:63bf:80ff:fffe", false, "127.0.0.1"},
	{"2001:1::1/128", "2001:1::1", false, ""},
	{"2001:1::2/128", "2001:1::2", false, ""},
	{"2001:1::3/128", "2001:1::3", false, ""},
	{"2001:2::/48", "2001:2:0:1::1", false, ""},
	{"2001:3::/32", "2001:3:1::1", false, ""},
	{"2001:4:112::/48", "2001:4:112::1", false, ""},
	{"2001:10::/28", "2001:10::1", false, ""},
	{"2001:20::/28", "2001:2f::1", false, ""},
	{"2001:30::/28", "2001:30::1", false, ""},
	{"2001:db8::/32", "2001:db8::1", false, ""},
	{"2002::/16", "2002:a00:1::1", false, "10.0.0.1"},
	{"2620:4f:8000::/48", "2620:4f:8000::53", false, ""},
	{"3fff::/20", "3fff:fff::1", false, ""},
	{"5f00::/16", "5f00:1::1", false, ""},
	{"fc00::/7", "fd12::1", false, ""},
	{"fe80::/10", "febf::1", true, ""},
	// IPv6 beyond the registry: multicast, site-local, SIIT-translated,
	// IPv4-compatible.
	{"ff00::/8", "ff0e::1", true, ""},
	{"fec0::/10", "fec0::1", false, ""},
	{"::ffff:0:0:0/96", "::ffff:0:a9fe:a9fe", true, "169.254.169.254"},
	{"::/96", "::7f00:1", false, "127.0.0.1"},
}

// One address of every registry entry is refused, and the message names
// the entry's range (or the IPv4 address a carrying form embeds).
func TestRegistry(t *testing.T) {
	for _, tt := range registry {
		t.Run(tt.cidr, func(t *testing.T) {
			prefix := netip.MustParsePrefix(tt.cidr)
			ip := netip.MustParseAddr(tt.addr)
			if !prefix.Contains(ip) {
				t.Fatalf("the test's address %s is not in %s", ip, prefix)
			}
			if !slices.ContainsFunc(table, func(e entry) bool { return e.prefix == prefix }) {
				t.Fatalf("%s is not in the table", prefix)
			}
			err := (&Policy{}).CheckIP(ip)
			if err == nil {
				t.Fatalf("%s accepted", ip)
			}
			checkBlocked(t, err)
			want := "(" + tt.cidr + ")"
			if tt.embeds != "" {
				want = "embeds " + tt.embeds
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%v, want it to name %q", err, want)
			}
			err = (&Policy{AllowPrivate: true}).CheckIP(ip)
			if (err != nil) != tt.always {
				t.Errorf("with --allow-private-targets: %v, want blocked=%v", err, tt.always)
			}
		})
	}
}

// metadata are the table's rows that are in no registry.
var metadata = []string{"169.254.169.254/32", "169.254.170.2/32", "fd00:ec2::254/128", "fd00:ec2::/32",
	"fd20:ce::254/128", "100.100.100.200/32", "168.63.129.16/32", "192.0.0.192/32"}

// The table's rows are what judge relies on: each prefix canonical and
// listed once, each sourced, each carrier able to read its IPv4 address,
// and none that this test's registry does not know.
func TestTableIsWellFormed(t *testing.T) {
	known := map[netip.Prefix]bool{}
	for _, tt := range registry {
		known[netip.MustParsePrefix(tt.cidr)] = true
	}
	for _, c := range metadata {
		known[netip.MustParsePrefix(c)] = true
	}
	seen := map[netip.Prefix]bool{}
	for _, e := range table {
		switch {
		case e.prefix != e.prefix.Masked():
			t.Errorf("%s has host bits set", e.prefix)
		case seen[e.prefix]:
			t.Errorf("%s is listed twice", e.prefix)
		case !known[e.prefix]:
			t.Errorf("%s is in the table but not in the test's registry", e.prefix)
		case e.name == "" || e.ref == "" || e.what == "":
			t.Errorf("%s lacks its name, reference or message", e.prefix)
		case e.tier == carrier && e.embeds == nil:
			t.Errorf("%s is a carrier that reads no IPv4 address", e.prefix)
		case e.embeds != nil && !e.prefix.Addr().Is6():
			t.Errorf("%s is IPv4 and cannot carry an IPv4 address", e.prefix)
		}
		seen[e.prefix] = true
	}
}

// embeddings are the IPv6 forms that carry an IPv4 address, as text.
func embeddings(v4 netip.Addr) map[string]string {
	b := v4.As4()
	hi, lo := uint16(b[0])<<8|uint16(b[1]), uint16(b[2])<<8|uint16(b[3])
	hex := func(v uint16) string { return strconv.FormatUint(uint64(v), 16) }
	return map[string]string{
		"mapped":             "::ffff:" + v4.String(),
		"mapped hex":         "::ffff:" + hex(hi) + ":" + hex(lo),
		"mapped zero-padded": "0000:0000:0000:0000:0000:FFFF:" + fmt.Sprintf("%04X:%04X", hi, lo),
		"translated":         "::ffff:0:" + v4.String(),
		"translated hex":     "::ffff:0:" + hex(hi) + ":" + hex(lo),
		"compatible":         "::" + v4.String(),
		"NAT64":              "64:ff9b::" + hex(hi) + ":" + hex(lo),
		"NAT64 dotted":       "64:ff9b::" + v4.String(),
		"NAT64 local":        "64:ff9b:1::" + hex(hi) + ":" + hex(lo),
		"6to4":               "2002:" + hex(hi) + ":" + hex(lo) + "::1",
		"Teredo":             "2001:0:4136:e378:8000:63bf:" + hex(^hi) + ":" + hex(^lo),
	}
}

// The translated, mapped, compatible, NAT64, 6to4 and Teredo forms of
// 127.0.0.1 and 10.0.0.1 are refused in URLs (CheckURLStatic, and so
// subscriptions and callback URLs) and at dial time (CheckIP, the Control
// hook, DialContext), naming the IPv4 address; with
// --allow-private-targets they are let through as 127.0.0.1 and 10.0.0.1
// are. https://[::ffff:0:7f00:1]/ is the SIIT form that issue 10.6 found.
func TestEmbeddedForms(t *testing.T) {
	for _, v4 := range []string{"127.0.0.1", "10.0.0.1"} {
		for name, form := range embeddings(netip.MustParseAddr(v4)) {
			t.Run(v4+" "+name, func(t *testing.T) {
				ip, err := netip.ParseAddr(form)
				if err != nil {
					t.Fatal(err)
				}
				p := &Policy{Resolver: panicResolver{}}
				url := "https://[" + form + "]/cb"
				for what, err := range map[string]error{
					"CheckURLStatic":    p.CheckURLStatic(url),
					"CheckCallbackURL":  p.CheckCallbackURL(context.Background(), url),
					"CheckIP":           p.CheckIP(ip),
					"Control":           p.Control("tcp6", net.JoinHostPort(form, "443"), nil),
					"DialContext":       dialNowhere(t, p, net.JoinHostPort(form, "443")),
					"DialContext (url)": dialNowhere(t, p, net.JoinHostPort(ip.String(), "443")),
				} {
					if err == nil || !strings.Contains(err.Error(), v4) {
						t.Errorf("%s: %v, want a refusal naming %s", what, err, v4)
						continue
					}
					checkBlocked(t, err)
				}
				lax := &Policy{AllowPrivate: true, Resolver: panicResolver{}}
				if err := lax.CheckIP(ip); err != nil {
					t.Errorf("with --allow-private-targets: %v", err)
				}
				if err := lax.CheckURLStatic(url); err != nil {
					t.Errorf("with --allow-private-targets: %v", err)
				}
			})
		}
	}
}

// dialNowhere runs p.DialContext with a dialer that refuses to connect,
// and fails the test if a connect was attempted.
func dialNowhere(t *testing.T, p *Policy, addr string) error {
	t.Helper()
	q := *p
	q.Dialer = &net.Dialer{ControlContext: func(_ context.Context, _, address string, _ syscall.RawConn) error {
		t.Errorf("dialed %s", address)
		return errors.New("no network in tests")
	}}
	_, err := q.DialContext(context.Background(), "tcp", addr)
	return err
}
