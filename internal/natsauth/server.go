package natsauth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nkeys"

	"github.com/scanwire/scanwire/internal/jsonx"
)

// Credentials are the service users' passwords and the key that signs the
// callout's answers. The top-level nats.conf reads the same values from
// the environment (EnvPassword, EnvIssuer): every scanwire process and the
// server must be given the same ones.
type Credentials struct {
	// Passwords of UserAuth and the ServiceUsers.
	Passwords map[string]string
	// Issuer signs the callout's answers; the server trusts its public key.
	Issuer nkeys.KeyPair
	// Route is the password the servers of a cluster of embedded servers
	// (--cluster-listen) give each other, as user RouteUser.
	Route string
}

// RouteUser is the user of the routes between embedded servers, and
// EnvRoutePassword the variable of its password.
const (
	RouteUser        = "scanwire-route"
	EnvRoutePassword = "SCANWIRE_NATS_ROUTE_PASSWORD"
)

// EnvIssuer holds the issuer's seed (an account nkey seed, "SA..."); the
// server's configuration names its public key, EnvIssuerPublic.
const (
	EnvIssuer       = "SCANWIRE_NATS_ISSUER_SEED"
	EnvIssuerPublic = "SCANWIRE_NATS_ISSUER"
)

// envPasswords are the environment variables of the users' passwords.
var envPasswords = map[string]string{
	UserAuth:     "SCANWIRE_NATS_AUTH_PASSWORD",
	UserFanout:   "SCANWIRE_NATS_FANOUT_PASSWORD",
	UserDelivery: "SCANWIRE_NATS_DELIVERY_PASSWORD",
	UserGateway:  "SCANWIRE_NATS_GATEWAY_PASSWORD",
	UserPipeline: "SCANWIRE_NATS_PIPELINE_PASSWORD",
}

// allUsers are the users of a server configuration: the callout's and the
// services'.
var allUsers = slices.Concat([]string{UserAuth}, ServiceUsers)

// EnvNames are the variables of a set of credentials, in the order
// `scanwire secrets nats` prints them: the issuer's seed and public key,
// each user's password, the route password.
func EnvNames() []string {
	names := []string{EnvIssuer, EnvIssuerPublic}
	for _, u := range allUsers {
		names = append(names, EnvPassword(u))
	}
	return append(names, EnvRoutePassword)
}

// Env is c as the environment holds it, each of EnvNames with its value:
// what CredentialsFromEnv reads back, and what the server's configuration
// (nats.conf) names.
func (c Credentials) Env() map[string]string {
	env := map[string]string{EnvRoutePassword: c.Route}
	if c.Issuer != nil {
		seed, _ := c.Issuer.Seed()
		env[EnvIssuer], env[EnvIssuerPublic] = string(seed), publicKey(c.Issuer)
	}
	for _, u := range allUsers {
		env[EnvPassword(u)] = c.Passwords[u]
	}
	return env
}

// EnvPassword is the environment variable of user's password:
// SCANWIRE_NATS_FANOUT_PASSWORD for scanwire.fanout.
func EnvPassword(user string) string { return envPasswords[user] }

// CredentialsFromEnv reads the credentials that are set in the
// environment (getenv); what is not set stays empty (Complete fills it).
func CredentialsFromEnv(getenv func(string) string) (Credentials, error) {
	c := Credentials{Passwords: map[string]string{}}
	for _, u := range allUsers {
		if p := getenv(EnvPassword(u)); p != "" {
			if len(p) < 16 {
				return c, fmt.Errorf("%s: use at least 16 characters", EnvPassword(u))
			}
			c.Passwords[u] = p
		}
	}
	if c.Route = getenv(EnvRoutePassword); c.Route != "" && len(c.Route) < 16 {
		return c, fmt.Errorf("%s: use at least 16 characters", EnvRoutePassword)
	}
	if seed := getenv(EnvIssuer); seed != "" {
		kp, err := nkeys.FromSeed([]byte(seed))
		if err == nil && !nkeys.IsValidPublicAccountKey(publicKey(kp)) {
			err = errors.New("not an account seed (SA...)")
		}
		if err != nil {
			return c, fmt.Errorf("%s: %v (make one with `scanwire secrets nats`)", EnvIssuer, err)
		}
		c.Issuer = kp
	}
	return c, nil
}

