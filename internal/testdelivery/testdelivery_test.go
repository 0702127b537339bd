package testdelivery

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/dlq"
	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// sent is the test event as the pipeline would see it.
type sent struct {
	subject, eventID, webhookID string
}

// awaitSent waits for the test event in SCAN_EVENTS, standing in for
// fan-out. It runs beside Send, off the test's goroutine: it reports a
// failure with Error and ok false.
func awaitSent(t *testing.T, js jetstream.JetStream, subscriptionID string) (sent, bool) {
	t.Helper()
	s, err := js.Stream(t.Context(), natsx.StreamScanEvents)
	if err != nil {
		t.Error(err)
		return sent{}, false
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		m, err := s.GetMsg(t.Context(), 1)
		if err != nil {
			continue
		}
		id := m.Header.Get("ce-id")
		return sent{subject: m.Subject, eventID: id,
			webhookID: jobs.WebhookID(events.Key("acme", m.Header.Get("ce-source"), id), subscriptionID)}, true
	}
	t.Error("the test event was not sent within 10s")
	return sent{}, false
}

func TestSend(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// prepare changes the stored subscription before the test is sent.
		prepare func(t *testing.T, kv jetstream.KeyValue, s *subscriptions.Subscription)
		// pipeline stands in for fan-out and delivery once the event is sent.
		pipeline func(t *testing.T, js jetstream.JetStream, s sent, subscriptionID string)
		check    func(t *testing.T, res *Result, err error)
		sends    bool
	}{
		{
			name: "disabled: refused, nothing sent",
			prepare: func(t *testing.T, kv jetstream.KeyValue, s *subscriptions.Subscription) {
				s.Disabled, s.DisabledReason = true, "endpoint moving"
				natsxtest.PutJSON(t, kv, subscriptions.Key(s.Tenant, s.ID), s)
			},
			check: func(t *testing.T, _ *Result, err error) {
				var de *DisabledError
				if !errors.As(err, &de) || de.Reason != "endpoint moving" {
					t.Errorf("got %v, want a DisabledError with the reason", err)
				}
			},
		},
		{
			name: "deleted: not found, nothing sent",
			prepare: func(t *testing.T, kv jetstream.KeyValue, s *subscriptions.Subscription) {
				if err := kv.Delete(t.Context(), subscriptions.Key(s.Tenant, s.ID)); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, _ *Result, err error) {
				if !errors.Is(err, subscriptions.ErrNotFound) {
					t.Errorf("got %v, want ErrNotFound", err)
				}
			},
		},
		{
			name: "not served by the policy: refused, nothing sent",
			prepare: func(t *testing.T, kv jetstream.KeyValue, s *subscriptions.Subscription) {
				s.URL = "http://127.0.0.1:9/x"
				natsxtest.PutJSON(t, kv, subscriptions.Key(s.Tenant, s.ID), s)
			},
			check: func(t *testing.T, _ *Result, err error) {
				var ie *InvalidError
				if !errors.As(err, &ie) {
					t.Errorf("got %v, want an InvalidError", err)
				}
			},
		},
		{
			name:  "rejected by fan-out: reported at once",
			sends: true,
			pipeline: func(t *testing.T, js jetstream.JetStream, s sent, _ string) {
				m := nats.NewMsg(events.RejectedSubject("acme"))
				m.Header.Set("ce-id", s.eventID)
				m.Header.Set(events.HeaderOriginalSubject, s.subject)
				m.Header.Set(events.HeaderRejectCode, events.RejectNoSubscription.String())
				m.Header.Set(events.HeaderRejectReason, "no such subscription")
				if _, err := js.PublishMsg(t.Context(), m); err != nil {
					t.Error(err)
				}
			},
			check: func(t *testing.T, _ *Result, err error) {
				var se *StoppedError
				if !errors.As(err, &se) || se.Stream != natsx.StreamRejected || se.Code != "subscription_not_found" || se.Reason != "no such subscription" {
					t.Errorf("got %v, want a StoppedError from REJECTED", err)
				}
			},
		},
		{
			name:  "dead-lettered before an attempt: reported at once",
			sends: true,
			pipeline: func(t *testing.T, js jetstream.JetStream, s sent, subID string) {
				deadLetter(t, js, s, subID, 0)
			},
			check: func(t *testing.T, _ *Result, err error) {
				var se *StoppedError
				if !errors.As(err, &se) || se.Stream != natsx.StreamDLQ || se.Code != "subscription_disabled" || se.Seq == 0 {
					t.Errorf("got %v, want a StoppedError from DLQ with its id", err)
				}
			},
		},
		{
			name:  "dead-lettered after an attempt: the attempt is the answer",
			sends: true,
			pipeline: func(t *testing.T, js jetstream.JetStream, s sent, subID string) {
				deadLetter(t, js, s, subID, 1)
				time.Sleep(300 * time.Millisecond) // the attempt log flushes later
				l := attempts.NewLog(js, slog.New(slog.DiscardHandler))
				l.Record(attempts.Attempt{Tenant: "acme", SubscriptionID: subID, WebhookID: s.webhookID, Attempt: 1, Status: 410, Outcome: attempts.OutcomeDead})
				l.Flush(t.Context())
			},
			check: func(t *testing.T, res *Result, err error) {
				if err != nil || res.Attempt == nil || res.Attempt.Status != 410 {
					t.Errorf("got %+v, %v, want the attempt", res, err)
				}
			},
		},
		{
			name:  "nothing happens: no attempt in time",
			sends: true,
			check: func(t *testing.T, res *Result, err error) {
				if !errors.Is(err, attempts.ErrNoAttempt) || res == nil || res.EventID == "" {
					t.Errorf("got %+v, %v, want ErrNoAttempt with the ids", res, err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			js := natsxtest.JetStream(t)
			kv := natsxtest.KeyValue(t, js, natsx.BucketSubscriptions)
			store := subscriptions.NewStore(kv, &egress.Policy{})
			s, err := store.Create(t.Context(), subscriptions.Subscription{Tenant: "acme", URL: "https://93.184.216.34/hook", Events: []string{"scan.started"}})
			if err != nil {
				t.Fatal(err)
			}
			if tt.prepare != nil {
				tt.prepare(t, kv, s)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				if tt.pipeline == nil {
					return
				}
				if sent, ok := awaitSent(t, js, s.ID); ok {
					tt.pipeline(t, js, sent, s.ID)
				}
			}()
			wait := 10 * time.Second
			if tt.pipeline == nil {
				wait = 300 * time.Millisecond
			}
			start := time.Now()
			res, err := New(js, store, attempts.NewLog(js, slog.New(slog.DiscardHandler))).Send(context.Background(), "acme", s.ID, wait)
			<-done
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Send took %s", d)
			}
			tt.check(t, res, err)
			if n := len(natsxtest.Messages(t, js, natsx.StreamScanEvents, "")); (n > 0) != tt.sends {
				t.Errorf("%d events sent", n)
			}
		})
	}
}

// deadLetter stores the test's dead letter after attempts attempts, as
// delivery would.
func deadLetter(t *testing.T, js jetstream.JetStream, s sent, subscriptionID string, attempts int) {
	dl := dlq.DeadLetter{Job: jobs.Job{WebhookID: s.webhookID, Tenant: "acme", SubscriptionID: subscriptionID}, Code: dlq.ReasonSubscriptionDisabled,
		Reason: "subscription disabled: endpoint moving", Attempts: attempts, DeadAt: time.Now()}
	m, err := dl.Msg(1)
	if err != nil {
		t.Error(err)
		return
	}
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Error(err)
	}
}
