package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"

	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/telemetry"
)

// publishName names the publish command's NATS connection and the service
// of its traces.
const publishName = "scanwire-publish"

// publishFlags describe the event to publish.
type publishFlags struct {
	tenant, typ, scan, source, id, data string
}

func newPublishCmd(g *globals) *cobra.Command {
	f := &publishFlags{}
	cmd := &cobra.Command{
		Use:   "publish",
		Short: "Publish one scan event, as a scanner would",
		Long: `Publish builds a CloudEvent, checks it exactly as fan-out will (attributes,
data schema, CVSS band, a scan.started's callback_url against the egress
policy), and publishes it in binary mode to scans.<tenant>.<scan_id>.<kind>
with its key (tenant, source, id) as JetStream dedupe id. An event fan-out
would reject is refused here with the same message.

A callback_url is judged by the running pipeline's egress policy: publish
asks the pipeline (as 'subs create' does) whether it runs with
--allow-private-targets. When no pipeline answers, publishing is still
possible (the event waits in SCAN_EVENTS), and the URL is judged by the
strict policy (https, public addresses only), with a warning. A host that
resolves only to blocked addresses is refused; one that does not resolve
from here is left to the pipeline. What no pipeline accepts (a malformed
URL, cloud metadata, link-local) is refused before connecting.

--data is the event's JSON data: inline, @file, or - for standard input.
The schemas of every event type are in schemas/.`,
		Example: `  scanwire publish --tenant acme --type scan.started --scan s-1 \
    --data '{"scan_id":"s-1","target":"app.example.com"}'
  scanwire publish --tenant acme --type finding.high --scan s-1 --data @finding.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, subject, err := f.event(cmd.InOrStdin())
			if err != nil {
				return err
			}
			if err := g.refusePolicyFlag(); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			p, err := g.publisher(ctx)
			if err != nil {
				return err
			}
			// Flushing the trace waits for the exporter, so it comes after
			// the result is printed.
			defer p.close(context.WithoutCancel(ctx))
			if err := g.checkCallback(ctx, p.nc, e, cmd.ErrOrStderr()); err != nil {
				return err
			}
			ack, traceID, err := p.publish(ctx, subject, e)
			if err != nil {
				return err
			}
			printPublished(cmd.OutOrStdout(), e.ID(), subject, ack, traceID)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.tenant, "tenant", "", "tenant the event belongs to (required)")
	fl.StringVar(&f.typ, "type", "", "event type: "+strings.Join(events.Types(), ", ")+" (required)")
	fl.StringVar(&f.scan, "scan", "", "scan id, the CloudEvent subject (required)")
	fl.StringVar(&f.source, "source", "//scanwire/cli", "CloudEvent source: the scanner, as a URI-reference")
	fl.StringVar(&f.id, "id", "", "event id (default: a fresh evt_<ULID>); republishing an id is a no-op")
	fl.StringVar(&f.data, "data", "", "event data as JSON, @file, or - for stdin (required)")
	for _, name := range []string{"tenant", "type", "scan", "data"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

// event builds the event the flags describe, with stdin for --data -, and
// the subject it is published on. It refuses what fan-out would reject,
// with fan-out's message, as far as that is known before asking the
// pipeline: a callback_url is held here only to the static checks that
// every egress policy makes (checkCallback judges it by the pipeline's).
func (f *publishFlags) event(stdin io.Reader) (*event.Event, string, error) {
	body, err := readData(f.data, stdin)
	if err != nil {
		return nil, "", err
	}
	e := events.New(f.tenant, f.source, f.typ, f.scan, body)
	if f.id != "" {
		e.SetID(f.id)
	}
	kind, _ := events.KindOf(f.typ)
	if err := events.Validate(events.Address{Tenant: f.tenant, ScanID: f.scan, Kind: kind}, &e); err != nil {
		return nil, "", err
	}
	if u := callbackURL(&e); u != "" {
		// The loosest policy: what it refuses, every pipeline refuses.
		if err := (&egress.Policy{AllowPrivate: true}).CheckURLStatic(u); err != nil {
			return nil, "", callbackRefused(err)
		}
	}
	subject, err := events.Subject(f.tenant, f.scan, f.typ)
	if err != nil {
		return nil, "", err
	}
	return &e, subject, nil
}

// checkCallback judges a valid event's callback_url, if it has one, by the
// egress policy of the pipeline running on nc, with the check fan-out
// makes: an error is the *events.InvalidError fan-out would reject the
// event with. When no pipeline answers, the event may still be published
// (it waits in SCAN_EVENTS for one), and the URL is judged by the strict
// policy, which every pipeline's accepts, with a warning on warn.
func (g *globals) checkCallback(ctx context.Context, nc *nats.Conn, e *event.Event, warn io.Writer) error {
	u := callbackURL(e)
	if u == "" {
		return nil
	}
	policy := &egress.Policy{}
	pl, err := subscriptions.AskPipeline(ctx, nc, pipelineWait)
	switch {
	case err == nil:
		policy.AllowPrivate = pl.AllowPrivateTargets
	case errors.Is(err, subscriptions.ErrNoPipeline):
		fmt.Fprintf(warn, "warning: %v at %s; the callback_url is judged by the strict egress policy (https, public addresses), "+
			"which every pipeline accepts\n", err, natsx.RedactURL(g.clientURL()))
	default:
		return err
	}
	if err := policy.CheckCallbackURL(ctx, u); err != nil {
		return callbackRefused(err)
	}
	return nil
}

// callbackURL is a valid scan.started event's data.callback_url, or "".
func callbackURL(e *event.Event) string {
	if e.Type() != events.TypeScanStarted {
		return ""
	}
	var data struct {
		CallbackURL string `json:"callback_url"`
	}
	_ = json.Unmarshal(e.Data(), &data) // valid: callback_url is a string by the schema
	return data.CallbackURL
}

// callbackRefused is the refusal fan-out rejects the event with.
func callbackRefused(err error) error {
	return &events.InvalidError{Problems: []events.Problem{{Field: "data/callback_url", Message: err.Error()}}}
}

// readData resolves --data: inline JSON, @file, or - for r.
func readData(v string, r io.Reader) ([]byte, error) {
	switch {
	case v == "-":
		return io.ReadAll(io.LimitReader(r, 4*events.MaxEventSize)) // enough to say how far over the limit it is
	case strings.HasPrefix(v, "@"):
		b, err := os.ReadFile(v[1:])
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("--data: file %s does not exist", v[1:])
		}
		return b, err
	}
	return []byte(v), nil
}

// publisher is the publish command's connection to JetStream and its
// telemetry (traces are exported when the OTEL_* variables say so).
type publisher struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	tel *telemetry.Telemetry
}

func (g *globals) publisher(ctx context.Context) (*publisher, error) {
	nc, js, err := g.connect(publishName)
	if err != nil {
		return nil, err
	}
	tel, err := telemetry.New(ctx, telemetry.Options{Service: publishName})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &publisher{nc: nc, js: js, tel: tel}, nil
}

// publish sends e to subject. The publish starts the event's trace, so the
// trace id it returns leads to every delivery of the event.
func (p *publisher) publish(ctx context.Context, subject string, e *event.Event) (*jetstream.PubAck, trace.TraceID, error) {
	ctx, span := p.tel.Tracer.Start(ctx, "scanwire publish")
	defer span.End()
	var opts []events.PublishOption
	if key := os.Getenv("SCANWIRE_ADMIN_KEY"); key != "" {
		opts = append(opts, events.DedupeSecret([]byte(key))) // see events.DedupeSecret
	}
	ack, err := events.Publish(ctx, p.js, subject, e, opts...)
	return ack, span.SpanContext().TraceID(), err
}

// close flushes the traces and closes the connection.
func (p *publisher) close(ctx context.Context) {
	_ = p.tel.Shutdown(ctx)
	p.nc.Close()
}

func printPublished(w io.Writer, id, subject string, ack *jetstream.PubAck, traceID trace.TraceID) {
	dup := ""
	if ack.Duplicate {
		dup = " (duplicate id: the stream already had it; nothing new stored)"
	}
	fmt.Fprintf(w, "published %s to %s, %s seq %d%s, trace %s\n", id, subject, ack.Stream, ack.Sequence, dup, traceID)
}
