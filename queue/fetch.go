package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Fetcher pacing.
const (
	// FetchPollInterval is how long an idle Fetch waits for a wake-up before looking again,
	// which picks up redeliveries (AckWait expired, NakWithDelay) and missed wake-ups.
	FetchPollInterval = 500 * time.Millisecond
	// relistInterval is how often a Fetcher lists the stream's consumers to find new
	// priorities (and missing ones).
	relistInterval = time.Second
	// suspectPull is how long a no-wait pull may take before it is taken as unanswered: the
	// consumer is missing and the server (2.9) said nothing. nats.go gives up after 1s.
	suspectPull = 900 * time.Millisecond
	// Backoff between failed attempts to reach or repair the stream and its consumers.
	fetchRetryInitial = 100 * time.Millisecond
	fetchRetryMax     = 5 * time.Second
)

// Fetcher pulls a table's messages in strict priority order. Fetch may be called from several
// goroutines (calls are serialised); Stop may be called at any time.
type Fetcher struct {
	t           *Table
	maxPriority int // inclusive

	sem      chan struct{} // held by the Fetch in progress
	stopped  chan struct{}
	stopOnce sync.Once
	wakeCh   chan struct{} // a pending wake-up, coalesced

	subMu sync.Mutex
	sub   *nats.Subscription // wake subscription, made by the first Fetch

	// fetching holds the priorities of consumers, for the wake handler; resync is set by the
	// handler when a wake-up names a priority not among them.
	fetching atomic.Pointer[map[int]bool]
	resync   atomic.Bool

	// Owned by the Fetch in progress (sem).
	stream    jetstream.Stream // handle by name, made by the first sync
	consumers []fetchConsumer  // ascending priority, within maxPriority
	handles   map[int]jetstream.Consumer
	known     map[int]bool // priorities ever listed: recreated when they vanish
	listedAt  time.Time
	needSync  bool
	seenNew   uint64 // Table.newPriorities at the last sync
	bo        *backoff.ExponentialBackOff
	retryAt   time.Time

	pollInterval time.Duration // FetchPollInterval; tests change it
	idleHook     func()        // tests: called when Fetch starts waiting for a wake-up
}

type fetchConsumer struct {
	priority int
	c        jetstream.Consumer
}

// NewFetcher returns a fetcher over the consumers of priorities <= *maxPriority (all when nil).
// It subscribes to the table's wake subject on its first Fetch; Stop releases it.
func (t *Table) NewFetcher(maxPriority *int) *Fetcher {
	limit := PriorityMax
	if maxPriority != nil {
		limit = *maxPriority
	}
	return &Fetcher{
		t:            t,
		maxPriority:  limit,
		sem:          make(chan struct{}, 1),
		stopped:      make(chan struct{}),
		wakeCh:       make(chan struct{}, 1),
		pollInterval: FetchPollInterval,
		handles:      make(map[int]jetstream.Consumer),
		known:        make(map[int]bool),
		bo: &backoff.ExponentialBackOff{
			InitialInterval:     fetchRetryInitial,
			RandomizationFactor: 0.5,
			Multiplier:          2,
			MaxInterval:         fetchRetryMax,
		},
	}
}

// Fetch returns between 1 and n messages, all of the most urgent priority that has any; it
// blocks until some arrive or ctx ends. While idle it wakes on Table.Wake, and looks again
// every FetchPollInterval.
//
// A stream or consumer that disappeared is recreated and Fetch goes on. Other failures (NATS
// unreachable, recreation refused) are returned; they are transient, so log them and call
// Fetch again: the Fetcher paces its retries with exponential backoff, so such a loop never
// spins. Fetch returns ctx.Err() when ctx ends and ErrStopped after Stop.
func (f *Fetcher) Fetch(ctx context.Context, n int) ([]Msg, error) {
	if n <= 0 {
		return nil, fmt.Errorf("queue: fetch %d messages: want at least 1", n)
	}
	select {
	case f.sem <- struct{}{}:
		defer func() { <-f.sem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-f.stopped:
		return nil, ErrStopped
	}
	for {
		if err := f.pause(ctx); err != nil {
			return nil, err
		}
		if err := f.subscribe(); err != nil {
			f.failed()
			return nil, err
		}
		if f.resync.Swap(false) || f.t.newPriorities.Load() != f.seenNew {
			f.needSync = true // a priority we do not pull from yet
		}
		if f.needSync || len(f.consumers) == 0 || time.Since(f.listedAt) >= relistInterval {
			if err := f.sync(ctx); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				f.failed()
				return nil, fmt.Errorf("queue: fetch from stream %s: %w", f.t.stream, err)
			}
		}

		// A wake-up that arrives from here on is for messages this round may miss.
		select {
		case <-f.wakeCh:
		default:
		}
		msgs, err := f.fetchRound(ctx, n)
		if len(msgs) > 0 {
			f.bo.Reset()
			return msgs, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			f.failed()
			return nil, fmt.Errorf("queue: fetch from stream %s: %w", f.t.stream, err)
		}
		if f.needSync {
			// A consumer looked missing; its unanswered pull already took about a second.
			f.failed()
			continue
		}
		f.bo.Reset()

		if f.idleHook != nil {
			f.idleHook()
		}
		timer := time.NewTimer(f.pollInterval)
		select {
		case <-f.wakeCh:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-f.stopped:
			timer.Stop()
			return nil, ErrStopped
		}
		timer.Stop()
	}
}

