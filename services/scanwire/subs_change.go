package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/subscriptions"
)

func newSubsUpdateCmd(g *globals) *cobra.Command {
	var url, description, profile, disabledReason string
	var events, schedule, targets []string
	var disable, enable bool
	cmd := &cobra.Command{
		Use:   "update <subscription-id>",
		Short: "Change a subscription (only the flags given); refuses if someone else changed it meanwhile",
		Example: `  scanwire subs update sub_01KAP... --events 'finding.*' --retry 1m,10m,1h
  scanwire subs update sub_01KAP... --disable --reason "endpoint moving"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			patch := map[string]any{}
			fl := cmd.Flags()
			set := func(flag, field string, v any) {
				if fl.Changed(flag) {
					patch[field] = v
				}
			}
			set("url", "url", url)
			set("events", "events", events)
			set("description", "description", description)
			set("profile", "profile", profile)
			set("retry", "retry", map[string]any{"schedule": schedule})
			set("targets", "filter", map[string]any{"targets": targets})
			if disable {
				patch["disabled"], patch["disabled_reason"] = true, disabledReason
			}
			if enable {
				patch["disabled"], patch["disabled_reason"] = false, ""
			}
			if len(patch) == 0 {
				return errors.New("nothing to change: give at least one of --url, --events, --retry, --targets, --profile, --description, --disable, --enable")
			}
			store, _, tenant, done, err := g.subscription(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			s, rev, err := store.Get(cmd.Context(), tenant, args[0])
			if err != nil {
				return err
			}
			body, _ := json.Marshal(patch)
			next, err := s.Patch(body)
			if err != nil {
				return err
			}
			updated, err := store.Update(cmd.Context(), *next, rev)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), updated.Redacted())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&url, "url", "", "new URL")
	fl.StringSliceVar(&events, "events", nil, "new event types")
	fl.StringSliceVar(&schedule, "retry", nil, "new retry schedule (empty: the profile's default)")
	fl.StringSliceVar(&targets, "targets", nil, "new target globs")
	fl.StringVar(&profile, "profile", "", "new profile")
	fl.StringVar(&description, "description", "", "new description")
	fl.BoolVar(&disable, "disable", false, "stop deliveries (events are dead-lettered with the reason, replayable)")
	fl.StringVar(&disabledReason, "reason", "disabled by an operator", "why, with --disable")
	fl.BoolVar(&enable, "enable", false, "resume deliveries")
	cmd.MarkFlagsMutuallyExclusive("disable", "enable")
	return cmd
}

func newSubsRotateCmd(g *globals) *cobra.Command {
	var overlap time.Duration
	var secret string
	cmd := &cobra.Command{
		Use:   "rotate-secret <subscription-id>",
		Short: "Make a new signing secret; the old ones keep signing for --overlap; prints the new secret once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, _, tenant, done, err := g.subscription(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			s, err := store.Rotate(cmd.Context(), tenant, args[0], overlap, secret)
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

func newSubsTestCmd(g *globals) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "test <subscription-id>",
		Short: "Send a webhook.test event through the pipeline and report its first attempt",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, js, tenant, done, err := g.subscription(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			res, err := attempts.NewLog(js, slog.New(slog.DiscardHandler)).SendTest(cmd.Context(), tenant, args[0], wait)
			if errors.Is(err, attempts.ErrNoAttempt) {
				return fmt.Errorf("no attempt within %s (is 'scanwire run' running?); the test event %s stays queued", wait, res.EventID)
			}
			if err != nil {
				return err
			}
			a := res.Attempt
			fmt.Fprintf(cmd.OutOrStdout(), "test event %s, webhook-id %s\nattempt %d: %s in %.1f ms\n", res.EventID, res.WebhookID, a.Attempt, describe(*a), a.LatencyMS)
			if a.Response != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "response: %s\n", strings.TrimSpace(a.Response))
			}
			if a.Outcome != attempts.OutcomeDelivered {
				return fmt.Errorf("the test delivery failed (%s)", a.Outcome)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the first attempt")
	return cmd
}

func describe(a attempts.Attempt) string {
	s := fmt.Sprintf("HTTP %d", a.Status)
	if a.Error != "" {
		s = a.Error
	}
	s += ", " + a.Outcome
	if a.RetryIn != "" {
		s += " (retry in " + a.RetryIn + ")"
	}
	return s
}
