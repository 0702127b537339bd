package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/scanwire/scanwire/internal/app"
	"github.com/scanwire/scanwire/services/gateway"
)

// envKeysFile names a file of the API keys, which `run` reads again on
// SIGHUP: keys added or removed take effect at the next request or NATS
// connection, without a restart (of scanwire or of its NATS).
const envKeysFile = "SCANWIRE_KEYS_FILE"

// loadKeys reads the API keys: from the file SCANWIRE_KEYS_FILE names, an
// env file of SCANWIRE_ADMIN_KEY= and SCANWIRE_API_KEYS= lines (the form
// of deploy/gateway.env.example), or else from those variables.
func loadKeys() (gateway.Keys, error) {
	path := os.Getenv(envKeysFile)
	if path == "" {
		return gateway.ParseKeys(os.Getenv("SCANWIRE_ADMIN_KEY"), os.Getenv("SCANWIRE_API_KEYS"))
	}
	if os.Getenv("SCANWIRE_ADMIN_KEY") != "" || os.Getenv("SCANWIRE_API_KEYS") != "" {
		return gateway.Keys{}, fmt.Errorf("%s and SCANWIRE_ADMIN_KEY or SCANWIRE_API_KEYS are both set: give the keys one way", envKeysFile)
	}
	f, err := os.Open(path)
	if err != nil {
		return gateway.Keys{}, fmt.Errorf("%s: %w", envKeysFile, err)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		name = strings.TrimSpace(name)
		if !ok || (name != "SCANWIRE_ADMIN_KEY" && name != "SCANWIRE_API_KEYS") {
			return gateway.Keys{}, fmt.Errorf("%s %s line %d: want SCANWIRE_ADMIN_KEY=... or SCANWIRE_API_KEYS=... (the line is not shown, as it may hold a key)", envKeysFile, path, n)
		}
		vars[name] = strings.Trim(strings.TrimSpace(value), `'"`)
	}
	if err := sc.Err(); err != nil {
		return gateway.Keys{}, fmt.Errorf("%s: %w", envKeysFile, err)
	}
	return gateway.ParseKeys(vars["SCANWIRE_ADMIN_KEY"], vars["SCANWIRE_API_KEYS"])
}

// reloadKeysOnHUP runs the pipeline until ctx ends or a service fails,
// reading the keys file again at each SIGHUP. A file that does not parse
// is logged and the keys stay as they were.
func reloadKeysOnHUP(log *slog.Logger) func(context.Context, *app.App) error {
	return func(ctx context.Context, a *app.App) error {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return nil
			case err := <-a.Err():
				return err
			case <-hup:
				k, err := loadKeys()
				if err == nil && k.Empty() {
					err = errors.New("no key in it")
				}
				if err != nil {
					log.Error("API keys not reloaded; the keys in use stay", "err", err)
					continue
				}
				a.SetKeys(k)
				log.Info("API keys reloaded", "file", os.Getenv(envKeysFile), "admin", k.Admin != "", "tenants", len(k.Tenants))
			}
		}
	}
}
