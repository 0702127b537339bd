package tests

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
)

// Issue 13.5: with a certificate, the embedded NATS server and the gateway
// take TLS only. A client that trusts the CA connects and publishes; a
// plain connection is refused; a client that does not trust the CA fails
// verification; a second process joins over TLS with --nats-ca.
func TestTLSNATSAndGateway(t *testing.T) {
	t.Parallel()
	ca := natsxtest.NewCA(t)
	p := startPipeline(t, "", withGateway(), func(c *app.Config) {
		c.Server.TLSCert, c.Server.TLSKey = ca.Cert, ca.Key
		c.HTTPCert, c.HTTPKey = ca.Cert, ca.Key
	})
	url := p.ClientURL()

	nc, err := nats.Connect(url, nats.UserInfo("acme", acmeKey), nats.RootCAs(ca.CA), nats.CustomInboxPrefix(natsauth.InboxPrefix("acme")))
	if err != nil {
		t.Fatalf("TLS client trusting the CA: %v", err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Error("the connection is not TLS")
	}
	if st, err := nc.TLSConnectionState(); err != nil || !st.HandshakeComplete {
		t.Errorf("TLS state: %+v %v", st, err)
	}

	if _, err := nats.Connect(url, nats.UserInfo("acme", acmeKey)); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client that does not trust the CA: %v", err)
	}
	// A plain connection: the server asks for TLS in its INFO and refuses
	// a CONNECT in clear text.
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "tls://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	info, _ := r.ReadString('\n')
	if !strings.Contains(info, `"tls_required":true`) {
		t.Errorf("INFO does not require TLS: %s", info)
	}
	_, _ = conn.Write([]byte("CONNECT {\"user\":\"acme\",\"pass\":\"" + acmeKey + "\"}\r\nPING\r\n"))
	if line, _ := r.ReadString('\n'); strings.HasPrefix(line, "PONG") || strings.HasPrefix(line, "+OK") {
		t.Errorf("a plain connection was served: %q", line)
	}

	// A replica over TLS, verifying the server with --nats-ca.
	cfg := baseConfig(t)
	cfg.NATSURL, cfg.NATSCA, cfg.NATSAuth, cfg.Services = url, ca.CA, p.auth, []string{app.ServiceFanout}
	replica := start(t, cfg, "", nil)
	if _, err := replica.JS.Stream(context.Background(), natsx.StreamScanEvents); err != nil {
		t.Errorf("replica over TLS: %v", err)
	}

	// The gateway: HTTPS with the CA, nothing in clear text.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	resp, err := client.Get("https://" + p.HTTPAddr() + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("HTTPS /healthz: %d", resp.StatusCode)
	}
	if resp, err := http.Get("http://" + p.HTTPAddr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("the gateway answered in clear text")
		}
	}
}

// A certificate without its key (or the other way round) is refused at
// start, naming both flags.
func TestTLSNeedsCertAndKey(t *testing.T) {
	t.Parallel()
	ca := natsxtest.NewCA(t)
	cfg := baseConfig(t)
	cfg.Server = natsx.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0", TLSCert: ca.Cert}
	if _, err := app.Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "--nats-tls-cert and --nats-tls-key") {
		t.Errorf("cert without key: %v", err)
	}
}
