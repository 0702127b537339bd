package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/attempts"
	"github.com/scanwire/scanwire/internal/events"
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
			if err := checkSubscriptionID(sub); err != nil {
				return err
			}
			_, js, tenant, done, err := g.subscription(cmd.Context(), sub)
			if err != nil {
				return err
			}
			defer done()
			list, err := attemptLog(js).List(cmd.Context(), attempts.Query{Tenant: tenant, SubscriptionID: sub, EventID: eventID, Limit: limit})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			return printAttempts(cmd.OutOrStdout(), list)
		},
	}
	cmd.Flags().StringVar(&sub, "subscription", "", "subscription id (required)")
	cmd.Flags().StringVar(&eventID, "event", "", "only this event's attempts")
	cmd.Flags().IntVar(&limit, "limit", 100, "newest records to show")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = cmd.MarkFlagRequired("subscription")
	return cmd
}

// attemptLog is the attempt log over js for reading. Only its writer logs,
// and the CLI does not run it, so its logger discards.
func attemptLog(js jetstream.JetStream) *attempts.Log {
	return attempts.NewLog(js, slog.New(slog.DiscardHandler))
}

func printAttempts(w io.Writer, list []attempts.Attempt) error {
	tw := newTable(w, "TIME\tEVENT\tTYPE\tATTEMPT\tRESULT\tLATENCY\tRESPONSE")
	for _, a := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%.1fms\t%s\n", a.Time.Format(time.RFC3339), a.EventID, a.EventType, a.Attempt, describe(a), a.LatencyMS, oneLine(a.Response, 60))
	}
	return tw.Flush()
}

// checkSubscriptionID refuses, before anything is read, what cannot be a
// subscription id: the id becomes a KV key and a subject token, where "*"
// or ">" would be a wildcard over other subscriptions and "." or " " an
// error of NATS's.
func checkSubscriptionID(id string) error {
	if !strings.HasPrefix(id, "sub_") || !events.ValidToken(id) {
		return fmt.Errorf("%q is not a subscription id: use sub_<ULID>, the ID column of 'scanwire subs list'", id)
	}
	return nil
}

// subscriptionIDArg takes one argument, a subscription id
// (checkSubscriptionID).
func subscriptionIDArg(cmd *cobra.Command, args []string) error {
	if err := cobra.ExactArgs(1)(cmd, args); err != nil {
		return err
	}
	return checkSubscriptionID(args[0])
}

// checkTokenFlag refuses a flag's value that would become a wildcard or
// a NATS error in a subject filter or KV key; "" (not given) passes.
func checkTokenFlag(flag, v string) error {
	if v == "" {
		return nil
	}
	return events.CheckToken(flag, v)
}

// tokenArg takes one argument that becomes a subject token or a KV key
// (a tenant, a scan id), named what in the error.
func tokenArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(1)(cmd, args); err != nil {
			return err
		}
		return events.CheckToken(what, args[0])
	}
}
