package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/subscriptions"
)

// subsUpdateFlags are the flags of subs update; only those given change
// the subscription.
type subsUpdateFlags struct {
	url, description, profile, disabledReason string
	events, schedule, targets                 []string
	disable, enable                           bool
}

func newSubsUpdateCmd(g *globals) *cobra.Command {
	f := &subsUpdateFlags{}
	cmd := &cobra.Command{
		Use:   "update <subscription-id>",
		Short: "Change a subscription (only the flags given); refuses if someone else changed it meanwhile",
		Example: `  scanwire subs update sub_01KAP... --events 'finding.*' --retry 1m,10m,1h
  scanwire subs update sub_01KAP... --disable --reason "endpoint moving"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			patch, err := f.patch(cmd.Flags().Changed)
			if err != nil {
				return err
			}
			c, tenant, err := g.subscriptionFor(cmd.Context(), args[0], policyRequired, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			updated, err := patchSubscription(cmd.Context(), c.store, tenant, args[0], patch)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), updated.Redacted())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.url, "url", "", "new URL")
	fl.StringSliceVar(&f.events, "events", nil, "new event types")
	fl.StringSliceVar(&f.schedule, "retry", nil, "new retry schedule (empty: the profile's default)")
	fl.StringSliceVar(&f.targets, "targets", nil, "new target globs")
	fl.StringVar(&f.profile, "profile", "", "new profile")
	fl.StringVar(&f.description, "description", "", "new description")
	fl.BoolVar(&f.disable, "disable", false, "stop deliveries (events are dead-lettered with the reason, replayable)")
	fl.StringVar(&f.disabledReason, "reason", "disabled by an operator", "why, with --disable")
	fl.BoolVar(&f.enable, "enable", false, "resume deliveries")
	cmd.MarkFlagsMutuallyExclusive("disable", "enable")
	return cmd
}

// patch is the JSON merge patch of the flags given (changed says which
// were); it is an error to give none.
func (f *subsUpdateFlags) patch(changed func(flag string) bool) ([]byte, error) {
	patch := map[string]any{}
	set := func(flag, field string, v any) {
		if changed(flag) {
			patch[field] = v
		}
	}
	set("url", "url", f.url)
	set("events", "events", f.events)
	set("description", "description", f.description)
	set("profile", "profile", f.profile)
	set("retry", "retry", map[string]any{"schedule": f.schedule})
	set("targets", "filter", map[string]any{"targets": f.targets})
	if changed("reason") && !f.disable {
		return nil, errors.New("--reason says why with --disable; give --disable too")
	}
	if f.disable {
		patch["disabled"], patch["disabled_reason"] = true, f.disabledReason
	}
	if f.enable {
		patch["disabled"], patch["disabled_reason"] = false, ""
	}
	if len(patch) == 0 {
		return nil, errors.New("nothing to change: give at least one of --url, --events, --retry, --targets, --profile, --description, --disable, --enable")
	}
	return json.Marshal(patch)
}

// patchSubscription applies patch to the stored subscription and stores
// the result, unless the subscription changed since it was read.
func patchSubscription(ctx context.Context, store *subscriptions.Store, tenant, id string, patch []byte) (*subscriptions.Subscription, error) {
	s, rev, err := store.Get(ctx, tenant, id)
	if err != nil {
		return nil, err
	}
	next, err := s.Patch(patch)
	if err != nil {
		return nil, err
	}
	return store.Update(ctx, *next, rev)
}

func newSubsRotateCmd(g *globals) *cobra.Command {
	var overlap time.Duration
	var secret string
	cmd := &cobra.Command{
		Use:   "rotate-secret <subscription-id>",
		Short: "Make a new signing secret; the old ones keep signing for --overlap; prints the new secret once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, tenant, err := g.subscriptionFor(cmd.Context(), args[0], policyRequired, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			s, err := c.store.Rotate(cmd.Context(), tenant, args[0], overlap, secret)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "new signing secret (shown once, keep it now): %s\n", s.Secrets[0].Secret)
			if len(s.Secrets) > 1 {
				fmt.Fprintf(out, "the previous secret keeps signing until %s\n", s.Secrets[1].Expires.Format(time.RFC3339))
			} else {
				fmt.Fprintln(out, "the previous secret no longer signs")
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&overlap, "overlap", subscriptions.DefaultOverlap, "how long the old secret keeps signing (0: stop at once)")
	cmd.Flags().StringVar(&secret, "secret", "", "the new secret (default: generated)")
	return cmd
}
