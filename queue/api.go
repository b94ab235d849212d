package queue

// API CONTRACT STUB. Written first so that the scheduler, the worker and jobsctl compile
// against it; the queue implementation replaces the bodies (and may move declarations into
// other files), keeping exported names and signatures. Additions are fine.

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnectOptions say how to reach NATS.
type ConnectOptions struct {
	URL         string // server URL(s), comma-separated
	Credentials string // .creds file, optional
	TLSCA       string // PEM CA file, optional
	TLSCert     string // PEM client certificate, optional (with TLSKey)
	TLSKey      string
	Name        string // connection name shown by the server, e.g. "jetjobs-worker"
}

// Connect connects with reconnects (cenkalti/backoff) and retries the first connection
// until ctx ends.
func Connect(ctx context.Context, opts ConnectOptions) (*nats.Conn, error) {
	panic("queue: not implemented")
}

// EmbeddedOptions configure an in-process NATS server with JetStream.
type EmbeddedOptions struct {
	Listen   string // host:port on loopback; port 0 picks a free one. Default "127.0.0.1:4222"? see DefaultEmbeddedListen
	StoreDir string // JetStream store directory (required)
}

// Embedded is an in-process NATS server.
type Embedded struct{}

// StartEmbedded starts the server and waits until it accepts connections.
func StartEmbedded(opts EmbeddedOptions) (*Embedded, error) { panic("queue: not implemented") }

// ClientURL is the URL other processes connect to.
func (e *Embedded) ClientURL() string { panic("queue: not implemented") }

// Shutdown stops the server and waits for it.
func (e *Embedded) Shutdown() { panic("queue: not implemented") }

// Config of a table's stream and consumers.
type Config struct {
	Prefix   string        // subject prefix; default "jetjobs"
	Replicas int           // stream replicas; default 1
	AckWait  time.Duration // consumers' ack wait; default 30s
}

// Table is the JetStream side of one target table: its stream, its per-priority consumers.
type Table struct{}

// Open creates (idempotently) the table's stream and returns the handle.
func Open(ctx context.Context, nc *nats.Conn, schema, table string, cfg Config) (*Table, error) {
	panic("queue: not implemented")
}

// Message is one due job to publish.
type Message struct {
	Priority int
	Key      []byte      // canonical JSON of the key (jobsdb Target.KeyJSON)
	Header   nats.Header // trace context etc.; may be nil
}

// Publish publishes msgs (asynchronously, waiting for all acks). published[i] is false when
// message i's job already had a message in the stream (not an error).
func (t *Table) Publish(ctx context.Context, msgs []Message) (published []bool, err error) {
	panic("queue: not implemented")
}

// Wake tells idle workers of this table that new messages were published.
func (t *Table) Wake() error { panic("queue: not implemented") }

// Msg is one fetched message.
type Msg interface {
	Key() []byte
	Priority() int
	Header() nats.Header
	NumDelivered() uint64
	Ack(ctx context.Context) error
	InProgress() error
	NakWithDelay(d time.Duration) error
	Term() error
}

// Fetcher pulls messages in strict priority order.
type Fetcher struct{}

// NewFetcher returns a fetcher over the consumers of priorities <= *maxPriority (all when nil).
func (t *Table) NewFetcher(maxPriority *int) *Fetcher { panic("queue: not implemented") }

// Fetch returns between 1 and n messages from the most urgent priority that has any; it
// blocks until some arrive or ctx ends.
func (f *Fetcher) Fetch(ctx context.Context, n int) ([]Msg, error) { panic("queue: not implemented") }

// Stop releases the fetcher's subscriptions.
func (f *Fetcher) Stop() { panic("queue: not implemented") }

// PriorityState is the JetStream view of one priority.
type PriorityState struct {
	Priority    int    `json:"priority"`
	Waiting     uint64 `json:"waiting"`      // messages not yet delivered
	AckPending  int    `json:"ack_pending"`  // delivered, not acked
	Redelivered int    `json:"redelivered"`  // delivered more than once, not acked
	Consumer    string `json:"consumer"`
}

// State lists per-priority state, ordered by priority.
func (t *Table) State(ctx context.Context) ([]PriorityState, error) { panic("queue: not implemented") }

// Delete removes the table's stream and consumers.
func (t *Table) Delete(ctx context.Context) error { panic("queue: not implemented") }
