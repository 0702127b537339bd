package egress

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Embedded forms used below: 169.254.169.254 is a9fe:a9fe, 127.0.0.1 is
// 7f00:1, 10.0.0.1 is a00:1, 8.8.8.8 is 808:808. Teredo inverts the
// client: 169.254.169.254 is 5601:5601, 127.0.0.1 is 80ff:fffe, 10.0.0.1
// is f5ff:fffe, 8.8.8.8 is f7f7:f7f7 (server 65.54.227.120, 4136:e378).
func TestCheckIP(t *testing.T) {
	tests := []struct {
		name, ip          string
		blocked, withFlag bool   // blocked without / with --allow-private-targets
		want              string // part of the error without the flag
	}{
		{"public v4", "8.8.8.8", false, false, ""},
		{"public v4 cloudflare", "1.1.1.1", false, false, ""},
		{"public v6", "2606:4700:4700::1111", false, false, ""},
		{"public mapped", "::ffff:8.8.8.8", false, false, ""},
		{"public nat64", "64:ff9b::808:808", false, false, ""},
		{"public 6to4", "2002:808:808::1", false, false, ""},
		{"public teredo", "2001:0:4136:e378:8000:63bf:f7f7:f7f7", false, false, ""},
		{"below link-local", "169.253.255.255", false, false, ""},
		{"above CGNAT", "100.128.0.0", false, false, ""},
		{"above 172.16/12", "172.32.0.1", false, false, ""},

		{"metadata", "169.254.169.254", true, true, "169.254.169.254 is a link-local address (cloud metadata)"},
		{"ECS task metadata", "169.254.170.2", true, true, "ECS"},
		{"link-local v4", "169.254.1.1", true, true, "link-local address (169.254.0.0/16)"},
		{"link-local v6", "fe80::1", true, true, "link-local address (fe80::/10)"},
		{"link-local v6 with zone", "fe80::1%eth0", true, true, "link-local"},
		{"AWS metadata v6", "fd00:ec2::254", true, true, "cloud metadata (AWS"},
		{"AWS DNS v6", "fd00:ec2::253", true, true, "AWS instance service"},
		{"GCP metadata v6", "fd20:ce::254", true, true, "cloud metadata (GCP"},
		{"Alibaba metadata", "100.100.100.200", true, true, "Alibaba"},
		{"Azure wire server", "168.63.129.16", true, true, "Azure wire server"},
		{"Oracle metadata", "192.0.0.192", true, true, "Oracle"},
		{"unspecified v4", "0.0.0.0", true, true, "unspecified"},
		{"this network", "0.1.2.3", true, true, "unspecified address (0.0.0.0/8)"},
		{"unspecified v6", "::", true, true, "unspecified"},
		{"multicast v4", "224.0.0.1", true, true, "multicast"},
		{"multicast v4 top", "239.255.255.255", true, true, "multicast"},
		{"multicast v6", "ff02::1", true, true, "multicast"},
		{"broadcast", "255.255.255.255", true, true, "broadcast"},

		{"metadata mapped", "::ffff:169.254.169.254", true, true, "::ffff:169.254.169.254 embeds 169.254.169.254, a link-local address (cloud metadata)"},
		{"metadata mapped hex", "::ffff:a9fe:a9fe", true, true, "cloud metadata"},
		{"metadata compatible", "::a9fe:a9fe", true, true, "cloud metadata"},
		{"metadata SIIT", "::ffff:0:a9fe:a9fe", true, true, "cloud metadata"},
		{"metadata nat64", "64:ff9b::a9fe:a9fe", true, true, "cloud metadata"},
		{"metadata nat64 local", "64:ff9b:1::a9fe:a9fe", true, true, "cloud metadata"},
		{"metadata 6to4", "2002:a9fe:a9fe::1", true, true, "cloud metadata"},
		{"metadata teredo", "2001:0:4136:e378:8000:63bf:5601:5601", true, true, "cloud metadata"},
		{"unspecified compatible", "::0.0.0.2", true, true, "unspecified"},
		{"broadcast mapped", "::ffff:255.255.255.255", true, true, "broadcast"},

		{"loopback", "127.0.0.1", true, false, "127.0.0.1 is a loopback address (127.0.0.0/8)"},
		{"loopback other", "127.8.9.10", true, false, "loopback"},
		{"loopback v6", "::1", true, false, "loopback address (::1/128)"},
		{"rfc1918 10", "10.0.0.1", true, false, "private address (10.0.0.0/8)"},
		{"rfc1918 172", "172.16.5.4", true, false, "private address (172.16.0.0/12)"},
		{"rfc1918 172 top", "172.31.255.255", true, false, "private"},
		{"rfc1918 192", "192.168.1.1", true, false, "private address (192.168.0.0/16)"},
		{"cgnat", "100.64.0.1", true, false, "carrier-grade NAT"},
		{"unique local", "fc00::1", true, false, "unique local"},
		{"unique local fd", "fd12:3456::1", true, false, "unique local"},
		{"site-local", "fec0::1", true, false, "site-local"},
		{"ietf assignments", "192.0.0.8", true, false, "IETF protocol"},
		{"test-net-1", "192.0.2.1", true, false, "documentation"},
		{"test-net-2", "198.51.100.7", true, false, "documentation"},
		{"test-net-3", "203.0.113.9", true, false, "documentation"},
		{"documentation v6", "2001:db8::1", true, false, "documentation"},
		{"documentation v6 3fff", "3fff::1", true, false, "documentation"},
		{"benchmarking", "198.19.0.1", true, false, "benchmarking"},
		{"benchmarking v6", "2001:2::1", true, false, "benchmarking"},
		{"class E", "240.0.0.1", true, false, "reserved"},
		{"discard-only v6", "100::1", true, false, "discard-only"},
		{"unassigned v6", "4000::1", true, false, "outside 2000::/3"},

		{"loopback mapped", "::ffff:127.0.0.1", true, false, "embeds 127.0.0.1, a loopback address"},
		{"loopback compatible", "::7f00:1", true, false, "loopback"},
		{"loopback nat64", "64:ff9b::7f00:1", true, false, "loopback"},
		{"loopback nat64 local", "64:ff9b:1::7f00:1", true, false, "loopback"},
		{"loopback 6to4", "2002:7f00:1::", true, false, "loopback"},
		{"loopback teredo", "2001:0:4136:e378:8000:63bf:80ff:fffe", true, false, "loopback"},
		{"private mapped", "::ffff:10.0.0.1", true, false, "private"},
		{"private compatible", "::a00:1", true, false, "private"},
		{"private nat64", "64:ff9b::a00:1", true, false, "private"},
		{"private 6to4", "2002:a00:1::1", true, false, "private"},
		{"private teredo", "2001:0:4136:e378:8000:63bf:f5ff:fffe", true, false, "private"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			err := (&Policy{}).CheckIP(ip)
			if (err != nil) != tt.blocked {
				t.Fatalf("blocked=%v, want %v (%v)", err != nil, tt.blocked, err)
			}
			if err != nil {
				checkBlocked(t, err)
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%v, want it to contain %q", err, tt.want)
				}
			}
			err = (&Policy{AllowPrivate: true}).CheckIP(ip)
			if (err != nil) != tt.withFlag {
				t.Errorf("with --allow-private-targets: blocked=%v, want %v (%v)", err != nil, tt.withFlag, err)
			}
			if err != nil {
				checkBlocked(t, err)
			}
		})
	}
	if err := (&Policy{AllowPrivate: true}).CheckIP(netip.Addr{}); !errors.Is(err, ErrBlocked) {
		t.Errorf("the zero address: %v, want blocked", err)
	}
}

