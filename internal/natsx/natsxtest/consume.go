package natsxtest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/natsx"
)

// Settlement is what the consume loop reported of one message once it
// settled it.
type Settlement struct {
	Subject string
	Outcome natsx.Outcome
	Err     error
}

// Settled records the settlements of a consume loop started by Consume.
type Settled struct {
	mu  sync.Mutex
	got []Settlement
}

// All returns the settlements so far.
func (l *Settled) All() []Settlement {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// Wait returns the first n settlements once there are n.
func (l *Settled) Wait(t testing.TB, n int) []Settlement {
	t.Helper()
	var got []Settlement
	Eventually(t, fmt.Sprintf("%d settled messages", n), func() bool {
		got = l.All()
		return len(got) >= n
	})
	return got[:n]
}

// Consume runs the real consume loop (natsx.Consume, which settles every
// outcome: stores copies, acks, naks, terms) over cons with handle and a
// service's settled hook, as the service's Run does, with four workers,
// until t ends; it records every settlement.
func Consume(t testing.TB, js jetstream.JetStream, cons jetstream.Consumer, handle natsx.Handler,
	hook func(context.Context, jetstream.Msg, natsx.Outcome, error)) *Settled {
	t.Helper()
	log := &Settled{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = natsx.Consume(ctx, cons, handle, natsx.Options{Workers: 4, JS: js, Log: discard(),
			Settled: func(ctx context.Context, msg jetstream.Msg, o natsx.Outcome, err error) {
				hook(ctx, msg, o, err)
				log.mu.Lock()
				log.got = append(log.got, Settlement{Subject: msg.Subject(), Outcome: o, Err: err})
				log.mu.Unlock()
			}})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return log
}
