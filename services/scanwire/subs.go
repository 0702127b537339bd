package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/subscriptions"
	"github.com/scanwire/scanwire/internal/testdelivery"
)

func newSubsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "subs",
		Short: "Manage webhook subscriptions (the NATS KV bucket 'subscriptions')",
		Long: `A subscription sends the events of one tenant that match its event types to
one URL, signed with its secret. These commands read and write the KV bucket
directly; a running scanwire picks changes up within a second.`,
	}
	cmd.AddCommand(newSubsCreateCmd(g), newSubsListCmd(g), newSubsGetCmd(g), newSubsUpdateCmd(g),
		newSubsDeleteCmd(g), newSubsRotateCmd(g), newSubsTestCmd(g))
	return cmd
}

func newSubsCreateCmd(g *globals) *cobra.Command {
	var s subscriptions.Subscription
	var events, schedule, targets []string
	var secret string
	var unsigned bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Subscribe a URL to a tenant's events; prints the signing secret once",
		Example: `  scanwire subs create --tenant acme --url https://hooks.example.com/scanwire \
    --events finding.high,scan.finished
  scanwire subs create --tenant acme --url https://soc.example.com/hook --events 'finding.*' \
    --retry 1s,2s,4s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s.Events = events
			s.Retry.Schedule = schedule
			s.Filter.Targets = targets
			switch {
			case unsigned:
				s.Secrets = []subscriptions.Secret{}
			case secret != "":
				s.Secrets = []subscriptions.Secret{{Secret: secret}}
			}
			c, err := g.subsClient(cmd.Context(), policyRequired, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			created, err := c.store.Create(cmd.Context(), s)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "created %s for tenant %s -> %s\n", created.ID, created.Tenant, created.URL)
			for _, sec := range created.Secrets {
				fmt.Fprintf(out, "signing secret (shown once, keep it now): %s\n", sec.Secret)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&s.Tenant, "tenant", "", "tenant whose events are sent (required)")
	fl.StringVar(&s.URL, "url", "", "https URL that receives the webhooks (required)")
	fl.StringSliceVar(&events, "events", nil, "event types, comma-separated; wildcards such as finding.* allowed (required)")
	fl.StringVar(&s.Profile, "profile", "standard-webhooks", "receiver dialect: standard-webhooks, pwnkemon, plextrac, x-signature, cg, detectify")
	fl.StringVar(&secret, "secret", "", "signing secret (default: generated; standard-webhooks needs whsec_<base64>)")
	fl.BoolVar(&unsigned, "unsigned", false, "send without a signature (only profiles whose document allows it)")
	fl.StringSliceVar(&schedule, "retry", nil, "retry delays after each failed attempt, e.g. 5s,5m,30m (default: the profile's)")
	fl.StringSliceVar(&targets, "targets", nil, "only events whose target matches one of these globs, e.g. *.example.com")
	fl.StringVar(&s.Description, "description", "", "a note for people")
	for _, f := range []string{"tenant", "url", "events"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

func newSubsListCmd(g *globals) *cobra.Command {
	var tenant string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List subscriptions (secrets hidden); invalid documents are shown with the reason",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkTokenFlag("--tenant", tenant); err != nil {
				return err
			}
			c, err := g.subsClient(cmd.Context(), policyIfRunning, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			entries, err := c.store.List(cmd.Context(), tenant)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), listJSON(entries))
			}
			return printSubscriptions(cmd.OutOrStdout(), entries)
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's subscriptions")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printSubscriptions(w io.Writer, entries []subscriptions.Entry) error {
	tw := newTable(w, "ID\tTENANT\tURL\tEVENTS\tPROFILE\tSTATUS")
	for _, e := range entries {
		if e.Err != nil {
			fmt.Fprintf(tw, "%s\t\t\t\t\tINVALID: %v\n", e.Key, e.Err)
			continue
		}
		status := "active"
		if e.Sub.Disabled {
			status = "disabled: " + e.Sub.DisabledReason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Sub.ID, e.Sub.Tenant, e.Sub.URL, strings.Join(e.Sub.Events, ","), e.Sub.Profile, status)
	}
	return tw.Flush()
}

// listJSON is what list --json prints: each subscription redacted, or the
// key of an invalid document with the reason.
func listJSON(entries []subscriptions.Entry) []any {
	out := make([]any, 0, len(entries))
	for _, e := range entries {
		if e.Err != nil {
			out = append(out, map[string]string{"key": e.Key, "invalid": e.Err.Error()})
			continue
		}
		out = append(out, e.Sub.Redacted())
	}
	return out
}

func newSubsGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get <subscription-id>",
		Short: "Show one subscription as JSON (secrets hidden)",
		Args:  subscriptionIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, tenant, err := g.subscriptionFor(cmd.Context(), args[0], policyIfRunning, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			s, _, err := c.store.Get(cmd.Context(), tenant, args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), s.Redacted())
		},
	}
}

func newSubsDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete <subscription-id>",
		Short: "Delete a subscription; its queued jobs are dead-lettered, not dropped",
		Args:  subscriptionIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			store, _, tenant, done, err := g.subscription(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer done()
			if err := store.Delete(cmd.Context(), tenant, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s (tenant %s)\n", args[0], tenant)
			return nil
		},
	}
}

func newSubsTestCmd(g *globals) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "test <subscription-id>",
		Short: "Send a webhook.test event through the pipeline and report its first attempt",
		Args:  subscriptionIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, tenant, err := g.subscriptionFor(cmd.Context(), args[0], policyRequired, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			if !c.pipeline.Runs(app.ServiceFanout) || !c.pipeline.Runs(app.ServiceDelivery) {
				return fmt.Errorf("a test delivery needs fan-out and delivery, and the running scanwire processes run only %s; start them (scanwire run --services)",
					strings.Join(c.pipeline.Services, ","))
			}
			res, err := testdelivery.New(c.js, c.store, attemptLog(c.js)).Send(cmd.Context(), tenant, args[0], wait)
			if errors.Is(err, attempts.ErrNoAttempt) {
				return fmt.Errorf("no attempt within %s; the test event %s stays queued, and delivery will attempt it (its workers may be busy with this endpoint's other jobs)", wait, res.EventID)
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
