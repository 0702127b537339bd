package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/telemetry"
)

// globals are the flags every command shares.
type globals struct {
	logFormat    string
	logLevel     string
	natsURL      string
	allowPrivate bool
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "scanwire",
		Short: "Security-scanner events in, signed webhooks out",
		Long: `scanwire turns security-scanner events (CloudEvents on NATS JetStream) into
signed webhooks. Scanners publish scan.started, scan.finished, finding.high and
finding.medium events; scanwire matches them to subscriptions, applies per-scan
limits, and delivers signed webhooks with retries and a dead-letter queue.

Start here:
  scanwire demo                      the whole pipeline with a sample scanner and receiver
  scanwire run                       run the pipeline (embedded NATS under ./data)
  scanwire subs create --help        subscribe a webhook endpoint
  scanwire publish --help            publish an event as a scanner would`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.BoolVar(&g.allowPrivate, "allow-private-targets", false, "let subscriptions use http and reach loopback and private addresses (local development and tests only; link-local and cloud metadata stay blocked)")
	pf.StringVar(&g.natsURL, "nats", envOr("SCANWIRE_NATS", ""), "URL of an external NATS server (env SCANWIRE_NATS); client commands default to nats://127.0.0.1:4222")
	root.AddCommand(newRunCmd(g), newDemoCmd(g), newPublishCmd(g), newSubsCmd(g), newAttemptsCmd(g), newDLQCmd(g), newScansCmd(g), newTenantsCmd(g))
	root.AddCommand(newRejectedCmd(g))
	return root
}

// logger builds the process logger from the flags.
func (g *globals) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(telemetry.LogHandler(slog.NewTextHandler(w, opts))), nil
	case "json":
		return slog.New(telemetry.LogHandler(slog.NewJSONHandler(w, opts))), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", g.logFormat)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
