package egress

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckIP(t *testing.T) {
	tests := []struct {
		ip                string
		blocked, withFlag bool // blocked without / with --allow-private-targets
	}{
		{"8.8.8.8", false, false},
		{"1.1.1.1", false, false},
		{"2606:4700:4700::1111", false, false},
		{"169.254.169.254", true, true},
		{"169.254.1.1", true, true},
		{"fe80::1", true, true},
		{"fd00:ec2::254", true, true},
		{"100.100.100.200", true, true},
		{"0.0.0.0", true, true},
		{"0.1.2.3", true, true},
		{"::", true, true},
		{"224.0.0.1", true, true},
		{"ff02::1", true, true},
		{"255.255.255.255", true, true},
		{"::ffff:169.254.169.254", true, true},
		{"64:ff9b::a9fe:a9fe", true, true},
		{"64:ff9b:1::a9fe:a9fe", true, true},
		{"2002:a9fe:a9fe::1", true, true},
		{"2001:0:4136:e378:8000:63bf:5601:5601", true, true}, // Teredo, client 169.254.169.254 ^ 0xffffffff... see below
		{"127.0.0.1", true, false},
		{"127.8.9.10", true, false},
		{"::1", true, false},
		{"10.0.0.1", true, false},
		{"172.16.5.4", true, false},
		{"192.168.1.1", true, false},
		{"100.64.0.1", true, false},
		{"fc00::1", true, false},
		{"fd12:3456::1", true, false},
		{"::ffff:127.0.0.1", true, false},
		{"::ffff:10.0.0.1", true, false},
		{"64:ff9b::7f00:1", true, false},
		{"2002:7f00:1::", true, false},
		{"192.0.2.1", true, false},
		{"::ffff:8.8.8.8", false, false},
		{"2002:808:808::1", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			if err := (&Policy{}).CheckIP(ip); (err != nil) != tt.blocked {
				t.Errorf("blocked=%v, want %v (%v)", err != nil, tt.blocked, err)
			} else if err != nil && !errors.Is(err, ErrBlocked) {
				t.Errorf("%v does not wrap ErrBlocked", err)
			}
			if err := (&Policy{AllowPrivate: true}).CheckIP(ip); (err != nil) != tt.withFlag {
				t.Errorf("with --allow-private-targets: blocked=%v, want %v (%v)", err != nil, tt.withFlag, err)
			}
		})
	}
}

func TestTeredoEmbedsTheInvertedClient(t *testing.T) {
	// Teredo carries the client IPv4 inverted in the last 32 bits:
	// 169.254.169.254 ^ 0xffffffff = 86.1.86.1 = 0x5601:5601.
	got, ok := embedded(netip.MustParseAddr("2001:0:4136:e378:8000:63bf:5601:5601"))
	if !ok || got != netip.MustParseAddr("169.254.169.254") {
		t.Errorf("embedded = %v %v", got, ok)
	}
}

// fakeResolver answers from a table, so no test depends on real DNS.
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := f[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		out[i] = netip.MustParseAddr(a)
	}
	return out, nil
}

var hostile = []struct {
	url, want string // want: part of the error; "" means accepted
}{
	{"https://hooks.example.com/scanwire", ""},
	{"https://hooks.example.com:8443/x", ""},
	{"https://hooks.example.com:22/x", ""},
	{"https://8.8.8.8/x", ""},
	{"http://hooks.example.com/x", "must use https"},
	{"https://169.254.169.254/latest/meta-data", "cloud metadata"},
	{"https://2852039166/", "cloud metadata"},
	{"https://0251.0376.0251.0376/", "cloud metadata"},
	{"https://0xA9FEA9FE/", "cloud metadata"},
	{"https://0xa9.0xfe.0xa9.0xfe/", "cloud metadata"},
	{"https://169.254.43518/", "cloud metadata"},
	{"https://[::ffff:169.254.169.254]/", "cloud metadata"},
	{"https://[::ffff:a9fe:a9fe]/", "cloud metadata"},
	{"https://[fd00:ec2::254]/", "cloud metadata"},
	{"https://[fe80::1%25eth0]/", "link-local"},
	{"https://0.0.0.0/", "unspecified"},
	{"https://0/", "unspecified"},
	{"https://127.0.0.1/", "loopback"},
	{"https://127.1/", "loopback"},
	{"https://2130706433/", "loopback"},
	{"https://017700000001/", "loopback"},
	{"https://[::1]/", "loopback"},
	{"https://localhost/", "loopback"},
	{"https://localhost./", "loopback"},
	{"https://LOCALHOST/", "loopback"},
	{"https://api.localhost/", "loopback"},
	{"https://10.0.0.1/", "private"},
	{"https://10.1/", "private"},
	{"https://192.168.0.1/", "private"},
	{"https://100.64.0.1/", "carrier-grade NAT"},
	{"https://example.com@169.254.169.254/", "user or password"},
	{"https://user:pass@example.com/", "user or password"},
	{"https://169.254.169.254#@example.com/", "cloud metadata"},
	{"https://example.com\\@10.0.0.1/", "not a URL"},
	{"file:///etc/passwd", "must use https"},
	{"gopher://example.com/", "must use https"},
	{"javascript:alert(1)", "must use https"},
	{"https:///nohost", "with a host"},
	{"https://example.com:0/", "port must be 1-65535"},
	{"https://example.com:99999/", "port must be 1-65535"},
	{"https://1.2.3.4.5/", "not a valid IPv4"},
	{"https://256.1.1.1/", "not a valid IPv4"},
	{"https://0x1g.com/", ""},
	{"https://rebind.example.com/", "every address of rebind.example.com is blocked"},
	{"https://mixed.example.com/", ""},
	{"https://nxdomain.example.com/", "does not resolve"},
}