// Whole reports whether c has every password and the issuer: nothing for
// Complete to make up.
func (c Credentials) Whole() bool {
	for _, u := range allUsers {
		if c.Passwords[u] == "" {
			return false
		}
	}
	return c.Issuer != nil && c.Route != ""
}

// Complete makes up what c lacks: a random password for each user, a new
// issuer. Made-up ones serve an embedded server and the services of its
// own process; another process (a replica) needs them set in both.
func (c Credentials) Complete() Credentials {
	out := Credentials{Passwords: map[string]string{}, Issuer: c.Issuer, Route: c.Route}
	if out.Route == "" {
		out.Route = randomPassword()
	}
	for _, u := range allUsers {
		if out.Passwords[u] = c.Passwords[u]; out.Passwords[u] == "" {
			out.Passwords[u] = randomPassword()
		}
	}
	if out.Issuer == nil {
		out.Issuer, _ = nkeys.CreateAccount()
	}
	return out
}

func publicKey(kp nkeys.KeyPair) string {
	pub, _ := kp.PublicKey()
	return pub
}

func randomPassword() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ServerConf is the accounts and authorization of a server that scanwire
// closes (the embedded server with keys; the top-level nats.conf says the
// same in the server's own syntax): the scanwire account with JetStream
// and the service users, the auth account with the callout's user, the
// system account, and the callout for everyone else.
func ServerConf(c Credentials) string {
	var users []confUser
	for _, u := range ServiceUsers {
		p, _ := Service(u)
		users = append(users, confUser{User: u, Password: c.Passwords[u], Permissions: confPermissions(p)})
	}
	return mustJSON(map[string]any{
		"accounts": map[string]any{
			Account:       map[string]any{"jetstream": "enabled", "users": users},
			AuthAccount:   map[string]any{"users": []confUser{{User: UserAuth, Password: c.Passwords[UserAuth]}}},
			SystemAccount: map[string]any{},
		},
		"system_account": SystemAccount,
		"authorization": map[string]any{
			"timeout": 5,
			"auth_callout": map[string]any{
				"issuer":     publicKey(c.Issuer),
				"account":    AuthAccount,
				"auth_users": allUsers,
			},
		},
	})
}

// OpenServerConf is the configuration of an embedded server without keys:
// the same accounts, and every client, without credentials, is a user of
// the scanwire account that may do everything. The server then listens
// on loopback only (the caller's rule).
func OpenServerConf() string {
	const open = "scanwire"
	return mustJSON(map[string]any{
		"accounts": map[string]any{
			Account:       map[string]any{"jetstream": "enabled", "users": []confUser{{User: open, Password: randomPassword()}}},
			SystemAccount: map[string]any{},
		},
		"system_account": SystemAccount,
		"no_auth_user":   open,
	})
}

type confUser struct {
	User        string          `json:"user"`
	Password    string          `json:"password"`
	Permissions *confPermission `json:"permissions,omitempty"`
}

type confPermission struct {
	Publish        map[string][]string `json:"publish"`
	Subscribe      map[string][]string `json:"subscribe"`
	AllowResponses bool                `json:"allow_responses,omitempty"`
}

func confPermissions(p Permissions) *confPermission {
	return &confPermission{
		Publish:        map[string][]string{"allow": p.Publish},
		Subscribe:      map[string][]string{"allow": p.Subscribe},
		AllowResponses: p.Responses,
	}
}

// mustJSON writes v as JSON, which the server's configuration parser
// reads, without escaping '>' or '&' (the parser knows no \u escape).
func mustJSON(v any) string {
	b, err := jsonx.Marshal(v)
	if err != nil {
		panic(err) // maps of strings
	}
	return string(b)
}
