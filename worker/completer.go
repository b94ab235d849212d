package worker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

// Completer defaults: a batch is written when it holds completerBatch outcomes or when the
// oldest has waited completerDelay, whichever comes first.
const (
	completerBatch  = 500
	completerDelay  = 2 * time.Millisecond
	completerBuffer = 4 * completerBatch
	ackTimeout      = 5 * time.Second
	acksInFlight    = 16
)

// finished is one job's outcome on its way to MySQL, with the message to ack once it is
// recorded and the callback that accounts for it.
type finished struct {
	outcome jobsdb.Outcome
	write   func(ctx context.Context, tx *sql.Tx) error
	msg     queue.Msg
	ctx     context.Context // the job's trace context
	span    tracing.Job
	// done is called once the outcome is settled: applied is false when the lease had been
	// taken over; err is set when nothing could be recorded. outcome may have changed kind
	// (a Write callback that failed turns a success into an error).
	done func(f *finished, applied bool, err error)
}

// completer records outcomes in batches, each outcome fenced by its lease token, and acks
// each message only after its outcome committed. Outcomes with a Write callback get a
// transaction of their own.
type completer struct {
	tel     *tracing.Telemetry
	db      *sql.DB
	jobs    *jobsdb.Jobs
	in      chan *finished
	stopped chan struct{}
	// giveUp bounds how long a batch is retried while MySQL is unreachable after the worker
	// was told to stop; its messages are then left unacked and its leases expire.
	giveUp context.Context
	// acking holds a token per batch of acks in flight; acks waits for them on close.
	acking chan struct{}
	acks   sync.WaitGroup
}

func newCompleter(tel *tracing.Telemetry, db *sql.DB, jobs *jobsdb.Jobs, giveUp context.Context) *completer {
	c := &completer{
		tel: tel, db: db, jobs: jobs, giveUp: giveUp,
		in:      make(chan *finished, completerBuffer),
		stopped: make(chan struct{}),
		acking:  make(chan struct{}, acksInFlight),
	}
	go c.run()
	return c
}

// add queues an outcome; it blocks when the buffer is full (backpressure on the job slots).
func (c *completer) add(f *finished) { c.in <- f }

// close flushes what is queued and waits for the last batch and its acks.
func (c *completer) close() {
	close(c.in)
	<-c.stopped
	c.acks.Wait()
}

func (c *completer) run() {
	defer close(c.stopped)
	batch := make([]*finished, 0, completerBatch)
	for {
		f, ok := <-c.in
		if !ok {
			return
		}
		batch = append(batch[:0], f)
		timer := time.NewTimer(completerDelay)
	collect:
		for len(batch) < completerBatch {
			select {
			case f, ok := <-c.in:
				if !ok {
					break collect
				}
				batch = append(batch, f)
			case <-timer.C:
				break collect
			}
		}
		timer.Stop()
		c.flush(batch)
	}
}

func (c *completer) flush(batch []*finished) {
	var grouped []*finished
	for _, f := range batch {
		if f.write != nil {
			c.settle([]*finished{f}, c.recordOwnTx)
		} else {
			grouped = append(grouped, f)
		}
	}
	if len(grouped) > 0 {
		c.settle(grouped, c.recordBatch)
	}
}

// settle records a group, retrying while MySQL is unreachable, then acks and reports. A
// permanent failure of a batch (say, one job's rows do not fit the target) is narrowed down by
// recording the group's outcomes one by one; a success whose rows cannot be written is
// recorded as an error, so one bad job never blocks the others.
func (c *completer) settle(group []*finished, record func(ctx context.Context, group []*finished) ([]bool, error)) {
	spans := c.startSpans(group)
	applied, err := c.retry(group, record)
	defer endSpans(spans, err)
	if err != nil && !jobsdb.IsTransient(err) && c.giveUp.Err() == nil {
		if len(group) > 1 {
			for _, f := range group {
				c.settle([]*finished{f}, record)
			}
			return
		}
		if f := group[0]; f.outcome.Kind == jobsdb.OutcomeSuccess {
			f.outcome.Kind = jobsdb.OutcomeError
			f.outcome.Message = "recording the job's results failed: " + err.Error()
			f.outcome.Stack = err.Error()
			f.outcome.Rows, f.write = nil, nil
			applied, err = c.retry(group, c.recordBatch)
		}
	}
	if err != nil {
		// Nothing was recorded: ack nothing, so the messages are redelivered and the leases
		// expire and are recovered by the scheduler.
		for _, f := range group {
			f.done(f, false, fmt.Errorf("record outcome: %w", err))
		}
		return
	}
	c.settleMessages(group, applied)
	for i, f := range group {
		f.done(f, applied[i], nil)
	}
}

