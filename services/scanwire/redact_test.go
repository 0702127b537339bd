package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/services/gateway"
)

// natsPassword is the password of the NATS URLs below: the admin key of
// the pipelines they reach (keyed), so that the server lets them in; a
// server without auth (natsxtest.Server) takes any.
const natsPassword = "Zq9xW7vK2pLm4RtY"

// keyed is a process whose NATS takes natsPassword as the operator's.
var keyed = app.Config{Gateway: gateway.Config{Keys: gateway.Keys{Admin: natsPassword}}}

// withCredentials puts the operator's user and natsPassword into a
// nats:// URL.
func withCredentials(url string) string {
	return strings.Replace(url, "nats://", "nats://admin:"+natsPassword+"@", 1)
}

// passwordRun returns a run of three characters of natsPassword that text
// holds, or "".
func passwordRun(text string) string {
	for i := 0; i+3 <= len(natsPassword); i++ {
		if strings.Contains(text, natsPassword[i:i+3]) {
			return natsPassword[i : i+3]
		}
	}
	return ""
}

// Every NATS URL scanwire prints, in an error, a warning or a log line,
// is printed without its user and password (issue 11.8).
func TestNATSURLCredentialsNotPrinted(t *testing.T) {
	t.Parallel()
	bare := withCredentials(natsxtest.Server(t).ClientURL()) // no buckets
	noPipeline := withCredentials(startApp(t, keyed).ClientURL())
	callback := `{"scan_id":"s1","target":"t","callback_url":"https://93.184.216.34/cb"}`
	tests := []struct {
		name string
		args []string
		want string // what the output or the error must say
	}{
		{"unreachable", []string{"subs", "list", "--nats", withCredentials("nats://127.0.0.1:1")}, "connect to nats nats://REDACTED@127.0.0.1:1"},
		{"not a URL", []string{"subs", "list", "--nats", "nats://scanwire:" + natsPassword[:4] + "/" + natsPassword[4:] + "@127.0.0.1:1"},
			"connect to nats nats://REDACTED@127.0.0.1:1"},
		{"a token", []string{"attempts", "--subscription", "sub_x", "--nats", "nats://" + natsPassword + "@127.0.0.1:1"}, "nats://REDACTED@127.0.0.1:1"},
		{"a list of servers", []string{"subs", "list", "--nats", withCredentials("nats://127.0.0.1:1") + "," + withCredentials("nats://127.0.0.1:2")},
			"nats://REDACTED@127.0.0.1:1,nats://REDACTED@127.0.0.1:2"},
		{"bucket not found", []string{"subs", "list", "--nats", bare}, "not found at nats://REDACTED@127.0.0.1:"},
		{"no pipeline", []string{"subs", "create", "--nats", noPipeline, "--tenant", "acme", "--url", "https://h.example.com/x", "--events", "scan.finished"},
			"answered at nats://REDACTED@127.0.0.1:"},
		{"publish's warning", []string{"publish", "--nats", noPipeline, "--tenant", "acme", "--type", "scan.started", "--scan", "s1", "--data", callback},
			"answered at nats://REDACTED@127.0.0.1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runCLI(t, context.Background(), tt.args...)
			if err != nil {
				out += "\n" + err.Error()
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("got %q, want it to say %q", out, tt.want)
			}
			if run := passwordRun(out); run != "" {
				t.Errorf("%q quotes %q of the password", out, run)
			}
		})
	}
}

// run logs the NATS URL it joined without its credentials.
func TestRunLogsNATSURLWithoutCredentials(t *testing.T) {
	t.Parallel()
	a := startApp(t, keyed)
	var log bytes.Buffer
	cfg := app.Config{NATSURL: withCredentials(a.ClientURL()), Topology: natsx.DefaultTopology(), Log: slog.New(slog.NewTextHandler(&log, nil))}
	if err := runUntilDone(context.Background(), cfg, func(context.Context, *app.App) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "nats=nats://REDACTED@127.0.0.1:") {
		t.Errorf("log %q names no NATS URL", log.String())
	}
	if run := passwordRun(log.String()); run != "" {
		t.Errorf("log %q quotes %q of the password", log.String(), run)
	}
}

// --help shows the default of --nats that SCANWIRE_NATS sets without its
// credentials.
func TestHelpShowsSCANWIRENATSWithoutCredentials(t *testing.T) {
	t.Setenv("SCANWIRE_NATS", withCredentials("nats://nats.example.com:4222"))
	out, err := runCLI(t, context.Background(), "subs", "list", "--help")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `nats://REDACTED@nats.example.com:4222`) {
		t.Errorf("help does not show the redacted default: %q", out)
	}
	if run := passwordRun(out); run != "" {
		t.Errorf("help quotes %q of the password", run)
	}
}
