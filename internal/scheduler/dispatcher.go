package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// dispatcher is the service of a table's leader that publishes due jobs to the table's
// stream. Each pass repairs the stream and reads how much room the dispatch window leaves,
// publishes every due pending job that needs a message (jobsdb's DueForDispatch: never
// published, published longer than RedispatchAfter ago, or whose priority's messages are gone
// from the stream), marks them dispatched and wakes idle workers. It passes again when the
// next job becomes due (jobsdb's NextDue), after PollInterval at most, and at once when poked
// by the refresher or the rescuer. A failing pass is retried with a backoff of its own.
type dispatcher struct {
	leaderService
	target *jobsdb.Target
	stream *queue.Table
}

func newDispatcher(o *Options, table string, log *slog.Logger, jobs *jobsdb.Jobs, stream *queue.Table) *dispatcher {
	d := &dispatcher{leaderService: leaderService{o: o, table: table, jobs: jobs}, target: jobs.Target(), stream: stream}
	d.init(log, d.runOnce, "dispatch failed; retrying", slog.LevelError, o.PollInterval, o.ErrorBackoffMax)
	return d
}

// pass is what one dispatch pass did.
type pass struct {
	DispatchEvent
	stored int // new messages in the stream, whether marked dispatched or not
	room   int // messages the dispatch window still takes
}

// runOnce is one dispatch pass; it returns when to pass again.
func (d *dispatcher) runOnce(ctx context.Context) (time.Time, error) {
	wake, err := d.dispatch(ctx)
	if errors.Is(err, jobsdb.ErrNoJobsTable) {
		// Dropped behind our back (jobsctl drop): nothing to dispatch until a refresh
		// declares it again.
		d.log.Debug("the jobs table does not exist; nothing to dispatch")
		return time.Now().Add(d.o.PollInterval), nil
	}
	return wake, err
}

func (d *dispatcher) dispatch(ctx context.Context) (time.Time, error) {
	p := &pass{DispatchEvent: DispatchEvent{Table: d.table}}
	defer d.report(ctx, p)
	busy, room := d.health(ctx)
	p.room = room
	for range MaxBatchesPerPass {
		if p.room <= 0 {
			break
		}
		limit := min(d.o.BatchSize, p.room)
		n, err := d.batch(ctx, p, limit, busy)
		if err != nil {
			return time.Time{}, err
		}
		if n < limit {
			break
		}
	}
	return d.nextWake(ctx)
}

// health repairs the table's stream (removing messages no consumer would deliver) and returns
// which priorities still hold messages and how many more may be published before the stream
// holds DispatchWindow waiting ones. When the stream cannot be read, busy is nil (nothing is
// presumed lost) and the window is not enforced: MySQL's dispatched_time still keeps one
// message per job.
func (d *dispatcher) health(ctx context.Context) (busy []int, room int) {
	window := d.o.DispatchWindow
	h, purged, err := d.stream.Repair(ctx)
	if err != nil {
		d.log.Debug("reading the stream's state failed; publishing without a window", "err", err)
		return nil, window
	}
	if purged > 0 {
		d.log.Warn("removed messages that no consumer would deliver (left behind by a NATS server crash, or not published by jetjobs); their jobs are published again",
			"messages", purged)
	}
	return h.Busy(), window - int(h.Waiting())
}

// batch publishes up to limit due jobs and marks them dispatched. It returns how many due
// jobs it found: fewer than limit means there are no more.
func (d *dispatcher) batch(ctx context.Context, p *pass, limit int, busy []int) (int, error) {
	due, err := d.jobs.DueForDispatch(ctx, jobsdb.DueFilter{
		Limit: limit, RedispatchAfter: d.o.RedispatchAfter, Busy: busy, LostAfter: LostAfter,
	})
	if err != nil {
		return 0, fmt.Errorf("find due jobs: %w", err)
	}
	if len(due) == 0 {
		return 0, nil
	}
	msgs, keys := d.messages(due)
	published, err := d.publish(ctx, msgs)
	if err != nil && len(published) != len(msgs) {
		return 0, err
	}
	for _, ok := range published {
		if ok {
			p.stored++
		}
	}
	if err != nil {
		return 0, d.markStored(ctx, p, keys, published, err)
	}
	// Every message is now in the stream: new, or still there from an earlier publish.
	if err := d.jobs.MarkDispatched(ctx, keys); err != nil {
		return 0, fmt.Errorf("mark %d jobs dispatched: %w", len(keys), err)
	}
	for _, ok := range published {
		if ok {
			p.Published++
			p.room--
		} else {
			p.AlreadyQueued++
		}
	}
	return len(due), nil
}

