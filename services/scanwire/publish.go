package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/telemetry"
)

func newPublishCmd(g *globals) *cobra.Command {
	var tenant, typ, scan, source, id, data string
	cmd := &cobra.Command{
		Use:   "publish",
		Short: "Publish one scan event, as a scanner would",
		Long: `Publish builds a CloudEvent, checks it exactly as fan-out will (attributes,
data schema, CVSS band), and publishes it in binary mode to
scans.<tenant>.<scan_id>.<kind> with the event id as JetStream dedupe id.
An event fan-out would reject is refused here with the same message.

--data is the event's JSON data: inline, @file, or - for standard input.
The schemas of every event type are in schemas/.`,
		Example: `  scanwire publish --tenant acme --type scan.started --scan s-1 \
    --data '{"scan_id":"s-1","target":"app.example.com"}'
  scanwire publish --tenant acme --type finding.high --scan s-1 --data @finding.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := readData(data, cmd.InOrStdin())
			if err != nil {
				return err
			}
			e := events.New(tenant, source, typ, scan, body)
			if id != "" {
				e.SetID(id)
			}
			kind, _ := events.KindOf(typ)
			if err := events.Validate(events.Address{Tenant: tenant, ScanID: scan, Kind: kind}, &e); err != nil {
				return err
			}
			subject, err := events.Subject(tenant, scan, typ)
			if err != nil {
				return err
			}
			log, err := g.logger(io.Discard)
			if err != nil {
				return err
			}
			nc, err := natsx.Connect(g.clientURL(), "scanwire-publish", nil, log)
			if err != nil {
				return fmt.Errorf("%w (is 'scanwire run' running? set --nats)", err)
			}
			defer nc.Close()
			js, err := natsx.JetStream(nc)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			// The publish starts the event's trace (exported when OTEL_* says
			// so), so its trace id leads to every delivery of it.
			tel, err := telemetry.New(ctx, telemetry.Options{Service: "scanwire-publish"})
			if err != nil {
				return err
			}
			defer tel.Shutdown(context.WithoutCancel(ctx))
			ctx, span := tel.Tracer.Start(ctx, "scanwire publish")
			ack, err := events.Publish(ctx, js, subject, &e)
			span.End()
			if err != nil {
				return err
			}
			dup := ""
			if ack.Duplicate {
				dup = " (duplicate id: the stream already had it; nothing new stored)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %s to %s, %s seq %d%s, trace %s\n", e.ID(), subject, ack.Stream, ack.Sequence, dup, span.SpanContext().TraceID())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&tenant, "tenant", "", "tenant the event belongs to (required)")
	fl.StringVar(&typ, "type", "", "event type: "+strings.Join(events.Types(), ", ")+" (required)")
	fl.StringVar(&scan, "scan", "", "scan id, the CloudEvent subject (required)")
	fl.StringVar(&source, "source", "//scanwire/cli", "CloudEvent source: the scanner, as a URI-reference")
	fl.StringVar(&id, "id", "", "event id (default: a fresh evt_<ULID>); republishing an id is a no-op")
	fl.StringVar(&data, "data", "", "event data as JSON, @file, or - for stdin (required)")
	for _, f := range []string{"tenant", "type", "scan", "data"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

// readData resolves --data: inline JSON, @file, or - for r.
func readData(v string, r io.Reader) ([]byte, error) {
	switch {
	case v == "-":
		return io.ReadAll(io.LimitReader(r, events.MaxDataSize+1))
	case strings.HasPrefix(v, "@"):
		b, err := os.ReadFile(v[1:])
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("--data: file %s does not exist", v[1:])
		}
		return b, err
	}
	return []byte(v), nil
}
