package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/dlq"
)

func newDLQCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List and replay dead letters (jobs given up on, with the reason)",
	}
	cmd.AddCommand(newDLQListCmd(g), newDLQReplayCmd(g))
	return cmd
}

func newDLQListCmd(g *globals) *cobra.Command {
	var tenant, sub string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sub != "" && tenant == "" {
				return errors.New("--subscription needs --tenant")
			}
			if err := checkTokenFlag("--tenant", tenant); err != nil {
				return err
			}
			if err := checkTokenFlag("--subscription", sub); err != nil {
				return err
			}
			dlq, nc, err := g.deadLetters()
			if err != nil {
				return err
			}
			defer nc.Close()
			entries, err := dlq.List(cmd.Context(), tenant, sub, limit)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), entries)
			}
			return printDeadLetters(cmd.OutOrStdout(), entries)
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant")
	cmd.Flags().StringVar(&sub, "subscription", "", "only this subscription (with --tenant)")
	cmd.Flags().IntVar(&limit, "limit", 100, "newest entries to show")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printDeadLetters(w io.Writer, entries []dlq.Entry) error {
	tw := newTable(w, "ID\tDEAD AT\tTENANT\tSUBSCRIPTION\tEVENT\tATTEMPTS\tREASON")
	for _, e := range entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", e.ID, e.DeadAt.Format(time.RFC3339), e.Job.Tenant, e.Job.SubscriptionID, e.Job.EventID, e.Attempts, e.Reason)
	}
	return tw.Flush()
}

func newDLQReplayCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "replay <id> [<id>...]",
		Short: "Deliver dead letters again: a fresh delivery with the same webhook-id",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseDeadLetterIDs(args)
			if err != nil {
				return err
			}
			dlq, nc, err := g.deadLetters()
			if err != nil {
				return err
			}
			defer nc.Close()
			for _, id := range ids {
				job, err := dlq.Replay(cmd.Context(), "", id)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "replayed %d: %s to %s (webhook-id %s)\n", id, job.EventID, job.SubscriptionID, job.WebhookID)
			}
			return nil
		},
	}
}

// parseDeadLetterIDs reads the ID column values of 'scanwire dlq list'.
func parseDeadLetterIDs(args []string) ([]uint64, error) {
	ids := make([]uint64, 0, len(args))
	for _, a := range args {
		id, err := strconv.ParseUint(a, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("%q is not a dead letter id: a positive integer, the ID column of 'scanwire dlq list'", a)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
