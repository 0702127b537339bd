package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/limits"
	"github.com/scanwire/scanwire/internal/natsx"
)

func newScansCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "scans", Short: "What the per-scan limits did"}
	cmd.AddCommand(newScansStatsCmd(g))
	return cmd
}

func newScansStatsCmd(g *globals) *cobra.Command {
	var tenant string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats <scan-id> --tenant <tenant>",
		Short: "Per subscription: findings of a scan admitted and suppressed by the limits, by finding type",
		Args:  tokenArg("scan id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := events.CheckToken("--tenant", tenant); err != nil {
				return err
			}
			nc, js, err := g.connect(cliConnName)
			if err != nil {
				return err
			}
			defer nc.Close()
			kv, err := js.KeyValue(cmd.Context(), natsx.BucketLimits)
			if err != nil {
				return err
			}
			list, err := limits.New(js, kv).ScanStats(cmd.Context(), tenant, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), list)
			}
			return printScanStats(cmd.OutOrStdout(), list)
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant of the scan (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

func printScanStats(w io.Writer, list []limits.Stats) error {
	tw := newTable(w, "SUBSCRIPTION\tCUSTOMER\tADMITTED\tSUPPRESSED\tBY TYPE (admitted/suppressed)")
	for _, s := range list {
		var parts []string
		for t, ts := range s.ByType {
			parts = append(parts, fmt.Sprintf("%s %d/%d", t, ts.Admitted, ts.Suppressed))
		}
		slices.Sort(parts)
		customer := s.Customer
		if customer == "" {
			customer = "-" // the tenant's own scan
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", s.SubscriptionID, customer, s.Admitted, s.Suppressed, strings.Join(parts, ", "))
	}
	return tw.Flush()
}
