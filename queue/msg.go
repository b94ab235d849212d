package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MinNakDelay is the shortest redelivery delay NakWithDelay asks for: a zero delay would be a
// bare Nak, an instant redelivery that loops as fast as the network allows.
const MinNakDelay = 100 * time.Millisecond

// ackAllParallelism bounds the acks AckAll has in flight at once for Msgs it cannot pipeline.
const ackAllParallelism = 256

// Msg is one fetched message: a job that may be due. Settle every Msg exactly once with Ack,
// NakWithDelay or Term; until then call InProgress at about AckWait/3 to keep it.
type Msg interface {
	// Key is the message body: the key's canonical JSON as published.
	Key() []byte
	// Priority is the job's priority, read from the subject.
	Priority() int
	// Header carries the publisher's headers (trace context); nil when there were none.
	Header() nats.Header
	// NumDelivered counts deliveries of this message, 1 on the first.
	NumDelivered() uint64
	// Ack removes the message from the stream and waits for the server to confirm it. Call it
	// only after the MySQL write that settles the job has committed.
	Ack(ctx context.Context) error
	// InProgress resets the message's AckWait: the job is still running.
	InProgress() error
	// NakWithDelay asks for redelivery after d (at least MinNakDelay).
	NakWithDelay(d time.Duration) error
	// Term removes the message without redelivery and without the confirmation Ack waits for.
	Term() error
}

// message is the Msg of a jetstream.Msg. Priority and delivery count are read once, at fetch.
type message struct {
	m         jetstream.Msg
	nc        *nats.Conn // the connection it came on, for AckAll
	priority  int
	delivered uint64
}

func newMessage(m jetstream.Msg, nc *nats.Conn, consumerPriority int) *message {
	p, ok := priorityFromSubject(m.Subject())
	if !ok {
		p = consumerPriority
	}
	var delivered uint64
	if md, err := m.Metadata(); err == nil {
		delivered = md.NumDelivered
	}
	return &message{m: m, nc: nc, priority: p, delivered: delivered}
}

func (m *message) Key() []byte          { return m.m.Data() }
func (m *message) Priority() int        { return m.priority }
func (m *message) Header() nats.Header  { return m.m.Headers() }
func (m *message) NumDelivered() uint64 { return m.delivered }

func (m *message) Ack(ctx context.Context) error {
	if err := m.m.DoubleAck(ctx); err != nil {
		return fmt.Errorf("queue: ack %s: %w", m.m.Subject(), err)
	}
	return nil
}

func (m *message) InProgress() error {
	if err := m.m.InProgress(); err != nil {
		return fmt.Errorf("queue: in-progress %s: %w", m.m.Subject(), err)
	}
	return nil
}

func (m *message) NakWithDelay(d time.Duration) error {
	if err := m.m.NakWithDelay(max(d, MinNakDelay)); err != nil {
		return fmt.Errorf("queue: nak %s: %w", m.m.Subject(), err)
	}
	return nil
}

func (m *message) Term() error {
	if err := m.m.Term(); err != nil {
		return fmt.Errorf("queue: term %s: %w", m.m.Subject(), err)
	}
	return nil
}

// AckAll acks msgs without waiting for each confirmation: the acks are sent one after the
// other on their connections, which are then flushed (one round trip each), so an error says
// that an ack did not reach the server. Ack only after the MySQL write that settles the job
// has committed. A lost ack is harmless: the message is redelivered after AckWait, its
// reservation fails because MySQL recorded the outcome, and it is acked then.
func AckAll(ctx context.Context, msgs []Msg) error {
	var errs []error
	conns := make(map[*nats.Conn]bool)
	var others []Msg
	for _, m := range msgs {
		mm, ok := m.(*message)
		if !ok || mm.nc == nil {
			others = append(others, m)
			continue
		}
		if err := mm.m.Ack(); err != nil {
			errs = append(errs, fmt.Errorf("queue: ack %s: %w", mm.m.Subject(), err))
			continue
		}
		conns[mm.nc] = true
	}
	for nc := range conns {
		if err := nc.FlushWithContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("queue: ack: flush the connection: %w", err))
		}
	}
	if len(others) > 0 {
		errs = append(errs, ackConcurrently(ctx, others))
	}
	return errors.Join(errs...)
}

// ackConcurrently acks Msgs of other implementations, a bounded number at a time.
func ackConcurrently(ctx context.Context, msgs []Msg) error {
	errs := make([]error, len(msgs))
	sem := make(chan struct{}, ackAllParallelism)
	var wg sync.WaitGroup
	for i, m := range msgs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = m.Ack(ctx)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
