package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/profiles"
	"github.com/scanwire/scanwire/internal/telemetry"
)

// NewHTTPClient returns the client webhooks are sent with: redirects are
// never followed (a receiver must not be able to bounce a signed request
// somewhere else) and every phase has a deadline (timeout, or Config's
// default when it is 0).
//
// Each request gets an HTTP client span (otelhttp) under the span in its
// context, and carries traceparent, so a receiver can continue the trace.
func NewHTTPClient(timeout time.Duration, dial func(ctx context.Context, network, addr string) (net.Conn, error), tp trace.TracerProvider) *http.Client {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	if timeout <= 0 {
		timeout = Config{}.Defaults().Timeout
	}
	return &http.Client{
		Timeout: timeout,
		Transport: otelhttp.NewTransport(&http.Transport{
			DialContext:           dial,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1000,
			MaxIdleConnsPerHost:   100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: timeout,
			ExpectContinueTimeout: time.Second,
		}, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(telemetry.Propagator)),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// result is what one attempt came to.
type result struct {
	status    int
	err       error
	body      []byte
	latency   time.Duration
	permanent bool // no retry can help
	timedOut  bool // the attempt ran out of time
	// retryAfter is the receiver's Retry-After on 429 or 503, clamped to
	// [minRetryAfter, maxRetryAfter]; 0 when absent.
	retryAfter time.Duration
}

// Retry-After is honoured within these bounds: a receiver may ask for a
// pause, not for a hot loop or for a job to be parked for days.
const (
	minRetryAfter = time.Second
	maxRetryAfter = time.Hour
)

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		// Compared in seconds, before multiplying: a huge value must clamp
		// to the maximum, not overflow into a negative duration.
		d = maxRetryAfter
		if err == nil && secs < uint64(maxRetryAfter/time.Second) {
			d = time.Duration(secs) * time.Second
		}
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0
	}
	return min(max(d, minRetryAfter), maxRetryAfter)
}

func (r result) ok() bool { return r.err == nil && r.status >= 200 && r.status < 300 }

func (r result) describe() string {
	switch {
	case r.err != nil:
		return r.err.Error()
	case r.status == http.StatusGone:
		return "HTTP 410 Gone: the endpoint is gone; subscription disabled"
	}
	return fmt.Sprintf("HTTP %d", r.status)
}

// reason names why a permanent failure can never succeed.
func (r result) reason() dlq.Reason {
	switch {
	case r.status == http.StatusGone:
		return dlq.ReasonGone
	case errors.Is(r.err, egress.ErrBlocked):
		return dlq.ReasonEgressBlocked
	}
	return dlq.ReasonUnsendable
}

func (r result) errString() string {
	if r.err != nil {
		return r.err.Error()
	}
	return ""
}

// post sends one request and reads at most maxBody bytes of the answer,
// within timeout and ctx's deadline, whichever comes first.
func post(ctx context.Context, client *http.Client, target string, req profiles.Request, timeout time.Duration, maxBody int64) result {
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(req.Body))
	if err != nil {
		return result{err: fmt.Errorf("build request: %w", err), permanent: true}
	}
	hreq.Header = req.Header.Clone()
	start := time.Now()
	resp, err := client.Do(hreq)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the method and URL are in the attempt record already
		}
		var te interface{ Timeout() bool }
		switch {
		case errors.Is(err, egress.ErrBlocked):
			return result{err: err, latency: time.Since(start), permanent: true}
		case errors.As(err, &te) && te.Timeout():
			err = fmt.Errorf("timeout after %s: %w", timeout.Round(time.Millisecond), err)
			return result{err: err, latency: time.Since(start), timedOut: true}
		}
		return result{err: err, latency: time.Since(start)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	r := result{status: resp.StatusCode, body: body, latency: time.Since(start)}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		r.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	case http.StatusGone:
		r.permanent = true // the endpoint is gone for good: see health.gone
	}
	return r
}
