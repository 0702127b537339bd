// Package telemetry sets up OpenTelemetry for a scanwire process: traces
// (exported over OTLP when the standard OTEL_* variables ask for it),
// metrics (served to Prometheus at /metrics), and the instruments the
// services record into.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Telemetry is one process's tracer and meter providers and instruments.
// It is passed to every service; there is no global provider, so tests can
// run several pipelines in one process, each with its own.
type Telemetry struct {
	Tracer  trace.Tracer
	Metrics *Metrics
	// Handler serves the metrics in the Prometheus text format.
	Handler http.Handler

	tp       trace.TracerProvider
	shutdown []func(context.Context) error
}

// Options for New. The zero value exports traces only if the environment
// says so.
type Options struct {
	// Service is the service.name resource attribute (default "scanwire";
	// OTEL_SERVICE_NAME overrides it).
	Service string
	// TracerProvider, when set, is used as is (tests use a span recorder).
	TracerProvider trace.TracerProvider
}

// New builds the providers. Traces go to an OTLP exporter only when
// OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
// OTEL_TRACES_EXPORTER=otlp is set; the protocol follows
// OTEL_EXPORTER_OTLP_PROTOCOL (grpc by default, or http/protobuf). With
// none of them, spans are still made (their ids travel to receivers and
// into logs) but nothing is exported and nothing is printed about it.
func New(ctx context.Context, o Options) (*Telemetry, error) {
	if o.Service == "" {
		o.Service = "scanwire"
	}
	t := &Telemetry{}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(o.Service)))
	if err != nil {
		res = resource.Default()
	}
	t.tp = o.TracerProvider
	if t.tp == nil {
		opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
		if exp, err := traceExporter(ctx); err != nil {
			return nil, err
		} else if exp != nil {
			opts = append(opts, sdktrace.WithBatcher(exp))
		}
		tp := sdktrace.NewTracerProvider(opts...)
		t.tp = tp
		t.shutdown = append(t.shutdown, tp.Shutdown)
	}
	t.Tracer = t.tp.Tracer("github.com/scanwire/scanwire")

	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res))
	t.shutdown = append(t.shutdown, mp.Shutdown)
	t.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if t.Metrics, err = newMetrics(mp.Meter("github.com/scanwire/scanwire")); err != nil {
		return nil, err
	}
	return t, nil
}

// TracerProvider is the provider behind Tracer.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// Meter returns the meter for instruments that services register
// themselves (observable gauges).
func (t *Telemetry) Meter() metric.Meter { return t.Metrics.meter }

// Shutdown flushes and stops the providers.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

func traceExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	wanted := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" ||
		os.Getenv("OTEL_TRACES_EXPORTER") == "otlp"
	if !wanted || os.Getenv("OTEL_TRACES_EXPORTER") == "none" || os.Getenv("OTEL_SDK_DISABLED") == "true" {
		return nil, nil
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch strings.ToLower(proto) {
	case "", "grpc":
		return otlptracegrpc.New(ctx)
	case "http/protobuf", "http":
		return otlptracehttp.New(ctx)
	}
	return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is not grpc or http/protobuf", proto)
}
