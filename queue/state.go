package queue

import "context"

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
	_, consumers, err := t.consumerStates(ctx)
	if err != nil {
		return nil, err
	}
	states := make([]PriorityState, len(consumers))
	for i, c := range consumers {
		states[i] = c.PriorityState
	}
	return states, nil
}
