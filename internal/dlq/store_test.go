package dlq

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/egress"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/natsx/natsxtest"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// Issue 11.5: a dead letter is replayed only to a subscription that takes
// deliveries; otherwise the refusal names why and the dead letter stays.
func TestReplayOnlyToASubscriptionThatTakesDeliveries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// prepare leaves the subscription as the case needs it and returns
		// the job's subscription id.
		prepare func(t *testing.T, kv jetstream.KeyValue, s *subscriptions.Subscription) string
		want    string // "" replays
	}{
		{"enabled", func(*testing.T, jetstream.KeyValue, *subscriptions.Subscription) string { return "" }, ""},
		{"per-scan callback", func(*testing.T, jetstream.KeyValue, *subscriptions.Subscription) string {
			return jobs.CallbackSubscription
		}, ""},
		{"deleted", func(t *testing.T, kv jetstream.KeyValue, s *subscriptions.Subscription) string {
			if err := kv.Delete(t.Context(), subscriptions.Key(s.Tenant, s.ID)); err != nil {
				t.Fatal(err)
			}
			return ""
		}, "was deleted; there is nothing to deliver it to"},
		{"disabled", func(t *testing.T, kv jetstream.KeyValue, s *subscriptions.Subscription) string {
			s.Disabled, s.DisabledReason = true, "endpoint moving"
			natsxtest.PutJSON(t, kv, subscriptions.Key(s.Tenant, s.ID), s)
			return ""
		}, "is disabled (endpoint moving); enable it first"},
		{"not served by the policy", func(t *testing.T, kv jetstream.KeyValue, s *subscriptions.Subscription) string {
			s.URL = "http://127.0.0.1:9/x"
			natsxtest.PutJSON(t, kv, subscriptions.Key(s.Tenant, s.ID), s)
			return ""
		}, "is invalid: subscription.url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			js := natsxtest.JetStream(t)
			kv := natsxtest.KeyValue(t, js, natsx.BucketSubscriptions)
			subs := subscriptions.NewStore(kv, &egress.Policy{})
			s, err := subs.Create(ctx, subscriptions.Subscription{Tenant: "acme", URL: "https://93.184.216.34/hook", Events: []string{"scan.started"}})
			if err != nil {
				t.Fatal(err)
			}
			subID := s.ID
			if id := tt.prepare(t, kv, s); id != "" {
				subID = id
			}
			dl := DeadLetter{Job: jobs.Job{WebhookID: "msg_1", Tenant: "acme", SubscriptionID: subID, EventID: "e1", Attempt: 3},
				Code: ReasonRetriesExhausted, Reason: "retries exhausted", DeadAt: time.Now()}
			m, err := dl.Msg(1)
			if err != nil {
				t.Fatal(err)
			}
			ack, err := js.PublishMsg(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			_, err = New(js, subs).Replay(ctx, "acme", ack.Sequence)
			left := len(natsxtest.Messages(t, js, natsx.StreamDLQ, ""))
			queued := len(natsxtest.Messages(t, js, natsx.StreamDeliveries, ""))
			switch {
			case tt.want == "" && (err != nil || left != 0 || queued != 1):
				t.Errorf("replay: %v; %d dead letters left, %d jobs queued", err, left, queued)
			case tt.want != "" && (!errors.Is(err, ErrNoTarget) || !strings.Contains(err.Error(), tt.want) || left != 1 || queued != 0):
				t.Errorf("replay: %v, want ErrNoTarget saying %q; %d dead letters left, %d jobs queued", err, tt.want, left, queued)
			}
		})
	}
}
