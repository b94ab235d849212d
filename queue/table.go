package queue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config defaults.
const (
	DefaultPrefix        = "jetjobs"
	DefaultReplicas      = 1
	DefaultAckWait       = 30 * time.Second
	DefaultMaxAckPending = 10000
	// WindowDefault is the most messages a table's stream should hold, waiting or delivered
	// and unacked: a publisher keeps the stream below it, so a backlog of millions stays in
	// MySQL (where it is cheap) and JetStream holds what workers will take soon. Servers slow
	// down with tens of thousands of messages waiting (pulls walk them), and priorities stay
	// sharp: a newly due urgent job never queues behind a million published ones.
	WindowDefault = 20000
)

// consumerRecheckInterval is how long Publish trusts that a priority's consumer exists before
// ensuring it again. Fetchers recreate the consumers they knew within a second of their loss;
// this bounds how long messages of a priority no fetcher knew wait for theirs (they are kept,
// and delivered once it is back). Each check costs the server a count of the consumer's
// pending messages.
const consumerRecheckInterval = 30 * time.Second

// Config of a table's stream and consumers. The zero value means the defaults. Every process
// serving a table should use the same Config: stream and consumers are created or updated to
// the Config of whoever gets there first or last.
type Config struct {
	// Prefix is the first token(s) of every subject, default DefaultPrefix ("jetjobs"). Dots
	// are allowed ("acme.jetjobs"); wildcards and whitespace are not.
	Prefix string
	// Replicas of the stream, default DefaultReplicas (1). More needs a JetStream cluster;
	// an embedded server has one node.
	Replicas int
	// AckWait is how long a delivered message may go without Ack or InProgress before
	// JetStream redelivers it, default DefaultAckWait (30s). Shorter redelivers a crashed
	// worker's messages sooner; long jobs must call InProgress at about AckWait/3.
	AckWait time.Duration
	// MaxAckPending is how many messages of one priority may be delivered and unacked at once
	// across all workers, default DefaultMaxAckPending (10000); negative means no limit. At
	// the limit, fetches of that priority return nothing until acks come back.
	MaxAckPending int
	// Storage is where the server keeps the stream's messages. Empty keeps an existing
	// stream's storage and creates a new one with StorageDefault. An existing stream whose
	// storage differs from a non-empty Storage is deleted and created anew (a stream's storage
	// cannot be changed): its messages are lost, and the scheduler publishes the jobs they were
	// for again, since MySQL holds them. So only the scheduler sets it; workers leave it empty.
	Storage Storage
}

// Storage is where a stream's messages live on the server.
type Storage string

// The storages of a stream.
const (
	// StorageFile keeps messages on disk: they survive a server restart.
	StorageFile Storage = "file"
	// StorageMemory keeps messages in memory: cheaper per message, lost when the server
	// restarts (the scheduler then publishes every due job again at once).
	StorageMemory Storage = "memory"
	// StorageDefault is the storage of a new stream when Config.Storage is empty.
	StorageDefault = StorageFile
)

// jetstream is the server's name for the storage.
func (s Storage) jetstream() jetstream.StorageType {
	if s == StorageMemory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Replicas <= 0 {
		c.Replicas = DefaultReplicas
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = DefaultMaxAckPending
	}
	if c.MaxAckPending < 0 {
		c.MaxAckPending = -1
	}
	return c
}

// Table is the JetStream side of one target table: its stream and its per-priority consumers.
// It is safe for concurrent use.
type Table struct {
	js     jetstream.JetStream
	nc     *nats.Conn
	cfg    Config
	schema string
	table  string
	stream string
	base   string // <prefix>.<schema>.<table>
	wake   string // <base>.wake

	mu        sync.Mutex
	consumers map[int]time.Time // priority → when its consumer was last created or updated

	// newPriorities counts consumers ensured for a priority not in consumers before, so that
	// this Table's Fetchers look for the new consumer at once instead of at their next relist.
	newPriorities atomic.Uint64
}

