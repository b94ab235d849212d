package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// PriorityState is the JetStream view of one priority.
type PriorityState struct {
	Priority    int    `json:"priority"`
	Waiting     uint64 `json:"waiting"`     // messages not yet delivered (consumer NumPending)
	AckPending  int    `json:"ack_pending"` // delivered, not acked (NumAckPending)
	Redelivered int    `json:"redelivered"` // delivered more than once, not acked (NumRedelivered)
	Consumer    string `json:"consumer"`
}

// State lists per-priority state, ordered by priority (most urgent first). A table whose
// stream does not exist has no priorities: State returns an empty list and no error.
func (t *Table) State(ctx context.Context) ([]PriorityState, error) {
	s, err := t.js.Stream(ctx, t.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return []PriorityState{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queue: state of stream %s: %w", t.stream, err)
	}
	states := []PriorityState{}
	lister := s.ListConsumers(ctx)
	for info := range lister.Info() {
		p, ok := parsePriorityToken(info.Name)
		if !ok || info.Config.FilterSubject != t.filterSubject(p) {
			continue // not one of ours
		}
		states = append(states, PriorityState{
			Priority:    p,
			Waiting:     info.NumPending,
			AckPending:  info.NumAckPending,
			Redelivered: info.NumRedelivered,
			Consumer:    info.Name,
		})
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("queue: state of stream %s: list consumers: %w", t.stream, err)
	}
	slices.SortFunc(states, func(a, b PriorityState) int { return a.Priority - b.Priority })
	return states, nil
}
