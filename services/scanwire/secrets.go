package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/natsauth"
	"github.com/scanwire/scanwire/internal/natsx"
	"github.com/scanwire/scanwire/internal/secrets"
)

func newSecretsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Keys that seal the signing secrets at rest (" + secrets.EnvKey + ") and the NATS credentials",
		Long: `Signing secrets (of subscriptions and tenants) are stored in KV sealed with
AES-256-GCM under the first key of ` + secrets.EnvKey + ` (base64 keys of 32 bytes,
separated by commas). To rotate: put a new key first and keep the old one
after it, restart scanwire, run 'scanwire secrets rekey', then drop the old
key.`,
	}
	cmd.AddCommand(newSecretsKeygenCmd(), newSecretsRekeyCmd(g), newSecretsNATSCmd())
	return cmd
}

func newSecretsKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "keygen",
		Short:   "Print a new key for " + secrets.EnvKey,
		Example: "  export " + secrets.EnvKey + "=$(scanwire secrets keygen)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), secrets.NewKey())
			return nil
		},
	}
}

func newSecretsRekeyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rekey",
		Short: "Seal every signing secret again under the first key of " + secrets.EnvKey + ", and purge the revisions that held them as they were",
		Long: `Rekey reads every subscription and tenant record and seals again, under the
first key of ` + secrets.EnvKey + `, each secret that is in plain text or sealed
under another key; the earlier revisions of each document, which hold the
secret as it was, are purged. Run it after putting a new key first in
` + secrets.EnvKey + ` (and restarting scanwire with it); the old key can go
once it has run. It connects as the operator (SCANWIRE_ADMIN_KEY).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keyring, err := secrets.ParseKeyring(os.Getenv(secrets.EnvKey))
			if err != nil {
				return err
			}
			nc, js, err := g.connect(cliConnName)
			if err != nil {
				return err
			}
			defer nc.Close()
			for _, bucket := range []string{natsx.BucketSubscriptions, natsx.BucketTenants} {
				rewritten, read, err := secrets.Rekey(cmd.Context(), js, bucket, keyring, secrets.DefaultFields)
				if err != nil {
					return fmt.Errorf("rekey %s: %w (%d of %d read were sealed again)", bucket, err, rewritten, read)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d of %d documents sealed again under key %s\n", bucket, rewritten, read, keyring.Current())
			}
			return nil
		},
	}
}

func newSecretsNATSCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "nats",
		Short: "Print new NATS credentials for the services and the auth callout, as an env file",
		Long: `The NATS server of nats.conf and every scanwire process that joins it read
these variables: each service connects as its own user with its password,
and a process with API keys answers the server's auth callout, signing with
the issuer's seed (the server trusts its public key). Keep the file secret.`,
		Example: "  scanwire secrets nats > nats.env",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env := natsauth.Credentials{}.Complete().Env()
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "# NATS credentials of scanwire (scanwire secrets nats). Secret: keep out of the repository.")
			for _, name := range natsauth.EnvNames() {
				fmt.Fprintf(out, "%s=%s\n", name, env[name])
			}
			return nil
		},
	}
}
