// Package natsxtest gives tests of NATS-backed code what they need: a real
// embedded nats-server with JetStream (its store in the test's temporary
// directory) and clients of it, all torn down when the test ends. Every
// call starts nothing shared: tests that each start their own server may
// run in parallel.
package natsxtest

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scanwire/scanwire/internal/natsx"
)

// Server starts an embedded nats-server with JetStream on a free port of
// 127.0.0.1 and shuts it down when t ends. Its log is discarded.
func Server(t testing.TB) *server.Server {
	t.Helper()
	ns, err := natsx.StartServer(natsx.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"}, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// Connect returns a JetStream client of ns, connected in-process and
// closed when t ends (before ns shuts down, when ns came from Server
// under the same t).
func Connect(t testing.TB, ns *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := natsx.Connect(ns.ClientURL(), t.Name(), ns, discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := natsx.JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// JetStream starts a server (Server) with scanwire's streams and buckets
// (natsx.DefaultTopology) and returns a client of it (Connect).
func JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	js := Connect(t, Server(t))
	if err := natsx.DefaultTopology().Ensure(t.Context(), js); err != nil {
		t.Fatal(err)
	}
	return js
}

// KeyValue returns the bucket named bucket (natsx.BucketLimits and so on)
// of js, failing t when it does not exist.
func KeyValue(t testing.TB, js jetstream.JetStream, bucket string) jetstream.KeyValue {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatalf("bucket %s: %v", bucket, err)
	}
	return kv
}

// PutJSON stores v as JSON under key in kv, as it is: as an operator
// writing the bucket by hand would, with no store's checks.
func PutJSON(t testing.TB, kv jetstream.KeyValue, key string, v any) {
	t.Helper()
	doc, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), key, doc); err != nil {
		t.Fatal(err)
	}
}

// Messages returns what stream holds on subjects starting with prefix ("":
// all of it), oldest first, read message by message so that nothing is
// consumed or acknowledged.
func Messages(t testing.TB, js jetstream.JetStream, stream, prefix string) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(m.Subject, prefix) {
			out = append(out, m)
		}
	}
	return out
}

// Eventually polls cond every 10ms until it holds, failing t after 10s
// with what it was waiting for.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
