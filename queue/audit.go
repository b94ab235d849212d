package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Health is a table's stream as its consumers see it.
type Health struct {
	// Priorities are the table's consumers, most urgent first (as State).
	Priorities []PriorityState
	// Messages is the number of messages in the stream.
	Messages uint64
	// Stray counts messages that no consumer will deliver: the stream holds more messages
	// than its consumers have waiting or delivered-and-unacked. They are left behind a
	// consumer's ack floor (nats-server 2.9 after a crash restores acked messages), or sit on
	// subjects that no consumer filters (published by something other than jetjobs).
	Stray uint64
}

// Busy lists the priorities whose consumer holds messages, waiting or delivered and unacked.
// A job of any other priority that was published and is still pending has lost its message.
func (h Health) Busy() []int {
	busy := []int{}
	for _, p := range h.Priorities {
		if p.Waiting > 0 || p.AckPending > 0 {
			busy = append(busy, p.Priority)
		}
	}
	return busy
}

// Waiting is the number of messages waiting for a worker, over all priorities.
func (h Health) Waiting() uint64 {
	var n uint64
	for _, p := range h.Priorities {
		n += p.Waiting
	}
	return n
}

// consumerState is one of the table's consumers with its ack floor.
type consumerState struct {
	PriorityState
	ackFloor uint64 // stream sequence
}

// Health reads the table's consumers, then its stream. A table whose stream does not exist is
// healthy and empty.
//
// The consumers are read before the stream: acks that land in between only lower the stream's
// count, and nothing else publishes for the table while its scheduler reads this, so a stray
// count above zero is never an artefact of the order.
func (t *Table) Health(ctx context.Context) (Health, error) {
	h, _, err := t.health(ctx)
	return h, err
}

func (t *Table) health(ctx context.Context) (Health, []consumerState, error) {
	s, consumers, err := t.consumerStates(ctx)
	if err != nil || s == nil {
		return Health{Priorities: []PriorityState{}}, nil, err
	}
	h := Health{Priorities: make([]PriorityState, len(consumers))}
	for i, c := range consumers {
		h.Priorities[i] = c.PriorityState
	}
	info, err := s.Info(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return h, consumers, nil
	}
	if err != nil {
		return Health{}, nil, fmt.Errorf("queue: stream %s: %w", t.stream, err)
	}
	h.Messages = info.State.Msgs
	var accounted uint64
	for _, c := range consumers {
		accounted += c.Waiting + uint64(c.AckPending)
	}
	if h.Messages > accounted {
		h.Stray = h.Messages - accounted
	}
	return h, consumers, nil
}

// consumerStates returns the table's stream and its consumers, most urgent first; no stream
// and no consumers when the stream does not exist.
func (t *Table) consumerStates(ctx context.Context) (jetstream.Stream, []consumerState, error) {
	s, err := t.js.Stream(ctx, t.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("queue: state of stream %s: %w", t.stream, err)
	}
	var states []consumerState
	lister := s.ListConsumers(ctx)
	for info := range lister.Info() {
		p, ok := parsePriorityToken(info.Name)
		if !ok || info.Config.FilterSubject != t.filterSubject(p) {
			continue // not one of ours
		}
		states = append(states, consumerState{
			PriorityState: PriorityState{
				Priority:    p,
				Waiting:     info.NumPending,
				AckPending:  info.NumAckPending,
				Redelivered: info.NumRedelivered,
				Consumer:    info.Name,
			},
			ackFloor: info.AckFloor.Stream,
		})
	}
	if err := lister.Err(); err != nil {
		return nil, nil, fmt.Errorf("queue: state of stream %s: list consumers: %w", t.stream, err)
	}
	slices.SortFunc(states, func(a, b consumerState) int { return a.Priority - b.Priority })
	return s, states, nil
}

// Repair removes the stream's stray messages (see Health) and returns its health afterwards
// with the number of messages removed. It is cheap when there are none: one stream read after
// the consumers' (which a dispatch window reads anyway).
//
// Messages behind a consumer's ack floor are purged by subject filter and sequence. Messages
// on a subject of a priority without a consumer get their consumer, which then delivers them;
// messages on subjects that are not a job's are purged. The jobs whose messages went that way
// are pending with no message: a publisher finds them through Health.Busy (their priority has
// nothing in flight any more) and publishes them again.
//
// Purging behind the ack floor makes nats-server 2.9 forget the consumer's unacked
// deliveries; their messages then count as stray, and the next Repair removes them too. So
// Repair acts only when it found stray messages, which a healthy stream never has.
func (t *Table) Repair(ctx context.Context) (Health, uint64, error) {
	h, consumers, err := t.health(ctx)
	if err != nil || h.Stray == 0 {
		return h, 0, err
	}
	before := h.Messages
	s, err := t.js.Stream(ctx, t.stream)
	if err != nil {
		return h, 0, fmt.Errorf("queue: repair stream %s: %w", t.stream, err)
	}
	for _, c := range consumers {
		if c.ackFloor == 0 {
			continue
		}
		err := s.Purge(ctx, jetstream.WithPurgeSubject(t.filterSubject(c.Priority)), jetstream.WithPurgeSequence(c.ackFloor+1))
		if err != nil {
			return h, 0, fmt.Errorf("queue: repair stream %s: purge behind the ack floor of %s: %w", t.stream, c.Consumer, err)
		}
	}
	if h, _, err = t.health(ctx); err != nil || h.Stray == 0 {
		return h, before - min(before, h.Messages), err
	}
	if err := t.repairSubjects(ctx, s, h); err != nil {
		return h, 0, err
	}
	h, _, err = t.health(ctx)
	return h, before - min(before, h.Messages), err
}

// repairSubjects gives a consumer to every priority that has messages and none, and purges the
// subjects that are not a job's. It lists the stream's subjects: one entry per message waiting.
func (t *Table) repairSubjects(ctx context.Context, s jetstream.Stream, h Health) error {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(t.base+".>"))
	if err != nil {
		return fmt.Errorf("queue: repair stream %s: list subjects: %w", t.stream, err)
	}
	consumed := make(map[int]bool, len(h.Priorities))
	for _, p := range h.Priorities {
		consumed[p.Priority] = true
	}
	for subject := range info.State.Subjects {
		token, hash, ok := strings.Cut(strings.TrimPrefix(subject, t.base+"."), ".")
		p, valid := parsePriorityToken(token)
		switch {
		case ok && valid && isKeyHash(hash) && consumed[p]:
			// Counted, or behind an ack floor that moved meanwhile: the next Repair sees it.
		case ok && valid && isKeyHash(hash):
			if _, err := t.ensureConsumer(ctx, p); err != nil {
				return fmt.Errorf("queue: repair stream %s: %w", t.stream, err)
			}
			consumed[p] = true
		default:
			if err := s.Purge(ctx, jetstream.WithPurgeSubject(subject)); err != nil {
				return fmt.Errorf("queue: repair stream %s: purge %s: %w", t.stream, subject, err)
			}
		}
	}
	return nil
}

// Messages is the number of messages in the table's stream, waiting or delivered and not yet
// acked: one stream read, without the consumers' (cheaper than Health on a deep stream). A
// table whose stream does not exist has none.
func (t *Table) Messages(ctx context.Context) (uint64, error) {
	s, err := t.js.Stream(ctx, t.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("queue: stream %s: %w", t.stream, err)
	}
	return s.CachedInfo().State.Msgs, nil
}
