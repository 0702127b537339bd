package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

func newDemoCmd(g *globals) *cobra.Command {
	f := &runFlags{}
	var scans int
	var interval time.Duration
	var flaky bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the pipeline with a sample scanner and a receiver that verifies every signature",
		Long: `Demo runs the whole pipeline on an embedded NATS server (in a temporary
directory unless --data is given), subscribes a local receiver, and has a
sample scanner publish a scan every --interval: scan.started, three findings
and scan.finished. The receiver checks every Standard Webhooks signature with
its own code and prints each delivery as it lands. With --flaky the receiver
answers 503 to some first attempts, so you see scanwire retry them.

It runs until Ctrl-C, or until --scans scans have been fully delivered.`,
		Example: `  go run ./services/scanwire demo
  go run ./services/scanwire demo --scans 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if scans < 0 {
				return fmt.Errorf("--scans: must be 0 (until Ctrl-C) or more, got %d", scans)
			}
			if interval <= 0 {
				return fmt.Errorf("--interval: must be positive, got %s", interval)
			}
			g.allowPrivate = true // the demo's receiver is on loopback
			if !cmd.Flags().Changed("log-level") {
				g.logLevel = "error" // the demo prints retries itself
			}
			if f.data == "" {
				dir, err := os.MkdirTemp("", "scanwire-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				f.data = dir
			}
			cfg, err := f.config(cmd, g)
			if err != nil {
				return err
			}
			d := &demo{out: cmd.OutOrStdout(), scans: scans, interval: interval, flaky: flaky}
			return runUntilDone(cmd.Context(), cfg, d.run)
		},
	}
	f.register(cmd, "", "127.0.0.1:0", "127.0.0.1:0")
	cmd.Flags().IntVar(&scans, "scans", 0, "stop after this many scans are delivered (0: run until Ctrl-C)")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between the sample scanner's scans")
	cmd.Flags().BoolVar(&flaky, "flaky", true, "answer 503 to every fourth first attempt, to show retries")
	return cmd
}

// eventsPerScan is what the sample scanner publishes per scan.
const eventsPerScan = 5

type demo struct {
	out      io.Writer
	scans    int
	interval time.Duration
	flaky    bool

	mu       sync.Mutex
	secret   []byte
	attempts map[string]int  // webhook-id -> attempts seen
	landed   map[string]bool // webhook-ids delivered and verified
	verified int
	forged   int
	done     chan struct{}
}

func (d *demo) run(ctx context.Context, a *app.App) error {
	d.attempts = map[string]int{}
	d.landed = map[string]bool{}
	d.done = make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(d.receive), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	sub, err := a.Store.Create(ctx, subscriptions.Subscription{
		Tenant:      "demo",
		URL:         "http://" + ln.Addr().String() + "/webhooks",
		Events:      []string{"scan.*", "finding.*"},
		Retry:       subscriptions.Retry{Schedule: []string{"1s", "2s", "4s"}},
		Description: "scanwire demo receiver",
	})
	if err != nil {
		return err
	}
	// The services see a new subscription through their KV watch; wait for
	// it so the first scan is not published to nobody.
	for _, ok := a.Subs.Get(sub.Tenant, sub.ID); !ok; _, ok = a.Subs.Get(sub.Tenant, sub.ID) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Millisecond):
		}
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sub.Secrets[0].Secret, "whsec_"))
	d.mu.Lock()
	d.secret = key
	d.mu.Unlock()

	fmt.Fprintf(d.out, "scanwire demo\n  NATS      %s\n  gateway   http://%s\n  receiver  %s\n  subscription %s (standard-webhooks, retries 1s 2s 4s)\n\n",
		a.ClientURL(), a.HTTPAddr(), sub.URL, sub.ID)

	go d.scanner(ctx, a)
	select {
	case <-ctx.Done():
	case <-d.done:
	case err := <-a.Err():
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "\n%d deliveries verified, %d failed verification\n", d.verified, d.forged)
	if d.forged > 0 {
		return errors.New("some signatures did not verify")
	}
	return nil
}

// scanner publishes sample scans as a real scanner would: binary-mode
// CloudEvents on scans.<tenant>.<scan>.<kind>.
func (d *demo) scanner(ctx context.Context, a *app.App) {
	for i := 1; d.scans == 0 || i <= d.scans; i++ {
		scan := fmt.Sprintf("demo-%04d", i)
		target := "app.example.com"
		evs := []struct {
			typ  string
			data map[string]any
		}{
			{events.TypeScanStarted, map[string]any{"scan_id": scan, "target": target, "scan_type": "full"}},
			{events.TypeFindingHigh, map[string]any{"scan_id": scan, "target": target, "finding_id": "f1", "type": "xss",
				"title": `Reflected XSS in <script> & "quotes"`, "cvss_score": 7.1, "url": "https://app.example.com/search?q=", "cwe": "CWE-79"}},
			{events.TypeFindingHigh, map[string]any{"scan_id": scan, "target": target, "finding_id": "f2", "type": "sqli",
				"title": "SQL injection in /login", "cvss_score": 9.8}},
			{events.TypeFindingMedium, map[string]any{"scan_id": scan, "target": target, "finding_id": "f3", "type": "csrf",
				"title": "Login Cross Site Request Forgery (CSRF/XSRF)", "cvss_score": 4.3, "tags": []string{"new"}}},
			{events.TypeScanFinished, map[string]any{"scan_id": scan, "target": target, "status": "completed", "findings_count": 3}},
		}
		for _, ev := range evs {
			data, _ := json.Marshal(ev.data)
			e := events.New("demo", "//scanners/demo", ev.typ, scan, data)
			subject, _ := events.Subject("demo", scan, ev.typ)
			// Each event starts its own trace, as a scanner's would.
			pctx, span := a.Tel.Tracer.Start(ctx, "scanner publish")
			_, err := events.Publish(pctx, a.JS, subject, &e)
			span.End()
			if err != nil {
				if ctx.Err() == nil {
					fmt.Fprintf(d.out, "  publish failed: %v\n", err)
				}
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d.interval):
		}
	}
}

// receive is the sample receiver. It verifies with its own few lines of
// the Standard Webhooks rule, as a subscriber would.
func (d *demo) receive(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	d.mu.Lock()
	defer d.mu.Unlock()
	mac := hmac.New(sha256.New, d.secret)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	ok := false
	for _, sig := range strings.Fields(r.Header.Get("webhook-signature")) {
		ok = ok || hmac.Equal([]byte(sig), []byte(want))
	}
	d.attempts[id]++
	n := d.attempts[id]

	var ce struct {
		Type    string          `json:"type"`
		Subject string          `json:"subject"`
		Time    time.Time       `json:"time"`
		Data    json.RawMessage `json:"data"`
	}
	_ = json.Unmarshal(body, &ce)
	var data struct {
		Title  string `json:"title"`
		Status string `json:"status"`
		Target string `json:"target"`
	}
	_ = json.Unmarshal(ce.Data, &data)
	what := data.Title
	if what == "" {
		what = strings.TrimSpace(data.Status + " " + data.Target)
	}
	if !ok {
		d.forged++
		fmt.Fprintf(d.out, "  ✗ %-14s %s  %s  SIGNATURE DID NOT VERIFY\n", ce.Type, ce.Subject, id)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if d.flaky && n == 1 && len(d.attempts)%4 == 0 {
		fmt.Fprintf(d.out, "  ✗ %-14s %s  %s  answered 503 on purpose; scanwire will retry\n", ce.Type, ce.Subject, id)
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	d.verified++
	ts64, _ := strconv.ParseInt(ts, 10, 64)
	trace := "-"
	if parts := strings.Split(r.Header.Get("traceparent"), "-"); len(parts) == 4 {
		trace = parts[1]
	}
	fmt.Fprintf(d.out, "  ✓ %-14s %s  %s  attempt %d  %-45q signature verified (signed at %s, %s after the event)  trace %s\n",
		ce.Type, ce.Subject, id, n, what, time.Unix(ts64, 0).Format("15:04:05"), time.Since(ce.Time).Round(time.Millisecond), trace)
	w.WriteHeader(http.StatusNoContent)
	if !d.landed[id] {
		d.landed[id] = true
		if d.scans > 0 && len(d.landed) == d.scans*eventsPerScan {
			close(d.done)
		}
	}
}