// Open creates (idempotently) the table's stream, or updates a stream whose settings differ,
// and returns the handle. Several processes may Open the same table at once. It fails with
// ErrUnsupportedServer when the server does not keep the per-subject limits (nats-server
// before 2.9).
func Open(ctx context.Context, nc *nats.Conn, schema, table string, cfg Config) (*Table, error) {
	cfg = cfg.withDefaults()
	if schema == "" || table == "" {
		return nil, fmt.Errorf("%w: schema %q, table %q: both are required", ErrInvalidName, schema, table)
	}
	if err := validatePrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(publishMaxPending),
		jetstream.WithPublishAsyncTimeout(publishAckTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("queue: open %s.%s: %w", schema, table, err)
	}
	base := cfg.Prefix + "." + escapeToken(schema) + "." + escapeToken(table)
	t := &Table{
		js:        js,
		nc:        nc,
		cfg:       cfg,
		schema:    schema,
		table:     table,
		stream:    streamName(cfg.Prefix, schema, table),
		base:      base,
		wake:      base + "." + wakeToken,
		consumers: make(map[int]time.Time),
	}
	if err := t.ensureStream(ctx); err != nil {
		return nil, fmt.Errorf("queue: open %s.%s: %w", schema, table, err)
	}
	return t, nil
}

// Schema is the target table's schema.
func (t *Table) Schema() string { return t.schema }

// TableName is the target table's name.
func (t *Table) TableName() string { return t.table }

// Config is the table's configuration, defaults applied.
func (t *Table) Config() Config { return t.cfg }

// StreamName is the name of the table's stream.
func (t *Table) StreamName() string { return t.stream }

// Subject is the subject a job's message is published to.
func (t *Table) Subject(priority int, key []byte) string {
	return t.base + "." + priorityToken(priority) + "." + KeyHash(key)
}

// ConsumerName is the name of the durable consumer of a priority, e.g. "p5" or "p-3".
func ConsumerName(priority int) string { return priorityToken(priority) }

func (t *Table) filterSubject(priority int) string {
	return t.base + "." + priorityToken(priority) + ".*"
}

func (t *Table) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:                 t.stream,
		Description:          fmt.Sprintf("jetjobs dispatch of %s.%s", t.schema, t.table),
		Subjects:             []string{t.base + ".*.*"},
		Retention:            jetstream.WorkQueuePolicy,
		Storage:              cmp.Or(t.cfg.Storage, StorageDefault).jetstream(),
		Replicas:             t.cfg.Replicas,
		Discard:              jetstream.DiscardNew,
		MaxMsgs:              -1,
		MaxBytes:             -1,
		MaxMsgsPerSubject:    1,
		DiscardNewPerSubject: true,
	}
}

func (t *Table) consumerConfig(priority int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(priority),
		Description:   fmt.Sprintf("jetjobs priority %d of %s.%s", priority, t.schema, t.table),
		FilterSubject: t.filterSubject(priority),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: t.cfg.MaxAckPending,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	}
}

// ensureStream creates the stream, or updates it when its settings differ from this Config,
// and checks the server kept the settings the one-message-per-key invariant rests on. An
// existing stream with the right settings is left alone: an update is a write on the server
// (and nats-server 2.15.2 races an update against a concurrent consumer creation).
func (t *Table) ensureStream(ctx context.Context) error {
	want := t.streamConfig()
	s, err := t.js.Stream(ctx, t.stream)
	if err == nil && s.CachedInfo().Config.Storage != want.Storage {
		if t.cfg.Storage == "" {
			want.Storage = s.CachedInfo().Config.Storage
		} else if err = t.js.DeleteStream(ctx, t.stream); err == nil || errors.Is(err, jetstream.ErrStreamNotFound) {
			// A stream's storage cannot change: start over; MySQL holds the jobs.
			t.forgetConsumers()
			err = jetstream.ErrStreamNotFound
		}
	}
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = t.createStream(ctx, want)
	case err == nil && !streamSettingsMatch(s.CachedInfo().Config, want):
		s, err = t.js.UpdateStream(ctx, want)
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("create stream %s: %w: JetStream is not enabled on the NATS server "+
				"(start nats-server with -js, or use --embedded-nats)", t.stream, err)
		}
		return fmt.Errorf("create stream %s: %w", t.stream, err)
	}
	got := s.CachedInfo().Config
	if got.Retention != jetstream.WorkQueuePolicy || got.MaxMsgsPerSubject != 1 || !got.DiscardNewPerSubject {
		return fmt.Errorf("%w: stream %s came back with retention %s, max_msgs_per_subject %d, discard_new_per_subject %t",
			ErrUnsupportedServer, t.stream, got.Retention, got.MaxMsgsPerSubject, got.DiscardNewPerSubject)
	}
	return nil
}