// fetchRound asks each consumer in priority order for up to n messages, without waiting, and
// returns those of the first that has any. A consumer that looks missing sets needSync.
func (f *Fetcher) fetchRound(ctx context.Context, n int) ([]Msg, error) {
	for _, fc := range f.consumers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		msgs, err := f.fetchFrom(fc, n)
		if len(msgs) > 0 {
			// Delivered to us: hand them over even if the batch then failed.
			return msgs, nil
		}
		if err != nil {
			if consumerMissing(err) {
				f.needSync = true
				continue
			}
			return nil, err
		}
	}
	return nil, nil
}

// fetchFrom is one no-wait pull. Both of nats.go's error places are checked: the call and the
// batch.
func (f *Fetcher) fetchFrom(fc fetchConsumer, n int) ([]Msg, error) {
	start := time.Now()
	batch, err := fc.c.FetchNoWait(n)
	if err != nil {
		return nil, err
	}
	var msgs []Msg
	for m := range batch.Messages() {
		msgs = append(msgs, newMessage(m, f.t.nc, fc.priority))
	}
	if err := batch.Error(); err != nil {
		return msgs, err
	}
	if len(msgs) == 0 && time.Since(start) >= suspectPull {
		// No answer at all, not even "no messages": nats-server 2.9 does that for a consumer
		// that does not exist.
		f.needSync = true
	}
	return msgs, nil
}

// consumerMissing reports whether a pull failed because its consumer (or stream) is gone.
func consumerMissing(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}

// sync lists the stream's consumers, recreating the stream when it is gone and the consumers
// of known priorities that vanished. It lists names only: a consumer's info makes the server
// count its pending messages, which nats-server 2.9 does by walking every subject of the
// filter, one per waiting job.
func (f *Fetcher) sync(ctx context.Context) error {
	t := f.t
	seenNew := t.newPriorities.Load()
	listed, err := f.listPriorities(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		t.forgetConsumers()
		if err := t.ensureStream(ctx); err != nil {
			return err
		}
		listed, err = f.listPriorities(ctx)
	}
	if err != nil {
		return fmt.Errorf("list consumers: %w", err)
	}

	for p := range f.known {
		if listed[p] {
			continue
		}
		c, err := t.ensureConsumer(ctx, p)
		if err != nil {
			return err
		}
		f.handles[p] = c
		listed[p] = true
	}

	consumers := f.consumers[:0]
	for p := range listed {
		f.known[p] = true
		c, ok := f.handles[p]
		if !ok {
			// A handle stays valid when its consumer is recreated: pulls address it by name.
			c, err = t.js.Consumer(ctx, t.stream, ConsumerName(p))
			if err != nil {
				return fmt.Errorf("consumer %s: %w", ConsumerName(p), err)
			}
			f.handles[p] = c
		}
		consumers = append(consumers, fetchConsumer{priority: p, c: c})
	}
	slices.SortFunc(consumers, func(a, b fetchConsumer) int { return a.priority - b.priority })
	f.consumers = consumers
	f.fetching.Store(&listed)
	f.listedAt = time.Now()
	f.needSync = false
	f.seenNew = seenNew
	return nil
}

// listPriorities lists the priorities (within maxPriority) that have a consumer.
func (f *Fetcher) listPriorities(ctx context.Context) (map[int]bool, error) {
	if f.stream == nil {
		// The handle addresses the stream by name, so it outlives a recreation.
		s, err := f.t.js.Stream(ctx, f.t.stream)
		if err != nil {
			return nil, err
		}
		f.stream = s
	}
	listed := make(map[int]bool)
	lister := f.stream.ConsumerNames(ctx)
	for name := range lister.Name() {
		if p, ok := parsePriorityToken(name); ok && p <= f.maxPriority {
			listed[p] = true
		}
	}
	return listed, lister.Err()
}

// failed schedules the next attempt after a backoff delay.
func (f *Fetcher) failed() {
	f.retryAt = time.Now().Add(f.bo.NextBackOff())
}

// pause waits until the backoff after a failure has passed.
func (f *Fetcher) pause(ctx context.Context) error {
	d := time.Until(f.retryAt)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-f.stopped:
		return ErrStopped
	}
}

// subscribe makes the wake subscription once.
func (f *Fetcher) subscribe() error {
	f.subMu.Lock()
	defer f.subMu.Unlock()
	select {
	case <-f.stopped:
		return ErrStopped
	default:
	}
	if f.sub != nil {
		return nil
	}
	sub, err := f.t.nc.Subscribe(f.t.wake, func(m *nats.Msg) {
		if f.wakeNamesNewPriority(m.Data) {
			f.resync.Store(true)
		}
		select {
		case f.wakeCh <- struct{}{}:
		default: // one pending wake-up is enough
		}
	})
	if err != nil {
		return fmt.Errorf("queue: subscribe to %s: %w", f.t.wake, err)
	}
	f.sub = sub
	return nil
}

// wakeNamesNewPriority reports whether a wake-up's payload (the publisher's priorities, in
// decimal, space-separated) names a priority this fetcher wants but does not pull from yet.
func (f *Fetcher) wakeNamesNewPriority(payload []byte) bool {
	fetching := f.fetching.Load()
	for _, field := range strings.Fields(string(payload)) {
		p, err := strconv.Atoi(field)
		if err != nil || !validPriority(p) || p > f.maxPriority {
			continue
		}
		if fetching == nil || !(*fetching)[p] {
			return true
		}
	}
	return false
}

// Stop releases the fetcher's subscription; a Fetch in progress returns ErrStopped. Messages
// already fetched stay valid.
func (f *Fetcher) Stop() {
	f.stopOnce.Do(func() { close(f.stopped) })
	f.subMu.Lock()
	defer f.subMu.Unlock()
	if f.sub != nil {
		_ = f.sub.Unsubscribe() // fails only when the connection is closed, which drops it anyway
		f.sub = nil
	}
}
