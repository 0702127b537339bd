package natsauth

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// calloutSubject is where the server asks who a connecting client is
// (nats-server's auth callout).
const calloutSubject = "$SYS.REQ.USER.AUTH"

// calloutQueue lets several scanwire processes answer the callout, each
// request once.
const calloutQueue = "scanwire-auth"

// Keys decides who a password belongs to: the admin (the operator), or a
// tenant. gateway.Keys is one.
type Keys interface {
	// Identify returns the tenant whose key password is, or admin for the
	// admin key; ok is false for an unknown key.
	Identify(password string) (tenant string, admin, ok bool)
}

// Callout answers the server's auth callout from the API keys: user
// "admin" with the admin key is the operator, user <tenant> with that
// tenant's key is a scanner of that tenant; anyone else is refused.
type Callout struct {
	issuer nkeys.KeyPair
	keys   atomic.Pointer[Keys]
	log    *slog.Logger
	// lifetime is how long a connection it lets in lasts before the
	// server closes it, so that the client connects, and is judged,
	// again: a key removed loses its connections within it too.
	lifetime time.Duration
}

// DefaultLifetime is how long a scanner's or the operator's connection
// lasts before it must be judged again.
const DefaultLifetime = time.Hour

// StartCallout subscribes nc (a connection of UserAuth, in AuthAccount)
// to the callout requests, until nc closes. issuer signs the answers; the
// server trusts its public key (Credentials.Issuer). A connection it lets
// in lasts lifetime (DefaultLifetime when zero), then connects again.
func StartCallout(nc *nats.Conn, issuer nkeys.KeyPair, keys Keys, lifetime time.Duration, log *slog.Logger) (*Callout, error) {
	c := &Callout{issuer: issuer, log: log, lifetime: cmp.Or(lifetime, DefaultLifetime)}
	c.SetKeys(keys)
	if _, err := nc.QueueSubscribe(calloutSubject, calloutQueue, c.answer); err != nil {
		return nil, fmt.Errorf("auth callout: %w", err)
	}
	if err := nc.Flush(); err != nil {
		return nil, fmt.Errorf("auth callout: %w", err)
	}
	return c, nil
}

// SetKeys replaces the keys: a key removed is refused at its next
// connection (and its connections end within their lifetime), one added is
// accepted.
func (c *Callout) SetKeys(keys Keys) { c.keys.Store(&keys) }

// errRefused is what a refused client is told: not which of user and
// key was wrong.
var errRefused = errors.New("unknown user or key: connect as your tenant with its API key (SCANWIRE_API_KEYS), or as admin with SCANWIRE_ADMIN_KEY")

func (c *Callout) answer(m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil {
		c.log.Warn("auth callout: undecodable request", "err", err)
		return // the server times the client out
	}
	user := req.ConnectOptions.Username
	perms, err := c.judge(user, req.ConnectOptions.Password)
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	if err != nil {
		c.log.Info("nats connection refused", "user", user, "host", req.ClientInformation.Host)
		resp.Error = err.Error()
	} else {
		uc := jwt.NewUserClaims(req.UserNkey)
		uc.Name = user
		uc.Audience = Account
		uc.Pub.Allow.Add(perms.Publish...)
		uc.Sub.Allow.Add(perms.Subscribe...)
		if perms.Responses {
			uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
		}
		uc.Expires = time.Now().Add(c.lifetime).Unix()
		if resp.Jwt, err = uc.Encode(c.issuer); err != nil {
			c.log.Error("auth callout: cannot sign the user", "err", err)
			resp.Jwt, resp.Error = "", "scanwire could not sign the user"
		}
	}
	token, err := resp.Encode(c.issuer)
	if err != nil {
		c.log.Error("auth callout: cannot sign the answer", "err", err)
		return
	}
	_ = m.Respond([]byte(token))
}

// judge returns the permissions of user with password, or errRefused.
func (c *Callout) judge(user, password string) (Permissions, error) {
	if user == "" || password == "" {
		return Permissions{}, errRefused
	}
	tenant, admin, ok := (*c.keys.Load()).Identify(password)
	switch {
	case !ok:
		return Permissions{}, errRefused
	case admin && user == UserOperator:
		return Operator(), nil
	case !admin && user == tenant:
		return Tenant(tenant), nil
	}
	return Permissions{}, errRefused
}
