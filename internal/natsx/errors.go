package natsx

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream API error codes of a message the stream will never take.
const (
	errCodeMessageTooLarge jetstream.ErrorCode = 10054 // message size exceeds maximum allowed
	errCodeHeaderTooLarge  jetstream.ErrorCode = 10097 // header size exceeds maximum allowed of 64k
)

// TooLarge reports whether a publish failed because the message can never
// be stored as it is: larger than the stream's or the server's cap, or
// with headers over JetStream's 64 KiB. Trying it again would loop; the
// caller must store something smaller or give up with a reason.
func TooLarge(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == errCodeMessageTooLarge || api.ErrorCode == errCodeHeaderTooLarge)
}

// HeaderSize is how many bytes h takes on the wire, as JetStream counts
// it against MaxHeaderSize.
func HeaderSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// JetStream API error codes of a cluster that cannot place a stream (yet).
const (
	errCodeInsufficientResources jetstream.ErrorCode = 10023 // the cluster has too few servers for the replicas
	errCodeReplicasNotSupported  jetstream.ErrorCode = 10074 // replicas > 1 on a server that is not clustered
	errCodeTemporarilyDown       jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable (no meta leader)
)

// TooFewServers reports whether creating or updating a stream failed
// because the cluster has fewer JetStream servers than its replicas.
func TooFewServers(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == errCodeInsufficientResources || api.ErrorCode == errCodeReplicasNotSupported)
}

// NotClustered reports whether a stream asked for replicas of a server
// that is not part of a cluster: no wait will change that.
func NotClustered(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == errCodeReplicasNotSupported
}

// NotReady reports whether a JetStream call failed because the cluster is
// not ready yet or for the moment: no meta leader, no quorum, no answer.
// Trying again later may succeed.
func NotReady(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == errCodeTemporarilyDown {
		return true
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}
