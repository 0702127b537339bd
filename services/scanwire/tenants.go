package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/scanwire/scanwire/internal/tenants"
)

func newTenantsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenants", Short: "Tenant records: partners and callback signing secrets (the KV bucket 'tenants')"}
	cmd.AddCommand(newTenantsSetCmd(g), newTenantsSigningSecretCmd(g))
	return cmd
}

func newTenantsSetCmd(g *globals) *cobra.Command {
	var partner string
	cmd := &cobra.Command{
		Use:     "set <tenant> --partner <tenant>",
		Short:   "Make a tenant a customer of a partner (--partner '' removes it)",
		Example: "  scanwire tenants set acme --partner mssp-1",
		Args:    tokenArg("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, nc, err := g.tenantStore(cmd.Context())
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
	cmd.Flags().StringVar(&partner, "partner", "", "the partner tenant whose subscriptions with include_customer_events hear this tenant's events")
	_ = cmd.MarkFlagRequired("partner")
	return cmd
}

func newTenantsSigningSecretCmd(g *globals) *cobra.Command {
	var rotate bool
	cmd := &cobra.Command{
		Use:   "signing-secret <tenant>",
		Short: "Print (or --rotate) the secret that signs the tenant's per-scan callbacks",
		Args:  tokenArg("tenant"),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, nc, err := g.tenantStore(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			secret := store.SigningSecret
			if rotate {
				secret = store.RotateSigningSecret
			}
			s, err := secret(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), s)
			return nil
		},
	}
	cmd.Flags().BoolVar(&rotate, "rotate", false, "replace it; the old one stops signing at once")
	return cmd
}
