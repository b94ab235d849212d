package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publish pacing.
const (
	// publishWindow is how many publishes one Publish call has in flight (sent, PubAck not yet
	// received) before it waits for the oldest.
	publishWindow = 4096
	// publishMaxPending bounds in-flight publishes over all Publish calls on one Table; a call
	// over it waits (nats.go's stall) for acks to come back.
	publishMaxPending = 4 * publishWindow
	// publishAckTimeout frees nats.go's bookkeeping of a publish whose PubAck never came (the
	// Publish call itself is bounded by its ctx).
	publishAckTimeout = 30 * time.Second
)

// Message is one due job to publish.
type Message struct {
	Priority int         // PriorityMin..PriorityMax, lower is more urgent
	Key      []byte      // canonical JSON of the key (jobsdb Target.KeyJSON); not empty
	Header   nats.Header // trace context etc.; may be nil; shared, not copied
}

// Publish publishes msgs, each to its key's subject, asynchronously, and waits for all PubAcks
// (bounded by ctx). published[i] is false when message i's key already had a message in the
// stream, waiting or delivered and not yet acked (not an error: that message will do); true
// when the stream stored it. It first ensures the consumer of every priority in msgs exists.
// When the stream is found missing it is recreated and the unanswered messages are published
// once more. On error, published still tells which messages were stored. Publish does not Wake.
func (t *Table) Publish(ctx context.Context, msgs []Message) (published []bool, err error) {
	published = make([]bool, len(msgs))
	if len(msgs) == 0 {
		return published, nil
	}
	subjects := make([]string, len(msgs))
	var priorities []int
	for i, m := range msgs {
		if !validPriority(m.Priority) {
			return published, fmt.Errorf("%w: message %d: priority %d outside %d..%d", ErrInvalidMessage, i, m.Priority, PriorityMin, PriorityMax)
		}
		if len(m.Key) == 0 {
			return published, fmt.Errorf("%w: message %d: empty key", ErrInvalidMessage, i)
		}
		subjects[i] = t.Subject(m.Priority, m.Key)
		if !slices.Contains(priorities, m.Priority) {
			priorities = append(priorities, m.Priority)
		}
	}
	if err := t.ensureConsumers(ctx, priorities); err != nil {
		return published, fmt.Errorf("queue: publish to %s: %w", t.stream, err)
	}

	todo := make([]int, len(msgs))
	for i := range todo {
		todo[i] = i
	}
	unanswered, err := t.publishAsync(ctx, msgs, subjects, todo, published)
	if err != nil || len(unanswered) == 0 {
		return published, err
	}

	// No stream answered: it was deleted (or lost with a server's store). Recreate it and its
	// consumers, and try the unanswered messages once more.
	t.forgetConsumers()
	if err := t.ensureStream(ctx); err != nil {
		return published, fmt.Errorf("queue: publish to %s: stream missing: %w", t.stream, err)
	}
	if err := t.ensureConsumers(ctx, priorities); err != nil {
		return published, fmt.Errorf("queue: publish to %s: %w", t.stream, err)
	}
	unanswered, err = t.publishAsync(ctx, msgs, subjects, unanswered, published)
	if err != nil {
		return published, err
	}
	if len(unanswered) > 0 {
		return published, fmt.Errorf("queue: publish to %s: %d messages got no answer from the stream, even after recreating it: %w",
			t.stream, len(unanswered), jetstream.ErrNoStreamResponse)
	}
	return published, nil
}

// publishAsync publishes msgs[i] for i in todo and waits for their acks, marking published.
// It returns the indexes that no stream answered, and the first other failure.
func (t *Table) publishAsync(ctx context.Context, msgs []Message, subjects []string, todo []int, published []bool) (unanswered []int, err error) {
	type inflight struct {
		i   int
		paf jetstream.PubAckFuture
	}
	window := make([]inflight, 0, min(len(todo), publishWindow))
	head := 0
	var firstErr error

	// settle waits for the oldest publish in flight.
	settle := func() error {
		p := window[head]
		head++
		if head == len(window) || head >= publishWindow {
			window = window[:copy(window, window[head:])]
			head = 0
		}
		select {
		case <-p.paf.Ok():
			published[p.i] = true
		case err := <-p.paf.Err():
			switch {
			case isSubjectFull(err):
				// The key's message is still in the stream: not published, not an error.
			case isNoStream(err):
				unanswered = append(unanswered, p.i)
			case firstErr == nil:
				firstErr = fmt.Errorf("queue: publish to %s (subject %s): %w", t.stream, subjects[p.i], err)
			}
		case <-ctx.Done():
			return fmt.Errorf("queue: publish to %s: %w", t.stream, ctx.Err())
		}
		return nil
	}

	for _, i := range todo {
		if len(window)-head >= publishWindow {
			if err := settle(); err != nil {
				return unanswered, err
			}
		}
		m := &nats.Msg{Subject: subjects[i], Data: msgs[i].Key, Header: msgs[i].Header}
		paf, err := t.js.PublishMsgAsync(m)
		for errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			// Other Publish calls on this Table hold the in-flight slots; nats.go already waited
			// for one to free. Settle one of ours, or try again after that wait.
			if ctx.Err() != nil {
				return unanswered, fmt.Errorf("queue: publish to %s: %w", t.stream, ctx.Err())
			}
			if len(window) > head {
				if err := settle(); err != nil {
					return unanswered, err
				}
			}
			paf, err = t.js.PublishMsgAsync(m)
		}
		if err != nil {
			firstErr = fmt.Errorf("queue: publish to %s: %w", t.stream, err)
			break
		}
		window = append(window, inflight{i, paf})
	}
	for len(window) > head {
		if err := settle(); err != nil {
			return unanswered, err
		}
	}
	return unanswered, firstErr
}

// isNoStream reports whether a publish error means no stream took the subject.
func isNoStream(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}
