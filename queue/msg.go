package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
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
	acked     atomic.Bool // settled by AckAll, which bypasses m's own bookkeeping
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

// errIfAcked refuses to settle a message AckAll already acked (jetstream.Msg's own check does
// not know about AckAll).
func (m *message) errIfAcked(what string) error {
	if m.acked.Load() {
		return fmt.Errorf("queue: %s %s: %w", what, m.m.Subject(), jetstream.ErrMsgAlreadyAckd)
	}
	return nil
}

func (m *message) Ack(ctx context.Context) error {
	if err := m.errIfAcked("ack"); err != nil {
		return err
	}
	if err := m.m.DoubleAck(ctx); err != nil {
		return fmt.Errorf("queue: ack %s: %w", m.m.Subject(), err)
	}
	return nil
}

func (m *message) InProgress() error {
	if err := m.errIfAcked("in-progress"); err != nil {
		return err
	}
	if err := m.m.InProgress(); err != nil {
		return fmt.Errorf("queue: in-progress %s: %w", m.m.Subject(), err)
	}
	return nil
}

func (m *message) NakWithDelay(d time.Duration) error {
	if err := m.errIfAcked("nak"); err != nil {
		return err
	}
	if err := m.m.NakWithDelay(max(d, MinNakDelay)); err != nil {
		return fmt.Errorf("queue: nak %s: %w", m.m.Subject(), err)
	}
	return nil
}

func (m *message) Term() error {
	if err := m.errIfAcked("term"); err != nil {
		return err
	}
	if err := m.m.Term(); err != nil {
		return fmt.Errorf("queue: term %s: %w", m.m.Subject(), err)
	}
	return nil
}

// AckAll acks msgs like Ack, each confirmed by the server, but pipelined: all acks are sent,
// then the confirmations collected, one round trip for the lot. It waits for every
// confirmation or ctx, and returns the failures joined; a message whose ack failed is
// redelivered after AckWait, which MySQL's guards make harmless.
func AckAll(ctx context.Context, msgs []Msg) error {
	var errs []error
	byConn := make(map[*nats.Conn][]*message)
	var others []Msg
	for _, m := range msgs {
		if mm, ok := m.(*message); ok && mm.nc != nil && mm.m.Reply() != "" && !mm.acked.Load() {
			byConn[mm.nc] = append(byConn[mm.nc], mm)
		} else {
			others = append(others, m)
		}
	}
	for nc, batch := range byConn {
		errs = append(errs, ackPipelined(ctx, nc, batch))
	}
	if len(others) > 0 {
		errs = append(errs, ackConcurrently(ctx, others))
	}
	return errors.Join(errs...)
}

// ackBody is JetStream's ack.
var ackBody = []byte("+ACK")

// ackPipelined sends the acks of batch as requests whose replies come to one subscription,
// and waits for every reply.
func ackPipelined(ctx context.Context, nc *nats.Conn, batch []*message) error {
	inbox := nc.NewInbox()
	replies := make(chan *nats.Msg, len(batch))
	sub, err := nc.ChanSubscribe(inbox+".*", replies)
	if err != nil {
		return fmt.Errorf("queue: ack %d messages: %w", len(batch), err)
	}
	defer func() { _ = sub.Unsubscribe() }() // fails only on a closed connection, which drops it anyway

	pending := make(map[string]*message, len(batch))
	var errs []error
	for i, m := range batch {
		reply := inbox + "." + strconv.Itoa(i)
		if err := nc.PublishRequest(m.m.Reply(), reply, ackBody); err != nil {
			errs = append(errs, fmt.Errorf("queue: ack %s: %w", m.m.Subject(), err))
			continue
		}
		pending[reply] = m
	}
	for len(pending) > 0 {
		select {
		case r := <-replies:
			m, ok := pending[r.Subject]
			if !ok {
				continue
			}
			delete(pending, r.Subject)
			if len(r.Data) == 0 && r.Header.Get("Status") == "503" {
				errs = append(errs, fmt.Errorf("queue: ack %s: %w", m.m.Subject(), nats.ErrNoResponders))
				continue
			}
			m.acked.Store(true)
		case <-ctx.Done():
			for _, m := range pending {
				errs = append(errs, fmt.Errorf("queue: ack %s: %w", m.m.Subject(), ctx.Err()))
			}
			return errors.Join(errs...)
		}
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