// startSpans starts one span per job for the statement that records the group, only when
// tracing is on.
func (c *completer) startSpans(group []*finished) []trace.Span {
	if !c.tel.Enabled() {
		return nil
	}
	spans := make([]trace.Span, len(group))
	for i, f := range group {
		op := tracing.OpComplete
		switch f.outcome.Kind {
		case jobsdb.OutcomeError:
			op = tracing.OpFail
		case jobsdb.OutcomeRetry:
			op = tracing.OpRetry
		case jobsdb.OutcomeRelease:
			op = tracing.OpRelease
		}
		_, spans[i] = c.tel.StartDB(f.ctx, op, f.span)
	}
	return spans
}

func endSpans(spans []trace.Span, err error) {
	for _, s := range spans {
		tracing.End(s, err)
	}
}

// retry records the group until it is recorded, fails permanently, or the worker gives up
// (giveUp). Transient and ambiguous failures are retried with exponential backoff; after an
// ambiguous one (the commit may have landed) the outcomes are recorded with MaybeRecorded.
func (c *completer) retry(group []*finished, record func(ctx context.Context, group []*finished) ([]bool, error)) ([]bool, error) {
	return backoff.Retry(c.giveUp, func() ([]bool, error) {
		applied, err := record(c.giveUp, group)
		if errors.Is(err, jobsdb.ErrAmbiguous) || jobsdb.IsAmbiguous(err) {
			for _, f := range group {
				f.outcome.MaybeRecorded = true
			}
		}
		if err != nil && !jobsdb.IsTransient(err) && !errors.Is(err, jobsdb.ErrAmbiguous) {
			return nil, backoff.Permanent(err)
		}
		return applied, err
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(0))
}

func (c *completer) recordBatch(ctx context.Context, group []*finished) ([]bool, error) {
	outcomes := make([]jobsdb.Outcome, len(group))
	for i, f := range group {
		outcomes[i] = f.outcome
	}
	return c.jobs.Record(ctx, outcomes)
}

// recordOwnTx records one outcome whose handler writes inside the completion transaction:
// the lease is checked first, then the handler's writes, then the commit of both. After an
// ambiguous commit the lease is checked before anything runs again: a lease no longer held
// means that commit landed (or the job was taken over), and the handler's writes must not be
// made twice.
func (c *completer) recordOwnTx(ctx context.Context, group []*finished) ([]bool, error) {
	f := group[0]
	ctx, cancel := context.WithTimeout(ctx, c.jobs.Options().StatementTimeout)
	defer cancel()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if f.outcome.MaybeRecorded {
		held, err := c.jobs.LockLeases(ctx, tx, []jobsdb.Lease{f.outcome.Lease})
		if err != nil {
			return nil, err
		}
		if !held[0] {
			return c.jobs.RecordTx(ctx, tx, []jobsdb.Outcome{f.outcome})
		}
	}
	applied, err := c.jobs.RecordTx(ctx, tx, []jobsdb.Outcome{f.outcome})
	if err != nil {
		return nil, err
	}
	if !applied[0] {
		return applied, nil
	}
	if err := f.write(ctx, tx); err != nil {
		return nil, fmt.Errorf("the handler's Write callback: %w", err)
	}
	if err := tx.Commit(); err != nil {
		if jobsdb.IsAmbiguous(err) {
			return nil, fmt.Errorf("%w: commit: %w", jobsdb.ErrAmbiguous, err)
		}
		return nil, err
	}
	return applied, nil
}

// settleMessages settles the group's messages once their outcomes committed, in the
// background so that a slow or unreachable NATS server never holds up recording.
//
// A job that is done (success, error) or waits for a retry has its message acked. A job that
// went back to pending at once (released) or whose lease was lost has it redelivered after
// queue.MinNakDelay instead: acking it would race with the scheduler, which may publish the
// job again before the ack lands, be refused because this message is still there, and then
// see it vanish.
//
// A lost ack is harmless: the message comes back, its reservation fails because MySQL already
// recorded the outcome, and it is then acked and dropped. So when acks pile up (NATS down),
// new ones are dropped rather than queued without bound.
func (c *completer) settleMessages(group []*finished, applied []bool) {
	var ack, redeliver []queue.Msg
	for i, f := range group {
		switch {
		case f.msg == nil:
		case applied[i] && f.outcome.Kind != jobsdb.OutcomeRelease:
			ack = append(ack, f.msg)
		default:
			redeliver = append(redeliver, f.msg)
		}
	}
	if len(ack)+len(redeliver) == 0 {
		return
	}
	select {
	case c.acking <- struct{}{}:
	default:
		return
	}
	c.acks.Add(1)
	go func() {
		defer func() { <-c.acking; c.acks.Done() }()
		for _, m := range redeliver {
			m.NakWithDelay(queue.MinNakDelay)
		}
		ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
		defer cancel()
		queue.AckAll(ctx, ack)
	}()
}