// checkBlocked asserts what the delivery service relies on to dead-letter
// a blocked delivery with the reason "egress blocked".
func checkBlocked(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrBlocked) || !strings.HasPrefix(err.Error(), "egress blocked: ") {
		t.Errorf("%q does not wrap ErrBlocked or lacks the prefix", err)
	}
}

// fakeResolver answers from a table, so no test depends on real DNS.
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := f[host]
	switch {
	case host == "flaky.example.com":
		return nil, &net.DNSError{Err: "server misbehaving", Name: host, IsTemporary: true}
	case !ok:
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = netip.MustParseAddr(a)
	}
	return out, nil
}

var testResolver = fakeResolver{
	"hooks.example.com":    {"93.184.216.34"},
	"rebind.example.com":   {"127.0.0.1", "169.254.169.254"},
	"metadata.example.com": {"169.254.169.254"},
	"loopback.example.com": {"127.0.0.1"},
	"mixed.example.com":    {"10.0.0.1", "8.8.8.8"},
	"0x1g.com":             {"93.184.216.34"},
	"exa_mple.com":         {"93.184.216.34"},
	"intranet":             {"10.1.2.3"},
	"localhost":            {"127.0.0.1"},
}

// hostile is judged without --allow-private-targets.
var hostile = []struct {
	url     string
	want    string // part of CheckURL's error; "" means accepted
	blocked bool   // the error wraps ErrBlocked
	dns     bool   // decided by the resolver: CheckURLStatic accepts it
}{
	{"https://hooks.example.com/scanwire", "", false, false},
	{"https://hooks.example.com:8443/x", "", false, false},
	{"https://hooks.example.com:22/x", "", false, false},
	{"https://HOOKS.Example.COM./x", "", false, false},
	{"https://hooks.example.com/x?a=b#frag", "", false, false},
	{"https://8.8.8.8/x", "", false, false},
	{"https://[2606:4700:4700::1111]/x", "", false, false},
	{"https://0x1g.com/", "", false, false},
	{"https://exa_mple.com/", "", false, false},
	{"https://mixed.example.com/", "", false, true},

	{"http://hooks.example.com/x", "must use https (http only with scanwire run --allow-private-targets", false, false},
	{"http://10.0.0.1/x", "must use https", false, false},
	{"file:///etc/passwd", "must use https", false, false},
	{"gopher://example.com:70/_GET", "must use https", false, false},
	{"ftp://x", "must use https", false, false},
	{"javascript:alert(1)", "must use https", false, false},
	{"#@169.254.169.254", "must use https", false, false},
	{"//hooks.example.com/x", "must use https", false, false},
	{"", "must use https", false, false},
	{"https:hooks.example.com", "absolute URL with a host", false, false},
	{"https:///nohost", "absolute URL with a host", false, false},
	{"https://:443/", "must name a host", false, false},
	{"https://./", "must name a host", false, false},
	{"https://example.com:0/", "port must be 1-65535", false, false},
	{"https://example.com:99999/", "port must be 1-65535", false, false},
	{"https://example.com@169.254.169.254/", "user or password (its host is 169.254.169.254)", false, false},
	{"https://user:pass@example.com/", "user or password", false, false},
	{"https://@example.com/", "user or password", false, false},
	{"https://example.com\\@10.0.0.1/", "not a valid URL", false, false},
	{"https://1.2.3.4.5/", "looks like an IPv4 address", false, false},
	{"https://256.1.1.1/", "looks like an IPv4 address", false, false},
	{"https://08.1.1.1/", "looks like an IPv4 address", false, false},
	{"https://4294967296/", "looks like an IPv4 address", false, false},
	{"https://0x1g/", "looks like an IPv4 address", false, false},
	{"https://example.123/", "looks like an IPv4 address", false, false},
	{"https://127.0.0.1;/", "looks like an IPv4 address", false, false},
	{"https://hooks.example.com;/", "not a valid DNS name", false, false},
	{"https://a..example.com/", "not a valid DNS name", false, false},
	{"https://x%25y.example.com/", "not a valid DNS name", false, false},
	{"https://１２７.０.０.１/", "must be ASCII", false, false},
	{"https://[2606:4700:4700::1111%25eth0]/", "zone", false, false},
	{"https://[v1.x]/", "not a valid URL", false, false},
	{"https://[127.0.0.1]/", "not a valid URL", false, false},

	{"https://169.254.169.254/latest/meta-data", "is a link-local address (cloud metadata)", true, false},
	{"https://169.254.169.254#@example.com/", "cloud metadata", true, false},
	{"https://169.254.169.254./", "cloud metadata", true, false},
	{"https://2852039166/", "is 169.254.169.254, a link-local address (cloud metadata)", true, false},
	{"https://0251.0376.0251.0376/", "cloud metadata", true, false},
	{"https://0xA9FEA9FE/", "cloud metadata", true, false},
	{"https://0xa9.0xfe.0xa9.0xfe/", "cloud metadata", true, false},
	{"https://0xa9.254.0251.0xfe/", "cloud metadata", true, false},
	{"https://169.254.43518/", "cloud metadata", true, false},
	{"https://169.16689662/", "cloud metadata", true, false},
	{"https://[::ffff:169.254.169.254]/", "embeds 169.254.169.254, a link-local address (cloud metadata)", true, false},
	{"https://[::ffff:a9fe:a9fe]/", "is ::ffff:169.254.169.254, which embeds 169.254.169.254", true, false},
	{"https://[64:ff9b::a9fe:a9fe]/", "cloud metadata", true, false},
	{"https://[2002:a9fe:a9fe::]/", "cloud metadata", true, false},
	{"https://[fd00:ec2::254]/", "cloud metadata", true, false},
	{"https://100.100.100.200/", "Alibaba", true, false},
	{"https://168.63.129.16/", "Azure wire server", true, false},
	{"https://metadata.google.internal/computeMetadata/v1/", "GCP metadata", true, false},
	{"https://[fe80::1%25eth0]/", "link-local", true, false},
	{"https://0.0.0.0/", "unspecified", true, false},
	{"https://0/", "unspecified", true, false},
	{"https://0x/", "unspecified", true, false},
	{"https://224.0.0.1/", "multicast", true, false},
	{"https://255.255.255.255/", "broadcast", true, false},
	{"https://127.0.0.1/", "loopback", true, false},
	{"https://127.1/", "loopback", true, false},
	{"https://2130706433/", "loopback", true, false},
	{"https://017700000001/", "loopback", true, false},
	{"https://0x7f.1/", "loopback", true, false},
	{"https://[::1]/", "loopback", true, false},
	{"https://[::ffff:127.0.0.1]:8443/", "loopback", true, false},
	{"https://localhost/", "loopback name", true, false},
	{"https://localhost./", "loopback name", true, false},
	{"https://LOCALHOST/", "loopback name", true, false},
	{"https://api.localhost/", "loopback name", true, false},
	{"https://intranet/", "without a domain", true, false},
	{"https://10.0.0.1/", "private address (10.0.0.0/8)", true, false},
	{"https://10.1/", "private", true, false},
	{"https://172.16.0.1/", "private", true, false},
	{"https://192.168.0.1/", "private", true, false},
	{"https://100.64.0.1/", "carrier-grade NAT", true, false},
	{"https://198.51.100.7/", "documentation", true, false},
	{"https://[fc00::1]/", "unique local", true, false},

	{"https://rebind.example.com/", "rebind.example.com resolves only to blocked addresses: 127.0.0.1 is a loopback address (127.0.0.0/8), and 169.254.169.254 is a link-local address (cloud metadata)", true, true},
	{"https://loopback.example.com/", "resolves only to blocked addresses", true, true},
	{"https://metadata.example.com/", "cloud metadata", true, true},
	{"https://nxdomain.example.com/", "host nxdomain.example.com does not resolve", false, true},
	{"https://flaky.example.com/", "could not be resolved now", false, true},
}

