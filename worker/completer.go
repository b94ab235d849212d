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
	"github.com/jetjobs/jetjobs/startstop"
	"github.com/jetjobs/jetjobs/tracing"
)

const (
	// completerBuffer is how many finished jobs may wait per batch slot before add blocks
	// (backpressure on the job slots): completerBuffer × RecordBatch.
	completerBuffer = 4
	ackTimeout      = 5 * time.Second
	acksInFlight    = 16
)

// completer records a table's outcomes in batches, each fenced by its lease token, and
// settles each message only after its outcome committed. A batch is written when it holds
// RecordBatch outcomes or when the oldest has waited RecordDelay. Outcomes with a Write
// callback get a transaction of their own.
//
// After Stop it records what is queued, retrying an unreachable MySQL for StopTimeout at most;
// the jobs it gives up on keep their leases until they expire. Nothing may be added after Stop.
type completer struct {
	startstop.Base
	tel         *tracing.Telemetry
	db          *sql.DB
	jobs        *jobsdb.Jobs
	batchSize   int
	delay       time.Duration
	stopTimeout time.Duration
	settled     func(j *job, applied bool, err error)
	// inserted, when not nil, is told the keys of the successes each commit recorded, so
	// that the tables depending on this one are refreshed for them at once.
	inserted func(keys [][]byte)
	// due, when not nil, is told the earliest due time of the retries each commit recorded,
	// so that the scheduler publishes them on time.
	due func(after time.Duration)
	in  chan *job

	// acking holds a token per batch of acks in flight; acks waits for them at the end.
	acking chan struct{}
	acks   sync.WaitGroup
}

func newCompleter(opts Options, jobs *jobsdb.Jobs, settled func(*job, bool, error)) *completer {
	return &completer{
		tel: opts.Telemetry, db: opts.DB, jobs: jobs,
		batchSize: opts.RecordBatch, delay: opts.RecordDelay, stopTimeout: opts.StopTimeout,
		settled: settled,
		in:      make(chan *job, completerBuffer*opts.RecordBatch),
		acking:  make(chan struct{}, acksInFlight),
	}
}

// Start starts recording in the background.
func (c *completer) Start(ctx context.Context) error {
	ctx, ok, done := c.StartInit(ctx)
	if !ok {
		return nil
	}
	// Retries go on after the stop, for stopTimeout at most.
	giveUp, cancelGiveUp := context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, func() { time.AfterFunc(c.stopTimeout, cancelGiveUp) })
	go func() {
		defer done()
		defer cancelGiveUp()
		c.run(ctx, giveUp)
		c.acks.Wait()
	}()
	return nil
}

// add queues a finished job; it blocks while the buffer is full.
func (c *completer) add(j *job) { c.in <- j }

func (c *completer) run(ctx, giveUp context.Context) {
	batch := make([]*job, 0, c.batchSize)
	timer := time.NewTimer(c.delay)
	timer.Stop()
	for {
		select {
		case j := <-c.in:
			batch = append(batch[:0], j)
			timer.Reset(c.delay)
		collect:
			for len(batch) < c.batchSize {
				select {
				case j := <-c.in:
					batch = append(batch, j)
				case <-timer.C:
					break collect
				}
			}
			timer.Stop()
			c.flush(giveUp, batch)
		case <-ctx.Done():
			// Record what is queued, then stop.
			for {
				batch = batch[:0]
			drain:
				for len(batch) < c.batchSize {
					select {
					case j := <-c.in:
						batch = append(batch, j)
					default:
						break drain
					}
				}
				if len(batch) == 0 {
					return
				}
				c.flush(giveUp, batch)
			}
		}
	}
}

func (c *completer) flush(ctx context.Context, batch []*job) {
	var grouped []*job
	for _, j := range batch {
		if j.write != nil {
			c.settle(ctx, []*job{j}, c.recordOwnTx)
		} else {
			grouped = append(grouped, j)
		}
	}
	if len(grouped) > 0 {
		c.settle(ctx, grouped, c.recordBatch)
	}
}

// recordFunc records a group of outcomes and says which were applied.
type recordFunc func(ctx context.Context, group []*job) ([]bool, error)