// messages encodes the jobs' keys; a key that cannot be encoded is logged and skipped.
func (d *dispatcher) messages(due []jobsdb.Job) ([]queue.Message, []jobsdb.Key) {
	msgs := make([]queue.Message, 0, len(due))
	keys := make([]jobsdb.Key, 0, len(due))
	for _, job := range due {
		data, err := d.target.KeyJSON(job.Key)
		if err != nil {
			d.log.Error("cannot encode a job's key; skipping it", "key", fmt.Sprint(job.Key), "err", err)
			continue
		}
		msgs = append(msgs, queue.Message{Priority: job.Priority, Key: data})
		keys = append(keys, job.Key)
	}
	return msgs, keys
}

// publish publishes a batch within PublishTimeout, each message under a publish span when
// tracing is on. published[i] tells whether msgs[i] is new in the stream; when it does not
// hold a result per message, the error says so.
func (d *dispatcher) publish(ctx context.Context, msgs []queue.Message) ([]bool, error) {
	spans := d.startPublishSpans(ctx, msgs)
	pctx, cancel := context.WithTimeout(ctx, d.o.PublishTimeout)
	published, err := d.stream.Publish(pctx, msgs)
	cancel()
	if len(published) != len(msgs) {
		err = fmt.Errorf("publish %d jobs: queue reported %d results (%v)", len(msgs), len(published), err)
		endPublishSpans(spans, nil, err)
		return published, err
	}
	endPublishSpans(spans, published, err)
	return published, err
}

// markStored marks the jobs whose messages a failed publish stored. The others (refused as
// already queued, or failed: Publish cannot say which) stay unmarked and are published again
// on the next pass. It returns the publish's error.
func (d *dispatcher) markStored(ctx context.Context, p *pass, keys []jobsdb.Key, published []bool, err error) error {
	var stored []jobsdb.Key
	for i, ok := range published {
		if ok {
			stored = append(stored, keys[i])
		}
	}
	if len(stored) > 0 {
		if merr := d.jobs.MarkDispatched(ctx, stored); merr == nil {
			p.Published += len(stored)
		}
	}
	return fmt.Errorf("publish %d jobs (%d stored): %w", len(keys), len(stored), err)
}

// nextWake returns when the next pass is due: when the next job becomes due, or after
// PollInterval at most.
func (d *dispatcher) nextWake(ctx context.Context) (time.Time, error) {
	now := time.Now()
	wake := now.Add(d.o.PollInterval)
	next, ok, err := d.jobs.NextDue(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("find the next due job: %w", err)
	}
	// A next due time in the past by this host's clock means the clocks of MySQL and this
	// host disagree: keep to the poll interval rather than spin.
	if ok && next.After(now) && next.Before(wake) {
		wake = next
	}
	return wake, nil
}

// report tells what a pass did: the published counter, a wake-up for idle workers when there
// are new messages, a debug log and OnDispatch.
func (d *dispatcher) report(ctx context.Context, p *pass) {
	if p.stored > 0 {
		d.o.Telemetry.Metrics().Published(ctx, d.table, p.stored)
	}
	if p.Published > 0 {
		if err := d.stream.Wake(); err != nil {
			d.log.Warn("waking workers failed; they find the jobs at their next poll", "err", err)
		}
	}
	if p.Published+p.AlreadyQueued > 0 {
		d.log.Debug("dispatched", "published", p.Published, "already_queued", p.AlreadyQueued)
		if d.o.OnDispatch != nil {
			d.o.OnDispatch(p.DispatchEvent)
		}
	}
}