func TestCheckURLStatic(t *testing.T) {
	p := &Policy{Resolver: panicResolver{}}
	for _, tt := range hostile {
		t.Run(tt.url, func(t *testing.T) {
			want := tt.want
			if tt.dns {
				want = ""
			}
			checkURLError(t, p.CheckURLStatic(tt.url), want, tt.blocked)
		})
	}
}

func TestCheckURL(t *testing.T) {
	p := &Policy{Resolver: testResolver}
	for _, tt := range hostile {
		t.Run(tt.url, func(t *testing.T) {
			checkURLError(t, p.CheckURL(context.Background(), tt.url), tt.want, tt.blocked)
		})
	}
}

func checkURLError(t *testing.T, err error, want string, blocked bool) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("refused: %v", err)
	case want == "":
		return
	case err == nil || !strings.Contains(err.Error(), want):
		t.Fatalf("error %v, want one containing %q", err, want)
	case blocked:
		checkBlocked(t, err)
	case errors.Is(err, ErrBlocked):
		t.Errorf("%v wraps ErrBlocked, but the URL is invalid rather than blocked", err)
	}
}

// panicResolver proves CheckURLStatic does no DNS.
type panicResolver struct{}

func (panicResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	panic("CheckURLStatic resolved a name")
}

// The messages are shown to whoever wrote the URL: they quote it, say what
// the address is, and name the fix.
func TestMessages(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"ip", (&Policy{}).CheckIP(netip.MustParseAddr("169.254.169.254")),
			"egress blocked: 169.254.169.254 is a link-local address (cloud metadata); no webhook may reach it, with or without --allow-private-targets"},
		{"private url", (&Policy{}).CheckURLStatic("https://10.0.0.1/x"),
			`egress blocked: "https://10.0.0.1/x" is a private address (10.0.0.0/8); subscriptions must reach the public internet (scanwire run --allow-private-targets allows it for local development)`},
		{"decimal url", (&Policy{}).CheckURLStatic("https://2852039166/"),
			`egress blocked: "https://2852039166/" is 169.254.169.254, a link-local address (cloud metadata); no webhook may reach it, with or without --allow-private-targets`},
		{"scheme", (&Policy{}).CheckURLStatic("ftp://x"), `"ftp://x" must use https`},
		{"resolved", (&Policy{Resolver: testResolver}).CheckURL(context.Background(), "https://loopback.example.com/"),
			`egress blocked: "https://loopback.example.com/": loopback.example.com resolves only to blocked addresses: 127.0.0.1 is a loopback address (127.0.0.0/8); subscriptions must reach the public internet (scanwire run --allow-private-targets allows it for local development)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil || tt.err.Error() != tt.want {
				t.Errorf("got  %v\nwant %s", tt.err, tt.want)
			}
		})
	}
}

func TestAllowPrivateTargets(t *testing.T) {
	p := &Policy{AllowPrivate: true, Resolver: testResolver}
	tests := []struct {
		url, want string // want: part of the error; "" means accepted
		blocked   bool
	}{
		{"http://127.0.0.1:8080/x", "", false},
		{"http://localhost/x", "", false},
		{"http://localhost.:8080/x", "", false},
		{"https://10.0.0.1/", "", false},
		{"http://[::1]:9/", "", false},
		{"http://intranet/hook", "", false},
		{"https://198.51.100.7/", "", false},
		{"http://2130706433/", "", false},
		{"https://loopback.example.com/", "", false},
		{"http://169.254.169.254/", "cloud metadata", true},
		{"http://2852039166/", "cloud metadata", true},
		{"http://[::ffff:169.254.169.254]/", "cloud metadata", true},
		{"http://[64:ff9b::a9fe:a9fe]/", "cloud metadata", true},
		{"http://[fe80::1]/", "link-local", true},
		{"http://0.0.0.0/", "unspecified", true},
		{"https://metadata.google.internal/", "GCP metadata", true},
		{"https://metadata.example.com/", "cloud metadata", true},
		{"https://rebind.example.com/", "", false},
		{"ftp://x", "must use https", false},
		{"http://user@127.0.0.1/", "user or password", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			checkURLError(t, p.CheckURL(context.Background(), tt.url), tt.want, tt.blocked)
		})
	}
}

func TestControlFailsClosed(t *testing.T) {
	tests := []struct {
		name, addr        string
		blocked, withFlag bool
	}{
		{"metadata", "169.254.169.254:80", true, true},
		{"garbage", "garbage", true, true},
		{"empty", "", true, true},
		{"unix socket", "/var/run/docker.sock", true, true},
		{"no port", "8.8.8.8", true, true},
		{"mapped metadata", "[::ffff:169.254.169.254]:80", true, true},
		{"link-local with zone", "[fe80::1%eth0]:80", true, true},
		{"loopback", "127.0.0.1:80", true, false},
		{"loopback v6", "[::1]:443", true, false},
		{"public", "8.8.8.8:443", false, false},
		{"public v6", "[2606:4700:4700::1111]:443", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&Policy{}).Control("tcp", tt.addr, nil)
			if (err != nil) != tt.blocked {
				t.Fatalf("Control(%q) = %v, want blocked=%v", tt.addr, err, tt.blocked)
			}
			if err != nil {
				checkBlocked(t, err)
			}
			if err := (&Policy{AllowPrivate: true}).Control("tcp", tt.addr, nil); (err != nil) != tt.withFlag {
				t.Errorf("with the flag: Control(%q) = %v, want blocked=%v", tt.addr, err, tt.withFlag)
			}
		})
	}
}

// The policy's check runs ahead of a caller's own hook, and a caller's
// ControlContext (which makes net.Dialer ignore Control) cannot switch it
// off.
func TestDialerKeepsTheCheckAheadOfTheCallersHook(t *testing.T) {
	var calls atomic.Int32
	tests := []struct {
		name      string
		dialer    *net.Dialer
		wantCalls int32 // of the caller's hook, for one blocked and one allowed address
	}{
		{"ControlContext", &net.Dialer{ControlContext: func(context.Context, string, string, syscall.RawConn) error { calls.Add(1); return nil }}, 1},
		{"Control", &net.Dialer{Control: func(string, string, syscall.RawConn) error { calls.Add(1); return nil }}, 1},
		{"no hook", &net.Dialer{}, 0},
		{"default dialer", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls.Store(0)
			d := (&Policy{Dialer: tt.dialer}).dialer()
			if d.Control != nil || d.ControlContext == nil {
				t.Fatal("the policy's hook is not the dialer's ControlContext")
			}
			if err := d.ControlContext(context.Background(), "tcp4", "169.254.169.254:80", nil); !errors.Is(err, ErrBlocked) {
				t.Errorf("metadata: %v", err)
			}
			if err := d.ControlContext(context.Background(), "tcp4", "8.8.8.8:443", nil); err != nil {
				t.Errorf("public: %v", err)
			}
			if calls.Load() != tt.wantCalls {
				t.Errorf("the caller's hook ran %d times, want %d", calls.Load(), tt.wantCalls)
			}
		})
	}
	if d := (&Policy{}).dialer(); d.Timeout != 10*time.Second || d.KeepAlive != 30*time.Second {
		t.Errorf("default dialer: timeout %s, keep-alive %s", d.Timeout, d.KeepAlive)
	}
}

// A name that answers a public address first and 127.0.0.1 second (DNS
// rebinding, or a split-horizon leak) never gets a request to the local
// receiver; with --allow-private-targets the same dial reaches it.
//
// There is no network here, and a test must not depend on one: the
// dialer's own ControlContext refuses every non-loopback connect, so the
// public address fails at once and deterministically, as an unreachable
// receiver would.
func TestDialContext(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	port := strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port)

	tests := []struct {
		name         string
		allowPrivate bool
		host         string
		answers      []string
		want         string // part of the error; "" means delivered
		blocked      bool
		dialed       []string // addresses that reached connect(2)
	}{
		{"public then loopback", false, "rebind.test", []string{"8.8.8.8", "127.0.0.1"},
			"blocked addresses skipped: 127.0.0.1 is a loopback address", false, []string{"8.8.8.8"}},
		{"loopback then public", false, "rebind.test", []string{"127.0.0.1", "8.8.8.8"},
			"blocked addresses skipped: 127.0.0.1", false, []string{"8.8.8.8"}},
		{"only blocked", false, "rebind.test", []string{"169.254.169.254", "127.0.0.1"},
			"egress blocked: rebind.test resolves only to blocked addresses: 169.254.169.254 is a link-local address (cloud metadata), and 127.0.0.1", true, nil},
		{"mapped loopback", false, "rebind.test", []string{"::ffff:127.0.0.1"}, "embeds 127.0.0.1", true, nil},
		{"IP literal", false, "127.0.0.1", nil, "egress blocked: 127.0.0.1 is a loopback address", true, nil},
		{"decimal IP literal", false, "2130706433", nil, "egress blocked: 2130706433 is 127.0.0.1, a loopback address", true, nil},
		{"not a valid address", false, "1.2.3.4.5", nil, "looks like an IPv4 address", true, nil},
		{"does not resolve", false, "nxdomain.test", nil, "no such host", false, nil},

		{"with the flag, public then loopback", true, "rebind.test", []string{"8.8.8.8", "127.0.0.1"}, "", false, []string{"8.8.8.8", "127.0.0.1"}},
		{"with the flag, metadata then loopback", true, "rebind.test", []string{"169.254.169.254", "127.0.0.1"}, "", false, []string{"127.0.0.1"}},
		{"with the flag, decimal IP literal", true, "2130706433", nil, "", false, []string{"127.0.0.1"}},
		{"with the flag, only metadata", true, "rebind.test", []string{"169.254.169.254"}, "egress blocked", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits.Store(0)
			var mu sync.Mutex
			var dialed []string
			noNetwork := func(_ context.Context, _, address string, _ syscall.RawConn) error {
				ap := netip.MustParseAddrPort(address)
				mu.Lock()
				dialed = append(dialed, ap.Addr().String())
				mu.Unlock()
				if !ap.Addr().IsLoopback() {
					return errors.New("no network in tests")
				}
				return nil
			}
			res := fakeResolver{}
			if tt.answers != nil {
				res[tt.host] = tt.answers
			}
			p := &Policy{AllowPrivate: tt.allowPrivate, Resolver: res, Dialer: &net.Dialer{Timeout: 200 * time.Millisecond, ControlContext: noNetwork}}
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: p.DialContext, DisableKeepAlives: true}}
			resp, err := client.Post("http://"+net.JoinHostPort(tt.host, port)+"/hook", "application/json", nil)
			if resp != nil {
				resp.Body.Close()
			}
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // as the delivery service reads it
			}
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("not delivered: %v", err)
			case tt.want == "" && hits.Load() != 1:
				t.Fatalf("%d requests reached the receiver, want 1", hits.Load())
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			case tt.want != "" && hits.Load() != 0:
				t.Fatalf("%d requests reached the receiver", hits.Load())
			case tt.blocked:
				checkBlocked(t, err)
			case err != nil && errors.Is(err, ErrBlocked):
				t.Errorf("%v wraps ErrBlocked, but an allowed address could be retried", err)
			}
			if !slices.Equal(dialed, tt.dialed) {
				t.Errorf("dialed %v, want %v", dialed, tt.dialed)
			}
		})
	}
}

// A refusal in the Control hook, at connect time, comes back as the
// blocked error itself, not inside net's "dial tcp ...: " wrapping: the
// dead letter's reason must start with "egress blocked".
func TestDialContextReportsARefusalAtConnectTime(t *testing.T) {
	refuse := func(context.Context, string, string, syscall.RawConn) error {
		return blocked("refused at connect time")
	}
	p := &Policy{Resolver: fakeResolver{"hooks.test": {"8.8.8.8"}}, Dialer: &net.Dialer{ControlContext: refuse}}
	_, err := p.DialContext(context.Background(), "tcp", "hooks.test:443")
	checkBlocked(t, err)
}

func TestDialContextRefusesOtherNetworks(t *testing.T) {
	for _, network := range []string{"unix", "udp", "ip4:icmp"} {
		t.Run(network, func(t *testing.T) {
			_, err := (&Policy{AllowPrivate: true}).DialContext(context.Background(), network, "127.0.0.1:53")
			checkBlocked(t, err)
		})
	}
}
