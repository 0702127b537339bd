package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

// tableResolver stands in for DNS.
type tableResolver map[string]string

func (r tableResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// POST /v1/events judges a scan.started's callback_url with the
// pipeline's egress policy, as fan-out does, and refuses it with 422
// naming data/callback_url; without a policy it leaves it to fan-out.
func TestPublishEventChecksCallbackURL(t *testing.T) {
	t.Parallel()
	js := natsxtest.JetStream(t)
	const key = "acme-key-0123456789"
	policy := &egress.Policy{Resolver: tableResolver{"hooks.example.com": "93.184.216.34", "internal.example.com": "10.1.2.3"}}
	cfg := Config{Keys: Keys{Tenants: map[string]string{"acme": key}}}
	strict := httptest.NewServer(New(js, Deps{Egress: policy}, slog.New(slog.DiscardHandler), cfg))
	t.Cleanup(strict.Close)
	unchecked := httptest.NewServer(New(js, Deps{}, slog.New(slog.DiscardHandler), cfg))
	t.Cleanup(unchecked.Close)

	post := func(base, id, typ, data string) (int, apiError) {
		body := `{"specversion":"1.0","id":"` + id + `","source":"//s","type":"` + typ + `","subject":"s1","tenant":"acme","datacontenttype":"application/json","data":` + data + `}`
		req, _ := http.NewRequest("POST", base+"/v1/events", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/cloudevents+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e apiError
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	tests := []struct {
		name, url string
		want      string // part of the error; "" means 202
	}{
		{"public", "https://hooks.example.com/cb", ""},
		{"does not resolve", "https://nxdomain.example.com/cb", ""},
		{"SIIT loopback", "https://[::ffff:0:7f00:1]/cb", "embeds 127.0.0.1, a loopback address"},
		{"http loopback", "http://127.0.0.1/cb", "must use https"},
		{"metadata", "https://169.254.169.254/latest", "cloud metadata"},
		{"resolves only to a private address", "https://internal.example.com/cb", "internal.example.com resolves only to blocked addresses: 10.1.2.3 is a private address (10.0.0.0/8)"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := `{"scan_id":"s1","target":"t","callback_url":"` + tt.url + `"}`
			code, e := post(strict.URL, "checked-"+strconv.Itoa(i), "scan.started", data)
			switch {
			case tt.want == "" && code != 202:
				t.Fatalf("%d %+v, want 202", code, e)
			case tt.want != "" && (code != 422 || e.Field != "data/callback_url" || !strings.HasPrefix(e.Error, "invalid event: data/callback_url: ") || !strings.Contains(e.Error, tt.want)):
				t.Fatalf("%d %+v, want 422 on data/callback_url containing %q", code, e, tt.want)
			}
			if code, e := post(unchecked.URL, "unchecked-"+strconv.Itoa(i), "scan.started", data); code != 202 {
				t.Errorf("without a policy: %d %+v, want 202", code, e)
			}
		})
	}
	// Schema problems come first, as in fan-out: the callback is judged
	// only on an otherwise valid event.
	if code, e := post(strict.URL, "bad", "scan.started", `{"target":"t","callback_url":"http://127.0.0.1/cb"}`); code != 422 || e.Field == "data/callback_url" {
		t.Errorf("invalid event with a refused callback: %d %+v", code, e)
	}
}