// Processes starting together create a table's new stream at once. The creations that lose
// the race fail, however the server words it ("name already in use", "subjects overlap",
// "error creating store", depending on its version and timing), and look again until the
// winner's stream shows.
const (
	createRaceAttempts = 10
	createRaceDelay    = 20 * time.Millisecond
)

// createStream creates the stream, or converges on the one another process created meanwhile.
func (t *Table) createStream(ctx context.Context, want jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := t.js.CreateStream(ctx, want)
	for attempt := 1; err != nil && attempt < createRaceAttempts; attempt++ {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
			ctx.Err() != nil {
			return nil, err
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			select {
			case <-time.After(createRaceDelay * time.Duration(attempt)):
			case <-ctx.Done():
				return nil, err
			}
		}
		var found jetstream.Stream
		found, err = t.js.Stream(ctx, t.stream)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			s, err = t.js.CreateStream(ctx, want)
		case err == nil && streamSettingsMatch(found.CachedInfo().Config, want):
			return found, nil
		case err == nil:
			s, err = t.js.UpdateStream(ctx, want)
		}
	}
	return s, err
}

// streamSettingsMatch compares the settings streamConfig sets.
func streamSettingsMatch(got, want jetstream.StreamConfig) bool {
	return slices.Equal(got.Subjects, want.Subjects) &&
		got.Description == want.Description &&
		got.Retention == want.Retention &&
		got.Storage == want.Storage &&
		got.Replicas == want.Replicas &&
		got.Discard == want.Discard &&
		got.MaxMsgs == want.MaxMsgs &&
		got.MaxBytes == want.MaxBytes &&
		got.MaxMsgsPerSubject == want.MaxMsgsPerSubject &&
		got.DiscardNewPerSubject == want.DiscardNewPerSubject
}

// ensureConsumer creates or updates the consumer of a priority, recreating the stream first
// when it is gone.
func (t *Table) ensureConsumer(ctx context.Context, priority int) (jetstream.Consumer, error) {
	c, err := t.js.CreateOrUpdateConsumer(ctx, t.stream, t.consumerConfig(priority))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		t.forgetConsumers()
		if err = t.ensureStream(ctx); err != nil {
			return nil, err
		}
		c, err = t.js.CreateOrUpdateConsumer(ctx, t.stream, t.consumerConfig(priority))
	}
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on stream %s: %w", ConsumerName(priority), t.stream, err)
	}
	t.mu.Lock()
	_, had := t.consumers[priority]
	t.consumers[priority] = time.Now()
	t.mu.Unlock()
	if !had {
		t.newPriorities.Add(1)
	}
	return c, nil
}

// ensureConsumers ensures the consumers of the given priorities, trusting ones ensured within
// consumerRecheckInterval.
func (t *Table) ensureConsumers(ctx context.Context, priorities []int) error {
	now := time.Now()
	for _, p := range priorities {
		t.mu.Lock()
		at, ok := t.consumers[p]
		t.mu.Unlock()
		if ok && now.Sub(at) < consumerRecheckInterval {
			continue
		}
		if _, err := t.ensureConsumer(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// forgetConsumers drops the cache of ensured consumers (the stream was found missing).
func (t *Table) forgetConsumers() {
	t.mu.Lock()
	clear(t.consumers)
	t.mu.Unlock()
}

// Wake tells idle workers of this table that new messages were published: a core NATS message
// on WakeSubject that blocked Fetch calls wait for. It carries the priorities this Table
// publishes to, so that fetchers start pulling from a new priority at once rather than at their
// next relist. Call it after a Publish batch; Publish does not wake by itself. Without it,
// fetchers still find new messages within FetchPollInterval.
func (t *Table) Wake() error {
	t.mu.Lock()
	payload := make([]byte, 0, 4*len(t.consumers))
	for p := range t.consumers {
		if len(payload) > 0 {
			payload = append(payload, ' ')
		}
		payload = strconv.AppendInt(payload, int64(p), 10)
	}
	t.mu.Unlock()
	if err := t.nc.Publish(t.wake, payload); err != nil {
		return fmt.Errorf("queue: wake %s: %w", t.wake, err)
	}
	return nil
}

// Delete removes the table's stream and its consumers, and the messages in it. Deleting a
// stream that does not exist is not an error. Fetchers and publishers still running recreate
// the stream.
func (t *Table) Delete(ctx context.Context) error {
	t.forgetConsumers()
	err := t.js.DeleteStream(ctx, t.stream)
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("queue: delete stream %s: %w", t.stream, err)
	}
	return nil
}
