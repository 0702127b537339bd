package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

// health keeps each subscription's failing streak in its document and
// disables the subscription when the endpoint says it is gone (410) or has
// kept failing longer than the auto-disable period. It writes only when
// the state changes (a streak starts, ends, or disables), not per attempt.
type health struct {
	store *subscriptions.Store
	after time.Duration
	log   *slog.Logger
}

func (h *health) succeeded(ctx context.Context, s *subscriptions.Subscription) {
	if s.FailingSince == nil || s.ID == jobs.CallbackSubscription {
		return
	}
	h.change(ctx, s, func(c *subscriptions.Subscription) { c.FailingSince = nil })
}

func (h *health) failed(ctx context.Context, s *subscriptions.Subscription) {
	if s.ID == jobs.CallbackSubscription {
		return
	}
	now := time.Now().UTC()
	switch {
	case s.FailingSince == nil:
		h.change(ctx, s, func(c *subscriptions.Subscription) {
			if c.FailingSince == nil {
				c.FailingSince = &now
			}
		})
	case now.Sub(*s.FailingSince) > h.after:
		reason := fmt.Sprintf("deliveries failing since %s, longer than the auto-disable period of %s", s.FailingSince.Format(time.RFC3339), h.after)
		h.disable(ctx, s, reason)
	}
}

// pruneSecrets removes a subscription's expired secrets from its document
// (Update drops them), the first time a delivery finds any: rotated-out
// secrets do not linger in the bucket.
func (h *health) pruneSecrets(ctx context.Context, s *subscriptions.Subscription) {
	if s.ID == jobs.CallbackSubscription || len(s.LiveSecrets(time.Now())) == len(s.Secrets) {
		return
	}
	h.change(ctx, s, func(*subscriptions.Subscription) {})
}

func (h *health) gone(ctx context.Context, s *subscriptions.Subscription) {
	if s.ID == jobs.CallbackSubscription {
		return
	}
	h.disable(ctx, s, fmt.Sprintf("the endpoint answered %d Gone at %s", http.StatusGone, time.Now().UTC().Format(time.RFC3339)))
}

func (h *health) disable(ctx context.Context, s *subscriptions.Subscription, reason string) {
	h.log.Warn("disabling subscription", "subscription_id", s.ID, "tenant", s.Tenant, "reason", reason)
	h.change(ctx, s, func(c *subscriptions.Subscription) {
		if !c.Disabled {
			c.Disabled, c.DisabledReason = true, reason
		}
	})
}

// change applies edit to the stored document through Store.Change, which
// re-reads it and re-applies edit when another worker changed it meanwhile
// (it may have recorded the same streak; the edits are idempotent) and
// writes nothing when edit leaves it as it was. A deleted subscription has
// nothing to record; any other failure is logged, never fatal to the
// delivery.
func (h *health) change(ctx context.Context, s *subscriptions.Subscription, edit func(*subscriptions.Subscription)) {
	if h.store == nil {
		return
	}
	_, err := h.store.Change(ctx, s.Tenant, s.ID, func(c *subscriptions.Subscription) error {
		edit(c)
		return nil
	})
	if err != nil && !errors.Is(err, subscriptions.ErrNotFound) {
		h.log.Warn("could not record delivery health", "subscription_id", s.ID, "err", err)
	}
}