// settle records a group, retrying transient failures, then settles the messages and reports.
// A permanent failure of a batch (say, one job's rows do not fit the target) is narrowed down
// by recording the group's outcomes one by one; a success whose rows cannot be written is
// recorded as an error, so one bad job never blocks the others.
func (c *completer) settle(ctx context.Context, group []*job, record recordFunc) {
	spans := c.startSpans(group)
	applied, err := c.retry(ctx, group, record)
	defer endSpans(spans, err)
	if err != nil && !jobsdb.IsTransient(err) && ctx.Err() == nil {
		if len(group) > 1 {
			for _, j := range group {
				c.settle(ctx, []*job{j}, record)
			}
			return
		}
		if j := group[0]; j.outcome.Kind == jobsdb.OutcomeSuccess {
			j.outcome.Kind = jobsdb.OutcomeError
			j.outcome.Message = "recording the job's results failed: " + err.Error()
			j.outcome.Stack = err.Error()
			j.outcome.Rows, j.write = nil, nil
			applied, err = c.retry(ctx, group, c.recordBatch)
		}
	}
	if err != nil {
		// Nothing was recorded: settle no message, so they are redelivered and the leases
		// expire and are recovered by the scheduler.
		for _, j := range group {
			c.settled(j, false, fmt.Errorf("record outcome: %w", err))
		}
		return
	}
	c.settleMessages(group, applied)
	c.announce(group, applied)
	for i, j := range group {
		c.settled(j, applied[i], nil)
	}
}

// announce tells inserted the keys of the group's recorded successes, and due the earliest
// delay of its recorded retries.
func (c *completer) announce(group []*job, applied []bool) {
	var keys [][]byte
	retry, first := false, time.Duration(0)
	for i, j := range group {
		if !applied[i] {
			continue
		}
		switch j.outcome.Kind {
		case jobsdb.OutcomeSuccess:
			if len(j.keyJSON) > 0 {
				keys = append(keys, j.keyJSON)
			}
		case jobsdb.OutcomeRetry:
			if !retry || j.outcome.RetryAfter < first {
				retry, first = true, j.outcome.RetryAfter
			}
		}
	}
	if len(keys) > 0 && c.inserted != nil {
		c.inserted(keys)
	}
	if retry && c.due != nil {
		c.due(first)
	}
}

// startSpans starts one span per job for the statement that records the group, only when
// tracing is on.
func (c *completer) startSpans(group []*job) []trace.Span {
	if !c.tel.Enabled() {
		return nil
	}
	spans := make([]trace.Span, len(group))
	for i, j := range group {
		_, spans[i] = c.tel.StartDB(j.ctx, tracing.OpRecord(j.outcome.Kind), j.span)
	}
	return spans
}

func endSpans(spans []trace.Span, err error) {
	for _, s := range spans {
		tracing.End(s, err)
	}
}

// retry records the group until it is recorded, fails permanently, or ctx (the give-up
// context) ends. Transient and ambiguous failures are retried with exponential backoff;
// after an ambiguous one (the commit may have landed) the outcomes are recorded with
// MaybeRecorded.
func (c *completer) retry(ctx context.Context, group []*job, record recordFunc) ([]bool, error) {
	return backoff.Retry(ctx, func() ([]bool, error) {
		applied, err := record(ctx, group)
		if errors.Is(err, jobsdb.ErrAmbiguous) || jobsdb.IsAmbiguous(err) {
			for _, j := range group {
				j.outcome.MaybeRecorded = true
			}
		}
		if err != nil && !jobsdb.IsTransient(err) && !errors.Is(err, jobsdb.ErrAmbiguous) {
			return nil, backoff.Permanent(err)
		}
		return applied, err
	}, backoff.WithBackOff(backoff.NewExponentialBackOff()), backoff.WithMaxElapsedTime(0))
}

func (c *completer) recordBatch(ctx context.Context, group []*job) ([]bool, error) {
	outcomes := make([]jobsdb.Outcome, len(group))
	for i, j := range group {
		outcomes[i] = j.outcome
	}
	return c.jobs.Record(ctx, outcomes)
}

// recordOwnTx records one outcome whose handler writes inside the completion transaction:
// the lease is checked first, then the handler's writes, then the commit of both. After an
// ambiguous commit the lease is checked before anything runs again: a lease no longer held
// means that commit landed (or the job was taken over), and the handler's writes must not be
// made twice.
func (c *completer) recordOwnTx(ctx context.Context, group []*job) ([]bool, error) {
	j := group[0]
	ctx, cancel := context.WithTimeout(ctx, c.jobs.Options().StatementTimeout)
	defer cancel()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if j.outcome.MaybeRecorded {
		held, err := c.jobs.LockLeases(ctx, tx, []jobsdb.Lease{j.outcome.Lease})
		if err != nil {
			return nil, err
		}
		if !held[0] {
			return c.jobs.RecordTx(ctx, tx, []jobsdb.Outcome{j.outcome})
		}
	}
	applied, err := c.jobs.RecordTx(ctx, tx, []jobsdb.Outcome{j.outcome})
	if err != nil {
		return nil, err
	}
	if !applied[0] {
		return applied, nil
	}
	if err := j.write(ctx, tx); err != nil {
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
func (c *completer) settleMessages(group []*job, applied []bool) {
	var ack, redeliver []queue.Msg
	for i, j := range group {
		switch {
		case j.msg == nil:
		case applied[i] && j.outcome.Kind != jobsdb.OutcomeRelease:
			ack = append(ack, j.msg)
		default:
			redeliver = append(redeliver, j.msg)
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
