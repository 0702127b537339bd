package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/events"
	"github.com/scanwire/scanwire/internal/rejected"
)

func newRejectedCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rejected",
		Short: "List rejected events (refused by fan-out, with the reason)",
	}
	cmd.AddCommand(newRejectedListCmd(g))
	return cmd
}

func newRejectedListCmd(g *globals) *cobra.Command {
	var tenant string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List rejected events, newest first",
		Long: `List reads the REJECTED stream: every event fan-out refused, kept as the
scanner sent it, with the reason. The SEQ column is its place in REJECTED;
ORIGINAL is where it was published and its sequence in SCAN_EVENTS.`,
		Example: "  scanwire rejected list --tenant acme --limit 10",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tenant != "" {
				if err := events.CheckToken("--tenant", tenant); err != nil {
					return err
				}
			}
			nc, js, err := g.connect(cliConnName)
			if err != nil {
				return err
			}
			defer nc.Close()
			list, err := rejected.New(js).List(cmd.Context(), tenant, limit)
			if err != nil {
				return err
			}
			if asJSON {
				if list == nil {
					list = []rejected.Entry{}
				}
				return printJSON(cmd.OutOrStdout(), list)
			}
			return printRejected(cmd.OutOrStdout(), list)
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant")
	cmd.Flags().IntVar(&limit, "limit", rejected.DefaultLimit, "newest entries to show")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (with the start of each body)")
	return cmd
}

func printRejected(w io.Writer, list []rejected.Entry) error {
	tw := newTable(w, "SEQ\tTIME\tTENANT\tCODE\tEVENT\tORIGINAL\tREASON\tBODY")
	for _, e := range list {
		original := e.OriginalSubject
		if e.OriginalSeq != 0 {
			original += " #" + strconv.FormatUint(e.OriginalSeq, 10)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), e.Tenant, e.Code,
			orDash(e.EventID), orDash(original), cutRunes(e.Reason, 100), cutRunes(e.Body, 40))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cutRunes collapses the whitespace of s and cuts it to n characters (never
// inside one), marking a cut with an ellipsis.
func cutRunes(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}
