package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/telemetry"
	"github.com/scanwire/scanwire/services/delivery"
)

// globals are the flags every command shares.
type globals struct {
	logFormat    string
	logLevel     string
	natsURL      string
	natsCA       string
	allowPrivate bool
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "scanwire",
		Short: "Security-scanner events in, signed webhooks out",
		Long: `scanwire turns security-scanner events (CloudEvents on NATS JetStream) into
signed webhooks. Scanners publish scan.started, scan.finished, finding.high and
finding.medium events; scanwire matches them to subscriptions, applies per-scan
limits, and delivers signed webhooks with retries and a dead-letter queue.

Start here:
  scanwire demo                      the whole pipeline with a sample scanner and receiver
  scanwire run                       run the pipeline (embedded NATS under ~/.local/share/scanwire)
  scanwire subs create --help        subscribe a webhook endpoint
  scanwire publish --help            publish an event as a scanner would`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       delivery.Version,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.BoolVar(&g.allowPrivate, "allow-private-targets", false, "let subscriptions use http and reach loopback and private addresses (local development and tests only; link-local and cloud metadata stay blocked)")
	pf.StringVar(&g.natsURL, "nats", envOr("SCANWIRE_NATS", ""), "URL of an external NATS server (env SCANWIRE_NATS, which run and demo ignore); client commands default to nats://127.0.0.1:4222")
	pf.Lookup("nats").DefValue = natsx.RedactURL(g.natsURL) // --help shows SCANWIRE_NATS without its credentials
	pf.StringVar(&g.natsCA, "nats-ca", envOr("SCANWIRE_NATS_CA", ""), "PEM file of the certificate authority NATS's TLS certificate must chain to (env SCANWIRE_NATS_CA); default: the system's")
	root.AddCommand(newRunCmd(g), newDemoCmd(g), newPublishCmd(g), newSubsCmd(g), newAttemptsCmd(g), newDLQCmd(g), newScansCmd(g), newTenantsCmd(g))
	root.AddCommand(newRejectedCmd(g), newSecretsCmd(g))
	root.InitDefaultCompletionCmd() // now rather than at Execute, so that strict sees it
	strict(root)
	return root
}

// logger builds the process logger from the flags.
func (g *globals) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: tidyAttr}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(telemetry.LogHandler(slog.NewTextHandler(w, opts))), nil
	case "json":
		return slog.New(telemetry.LogHandler(slog.NewJSONHandler(w, opts))), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", g.logFormat)
}

// defaultDataDir is where `scanwire run` keeps its store without --data:
// $XDG_DATA_HOME/scanwire, or ~/.local/share/scanwire. It is outside any
// working tree on purpose: the store holds every signing secret, and a
// directory under the repository is one file server away from being
// served. Without a home directory it is "", and run asks for --data.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "scanwire")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".local", "share", "scanwire")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// tidyAttr keeps log lines to what they say: an attribute whose value is
// nil (an "err" that is no error) is left out, and durations are rounded
// for people (roundDuration) rather than printed to the nanosecond.
func tidyAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindAny:
		if a.Value.Any() == nil {
			return slog.Attr{}
		}
	case slog.KindDuration:
		a.Value = slog.DurationValue(roundDuration(a.Value.Duration()))
	}
	return a
}

// strict makes every command of the tree behave like a Unix tool, whoever
// wrote it: a command that only groups subcommands (subs, dlq, ...) fails
// on an unknown one with a suggestion, instead of printing its help and
// exiting 0 as cobra does; a count flag refuses a negative number, and a
// duration flag a negative duration; a value that is not a duration is
// answered with the units a duration takes, rather than Go's parser's
// words or the schema's regular expression.
func strict(cmd *cobra.Command) {
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = knownSubcommand
		cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	for _, fs := range []*pflag.FlagSet{cmd.Flags(), cmd.PersistentFlags()} {
		fs.VisitAll(func(f *pflag.Flag) {
			if _, done := f.Value.(*checkedFlag); done {
				return
			}
			switch {
			case f.Value.Type() == "duration":
				f.Value = &checkedFlag{Value: f.Value, check: checkDuration}
			case f.Value.Type() == "int":
				f.Value = &checkedFlag{Value: f.Value, check: checkCount}
			case f.Name == "retry" && f.Value.Type() == "stringSlice":
				f.Value = &checkedFlag{Value: f.Value, check: checkSchedule}
			}
		})
	}
	for _, c := range cmd.Commands() {
		strict(c)
	}
}

// knownSubcommand refuses the arguments of a command that only groups
// subcommands: any argument is a subcommand that does not exist.
func knownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, which only its own lookup applies
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
	}
	return fmt.Errorf("%s\nRun '%s --help' for its commands", msg, cmd.CommandPath())
}

// checkedFlag is a flag value checked after it is parsed; pflag names the
// flag and the argument in front of the check's error.
type checkedFlag struct {
	pflag.Value
	check func(string) error
}

func (f *checkedFlag) Set(s string) error {
	if err := f.check(s); err != nil {
		return err
	}
	return f.Value.Set(s)
}

// durationUnits is what a duration takes, for messages.
const durationUnits = "a number and a unit, one of ms, s, m or h (such as 500ms, 30s, 5m or 24h; a day is 24h)"

func checkDuration(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("not a duration: give %s", durationUnits)
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	return nil
}

func checkCount(s string) error {
	if n, err := strconv.Atoi(s); err == nil && n < 0 {
		return errors.New("must not be negative")
	}
	return nil // pflag words a value that is not a number
}

// checkSchedule checks the delays of a retry schedule (--retry 5s,5m,30m).
func checkSchedule(s string) error {
	for _, d := range strings.Split(s, ",") {
		if d = strings.TrimSpace(d); d == "" {
			continue
		}
		if v, err := time.ParseDuration(d); err != nil || v <= 0 {
			return fmt.Errorf("%q is not a positive duration: give each delay as %s", d, durationUnits)
		}
	}
	return nil
}