func TestCheckURL(t *testing.T) {
	p := &Policy{Resolver: fakeResolver{
		"hooks.example.com":  {"93.184.216.34"},
		"rebind.example.com": {"127.0.0.1", "169.254.169.254"},
		"mixed.example.com":  {"10.0.0.1", "93.184.216.34"},
		"0x1g.com":           {"93.184.216.34"},
	}}
	for _, tt := range hostile {
		t.Run(tt.url, func(t *testing.T) {
			err := p.CheckURL(context.Background(), tt.url)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestAllowPrivateTargets(t *testing.T) {
	p := &Policy{AllowPrivate: true, Resolver: fakeResolver{"localhost": {"127.0.0.1"}}}
	for _, ok := range []string{"http://127.0.0.1:8080/x", "http://localhost/x", "https://10.0.0.1/", "http://[::1]:9/"} {
		if err := p.CheckURL(context.Background(), ok); err != nil {
			t.Errorf("%s refused with the flag: %v", ok, err)
		}
	}
	for _, bad := range []string{"http://169.254.169.254/", "http://[fe80::1]/", "http://0.0.0.0/", "http://[::ffff:169.254.169.254]/"} {
		if err := p.CheckURL(context.Background(), bad); err == nil || !errors.Is(err, ErrBlocked) {
			t.Errorf("%s accepted with the flag: %v", bad, err)
		}
	}
}

// A resolver that answers a public address first and 127.0.0.1 second:
// the loopback dial is refused and no request reaches the local receiver.
func TestDialRebindingToLoopbackIsBlocked(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	target := "http://rebind.test:" + strconv.Itoa(port) + "/hook"
	res := fakeResolver{"rebind.test": {"198.51.100.7", "127.0.0.1"}}

	client := func(p *Policy) *http.Client {
		return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: p.DialContext}}
	}
	// 198.51.100.7 is TEST-NET-2: blocked as reserved, so only loopback
	// is left, and it is blocked too.
	_, err := client(&Policy{Resolver: res}).Post(target, "application/json", nil)
	if err == nil || !errors.Is(err, ErrBlocked) {
		t.Fatalf("dial: %v, want ErrBlocked", err)
	}
	// A public first answer that cannot be reached (no network here) and
	// loopback second: still nothing reaches the receiver.
	res["rebind.test"] = []string{"93.184.216.34", "127.0.0.1"}
	_, err = client(&Policy{Resolver: res, Dialer: &net.Dialer{Timeout: 200 * time.Millisecond}}).Post(target, "application/json", nil)
	if err == nil {
		t.Fatal("a request went through")
	}
	if hits.Load() != 0 {
		t.Fatalf("%d requests reached the local receiver", hits.Load())
	}
	// With --allow-private-targets the same dial reaches it.
	if _, err := client(&Policy{AllowPrivate: true, Resolver: fakeResolver{"rebind.test": {"127.0.0.1"}}}).Post(target, "application/json", nil); err != nil {
		t.Fatalf("with the flag: %v", err)
	}
	if hits.Load() != 1 {
		t.Errorf("%d requests with the flag, want 1", hits.Load())
	}
}

func TestControlFailsClosed(t *testing.T) {
	p := &Policy{}
	for addr, blocked := range map[string]bool{"169.254.169.254:80": true, "garbage": true, "[::1]:443": true, "8.8.8.8:443": false} {
		if err := p.Control("tcp", addr, nil); (err != nil) != blocked {
			t.Errorf("Control(%s) = %v, want blocked=%v", addr, err, blocked)
		}
	}
}

// Whatever the string, CheckURLStatic does not panic, and what it accepts
// is an http(s) URL without userinfo whose IP literal, if any, is allowed.
func FuzzCheckURL(f *testing.F) {
	for _, h := range hostile {
		f.Add(h.url)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p := &Policy{}
		if p.CheckURLStatic(raw) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.User != nil || u.Host == "" {
			t.Fatalf("accepted %q", raw)
		}
		host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
		if ip, ok, _ := parseHostIP(host); ok && p.CheckIP(ip) != nil {
			t.Fatalf("accepted %q, whose address %s is blocked", raw, ip)
		}
		if ip, err := netip.ParseAddr(host); err == nil && p.CheckIP(ip) != nil {
			t.Fatalf("accepted %q, an IP literal that is blocked", raw)
		}
	})
}
