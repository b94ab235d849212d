package queue

import (
	"errors"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

var (
	// ErrInvalidName is returned for a schema, table or subject prefix that cannot be used.
	ErrInvalidName = errors.New("queue: invalid name")

	// ErrInvalidMessage is returned by Publish for a message it refuses (priority outside
	// -128..127, empty key); nothing of the batch is published.
	ErrInvalidMessage = errors.New("queue: invalid message")

	// ErrUnsupportedServer is returned when the NATS server does not keep the stream settings
	// jetjobs relies on (nats-server 2.9 or later is needed).
	ErrUnsupportedServer = errors.New("queue: NATS server does not support the stream settings jetjobs needs (nats-server 2.9 or later)")

	// ErrNotLoopback is returned by StartEmbedded for a listen address that is not on loopback.
	ErrNotLoopback = errors.New("queue: embedded NATS listens on loopback only")

	// ErrBadListen is returned by StartEmbedded for a listen address that is not host:port
	// with a port in 0..65535.
	ErrBadListen = errors.New("queue: bad embedded NATS listen address")

	// ErrStopped is returned by Fetch after Stop.
	ErrStopped = errors.New("queue: fetcher stopped")
)

// errCodeStoreFailed is the JetStream error code of a publish the stream refused to store
// (JSStreamStoreFailedF); its description says why.
const errCodeStoreFailed jetstream.ErrorCode = 10077

// storeRefusalPerSubject is the server's description of a publish refused because the subject
// already holds its one message (server/store.go ErrMaxMsgsPerSubject, 2.9 through 2.15).
const storeRefusalPerSubject = "maximum messages per subject exceeded"

// isSubjectFull reports whether err is the server refusing a publish because the key's subject
// already holds a message (MaxMsgsPerSubject 1 with DiscardNewPerSubject).
func isSubjectFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == errCodeStoreFailed &&
		strings.Contains(strings.ToLower(apiErr.Description), storeRefusalPerSubject)
}
