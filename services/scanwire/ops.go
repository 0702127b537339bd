package main

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/jobs"
	"github.com/scanwire/scanwire/internal/limits"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/tenants"
)

func newAttemptsCmd(g *globals) *cobra.Command {
	var sub, eventID string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "attempts --subscription <id>",
		Short: "Read the attempt log of a subscription (and of one event with --event)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, js, tenant, done, err := g.subscription(cmd.Context(), sub)
			if err != nil {
				return err
			}
			defer done()
			list, err := attempts.NewLog(js, slog.New(slog.DiscardHandler)).List(cmd.Context(), attempts.Query{Tenant: tenant, SubscriptionID: sub, EventID: eventID, Limit: limit})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tEVENT\tTYPE\tATTEMPT\tRESULT\tLATENCY\tRESPONSE")
			for _, a := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%.1fms\t%s\n", a.Time.Format(time.RFC3339), a.EventID, a.EventType, a.Attempt, describe(a), a.LatencyMS, oneLine(a.Response, 60))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&sub, "subscription", "", "subscription id (required)")
	cmd.Flags().StringVar(&eventID, "event", "", "only this event's attempts")
	cmd.Flags().IntVar(&limit, "limit", 100, "newest records to show")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = cmd.MarkFlagRequired("subscription")
	return cmd
}

func newDLQCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List and replay dead letters (jobs given up on, with the reason)",
	}
	var tenant, sub string
	var limit int
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dlq, nc, err := g.deadLetters()
			if err != nil {
				return err
			}
			defer nc.Close()
			if sub != "" && tenant == "" {
				return fmt.Errorf("--subscription needs --tenant")
			}
			entries, err := dlq.List(cmd.Context(), tenant, sub, limit)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), entries)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tDEAD AT\tTENANT\tSUBSCRIPTION\tEVENT\tATTEMPTS\tREASON")
			for _, e := range entries {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", e.ID, e.DeadAt.Format(time.RFC3339), e.Job.Tenant, e.Job.SubscriptionID, e.Job.EventID, e.Attempts, e.Reason)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&tenant, "tenant", "", "only this tenant")
	list.Flags().StringVar(&sub, "subscription", "", "only this subscription (with --tenant)")
	list.Flags().IntVar(&limit, "limit", 100, "newest entries to show")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	replay := &cobra.Command{
		Use:   "replay <id> [<id>...]",
		Short: "Deliver dead letters again: a fresh delivery with the same webhook-id",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dlq, nc, err := g.deadLetters()
			if err != nil {
				return err
			}
			defer nc.Close()
			for _, a := range args {
				id, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return fmt.Errorf("%q is not a dead letter id (the ID column of 'scanwire dlq list')", a)
				}
				job, err := dlq.Replay(cmd.Context(), "", id)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "replayed %d: %s to %s (webhook-id %s)\n", id, job.EventID, job.SubscriptionID, job.WebhookID)
			}
			return nil
		},
	}
	cmd.AddCommand(list, replay)
	return cmd
}

func (g *globals) deadLetters() (*jobs.DeadLetters, *nats.Conn, error) {
	nc, js, err := g.connect()
	if err != nil {
		return nil, nil, err
	}
	return jobs.NewDeadLetters(js), nc, nil
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func newScansCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "scans", Short: "What the per-scan limits did"}
	var tenant string
	var asJSON bool
	stats := &cobra.Command{
		Use:   "stats <scan-id> --tenant <tenant>",
		Short: "Per subscription: findings of a scan admitted and suppressed by the limits, by finding type",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			kv, err := js.KeyValue(cmd.Context(), natsx.BucketLimits)
			if err != nil {
				return err
			}
			list, err := limits.New(kv).ScanStats(cmd.Context(), tenant, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SUBSCRIPTION\tADMITTED\tSUPPRESSED\tBY TYPE (admitted/suppressed)")
			for _, s := range list {
				var parts []string
				for t, ts := range s.ByType {
					parts = append(parts, fmt.Sprintf("%s %d/%d", t, ts.Admitted, ts.Suppressed))
				}
				slices.Sort(parts)
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", s.SubscriptionID, s.Admitted, s.Suppressed, strings.Join(parts, ", "))
			}
			return tw.Flush()
		},
	}
	stats.Flags().StringVar(&tenant, "tenant", "", "tenant of the scan (required)")
	stats.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = stats.MarkFlagRequired("tenant")
	cmd.AddCommand(stats)
	return cmd
}

func newTenantsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenants", Short: "Tenant records: partners and callback signing secrets (the KV bucket 'tenants')"}
	var partner string
	set := &cobra.Command{
		Use:     "set <tenant> --partner <tenant>",
		Short:   "Make a tenant a customer of a partner (--partner '' removes it)",
		Example: "  scanwire tenants set acme --partner mssp-1",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, nc, err := g.tenantStore(cmd)
			if err != nil {
				return err
			}
			defer nc.Close()
			t, err := store.Change(cmd.Context(), args[0], func(t *tenants.Tenant) error { t.Partner = partner; return nil })
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "tenant %s: partner %q\n", t.Tenant, t.Partner)
			return nil
		},
	}
	set.Flags().StringVar(&partner, "partner", "", "the partner tenant whose subscriptions with include_customer_events hear this tenant's events")
	_ = set.MarkFlagRequired("partner")
	var rotate bool
	secret := &cobra.Command{
		Use:   "signing-secret <tenant>",
		Short: "Print (or --rotate) the secret that signs the tenant's per-scan callbacks",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, nc, err := g.tenantStore(cmd)
			if err != nil {
				return err
			}
			defer nc.Close()
			s, err := store.SigningSecret(cmd.Context(), args[0])
			if rotate {
				s, err = store.RotateSigningSecret(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), s)
			return nil
		},
	}
	secret.Flags().BoolVar(&rotate, "rotate", false, "replace it; the old one stops signing at once")
	cmd.AddCommand(set, secret)
	return cmd
}

func (g *globals) tenantStore(cmd *cobra.Command) (*tenants.Store, *nats.Conn, error) {
	nc, js, err := g.connect()
	if err != nil {
		return nil, nil, err
	}
	kv, err := js.KeyValue(cmd.Context(), natsx.BucketTenants)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("bucket %s: %w (start 'scanwire run' once to create it)", natsx.BucketTenants, err)
	}
	return tenants.NewStore(kv), nc, nil
}
