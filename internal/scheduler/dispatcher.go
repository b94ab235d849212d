package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// dispatcher is the service of a table's leader that publishes due jobs to the table's
// stream, and keeps it fed as workers drain it.
//
// A pass reads how much room the dispatch window leaves, publishes due pending jobs that need
// a message (jobsdb's DueForDispatch: never published, published longer than RedispatchAfter
// ago, or whose priority's messages are gone from the stream), marks them dispatched
// MarkDelay later (when most are reserved, so the marks write little) and wakes idle workers. Passes come when workers report demand (each fetch that brought messages), when
// the refresher or the rescuer pokes, when the next job becomes due (jobsdb's NextDue), and
// after PollInterval at most: so no pass sleeps while due jobs wait and the stream has room.
//
// The window is sized by the fleet: WindowPerSlot messages per slot of the workers that
// reported demand within DemandTTL, at least BatchSize and at most DispatchWindow (all of it
// before any worker reported). A pass counts the stream's messages with one cheap read; every
// RepairInterval it reads the consumers too, to repair the stream and learn which priorities
// still hold messages. A failing pass is retried with a backoff of its own.
type dispatcher struct {
	leaderService
	target *jobsdb.Target
	stream *queue.Table

	mu    sync.Mutex
	fleet map[string]fleetWorker // by worker id, from the demand reports

	// Owned by the pass in progress.
	repairedAt time.Time        // when the consumers were last read
	busy       []int            // the priorities holding messages then (nil: unknown)
	cursor     *jobsdb.Job      // the last job published, while a backlog is worked through
	fromHead   time.Time        // when a pass last read the due jobs from the most urgent one
	unmarked   []publishedBatch // batches published but not yet marked dispatched, oldest first
	inFlight   map[string]bool  // the keys (as published) of the unmarked batches
}

// publishedBatch is a batch of jobs published, to be marked dispatched MarkDelay after they were
// read for publishing.
type publishedBatch struct {
	read time.Time // before the statement that read them
	keys []jobsdb.Key
	ids  []string // the keys as published: their entries in inFlight
}

// fleetWorker is what the demand reports of one worker said last.
type fleetWorker struct {
	slots int
	seen  time.Time
}

func newDispatcher(o *Options, table string, log *slog.Logger, jobs *jobsdb.Jobs, stream *queue.Table) *dispatcher {
	d := &dispatcher{leaderService: leaderService{o: o, table: table, jobs: jobs}, target: jobs.Target(), stream: stream,
		inFlight: make(map[string]bool)}
	d.init(log, d.runOnce, "dispatch failed; retrying", slog.LevelError, o.PollInterval, o.ErrorBackoffMax)
	d.begin = d.followDemand
	return d
}

// followDemand subscribes to the workers' demand reports for the service's run: each one
// records the worker's slots and pokes a pass. It also follows the due times of the retries
// workers record, and plans a pass for each.
func (d *dispatcher) followDemand() (end func()) {
	d.mu.Lock()
	d.fleet = make(map[string]fleetWorker)
	d.mu.Unlock()
	d.repairedAt, d.busy = time.Time{}, nil
	// Batches a former term left unmarked are published again (and refused as already
	// queued, then marked) by a pass from the head.
	d.unmarked, d.inFlight = nil, make(map[string]bool)
	sub, err := d.stream.SubscribeDemand(func(q queue.Demand) {
		d.mu.Lock()
		d.fleet[q.Worker] = fleetWorker{slots: q.Slots, seen: time.Now()}
		d.mu.Unlock()
		d.Poke()
	})
	if err != nil {
		d.log.Warn("cannot follow the workers' demand; the stream is refilled every poll interval", "err", err)
	}
	// Retries recorded by workers: pass when they become due, not at the next poll.
	due, derr := d.stream.SubscribeDue(func(after time.Duration) { d.PokeAt(time.Now().Add(after)) })
	if derr != nil {
		d.log.Warn("cannot follow the workers' retries; they are published within the poll interval of their time", "err", derr)
	}
	return func() {
		// Unsubscribing fails only on a closed connection.
		if sub != nil {
			_ = sub.Unsubscribe()
		}
		if due != nil {
			_ = due.Unsubscribe()
		}
	}
}

// window is how many messages the stream may hold: sized by the fleet's slots.
func (d *dispatcher) window() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	slots := 0
	for id, w := range d.fleet {
		if time.Since(w.seen) > DemandTTL {
			delete(d.fleet, id)
			continue
		}
		slots += w.slots
	}
	if slots == 0 {
		return d.o.DispatchWindow
	}
	return min(max(WindowPerSlot*slots, d.o.BatchSize), d.o.DispatchWindow)
}

// pass is what one dispatch pass did.
type pass struct {
	DispatchEvent
	stored int  // new messages in the stream, whether marked dispatched or not
	woken  bool // idle workers were woken for them
	room   int  // messages the dispatch window still takes
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
	if err := d.markPublished(ctx, time.Now().Add(-MarkDelay)); err != nil {
		return time.Time{}, err
	}
	window := d.window()
	p.room = d.room(ctx, window)
	if p.room < min(d.o.BatchSize, window/refillFraction) {
		// Full enough: the next demand report (or the poll) brings the next pass.
		return time.Now().Add(d.o.PollInterval), nil
	}
	lostAfter := time.Since(d.repairedAt) + LostAfter
	if time.Since(d.fromHead) >= RepairInterval {
		// Jobs that became due before the cursor meanwhile (released, recovered, lost
		// messages) are found from the head, every RepairInterval.
		d.cursor = nil
	}
	if d.cursor == nil {
		d.fromHead = time.Now()
	}
	for range MaxBatchesPerPass {
		if p.room <= 0 {
			return time.Now().Add(d.o.PollInterval), nil // a backlog waits for room
		}
		limit := min(d.o.BatchSize, p.room)
		n, err := d.batch(ctx, p, limit, lostAfter)
		if err != nil {
			return time.Time{}, err
		}
		if n < limit {
			break
		}
	}
	return d.nextWake(ctx)
}

// room is how many more messages the window takes. Every RepairInterval it repairs the stream
// (removing messages no consumer would deliver) and learns which priorities still hold
// messages; in between it counts the stream's messages only. When the stream cannot be read,
// nothing is presumed lost and the window is not enforced: MySQL's dispatched_time still keeps
// one message per job.
func (d *dispatcher) room(ctx context.Context, window int) int {
	if time.Since(d.repairedAt) < RepairInterval {
		n, err := d.stream.Messages(ctx)
		if err == nil {
			return window - int(n)
		}
	}
	d.repairedAt = time.Now()
	h, purged, err := d.stream.Repair(ctx)
	if err != nil {
		d.busy = nil
		d.log.Debug("reading the stream's state failed; publishing without a window", "err", err)
		return window
	}
	if purged > 0 {
		d.log.Warn("removed messages that no consumer would deliver (left behind by a NATS server crash, or not published by jetjobs); their jobs are published again",
			"messages", purged)
	}
	d.busy = h.Busy()
	return window - int(h.Messages)
}

// batch publishes up to limit due jobs, to be marked dispatched MarkDelay later
// (markPublished). It returns how many due jobs it found: fewer than limit means there are no
// more.
func (d *dispatcher) batch(ctx context.Context, p *pass, limit int, lostAfter time.Duration) (int, error) {
	read := time.Now()
	due, err := d.jobs.DueForDispatch(ctx, jobsdb.DueFilter{
		Limit: limit, RedispatchAfter: d.o.RedispatchAfter, Busy: d.busy, LostAfter: lostAfter, After: d.cursor,
	})
	if err != nil {
		d.cursor = nil
		return 0, fmt.Errorf("find due jobs: %w", err)
	}
	// Continue after the last of them, or from the head once the backlog is through.
	d.cursor = nil
	if len(due) == limit {
		d.cursor = &due[len(due)-1]
	}
	if len(due) == 0 {
		return 0, nil
	}
	msgs, keys := d.messages(due)
	if len(msgs) == 0 {
		return len(due), nil // all published within MarkDelay
	}
	published, err := d.publish(ctx, msgs)
	if err != nil {
		d.cursor = nil // what was not stored is found from the head
	}
	if err != nil && len(published) != len(msgs) {
		return 0, err
	}
	for _, ok := range published {
		if ok {
			p.stored++
		}
	}
	d.wake(p)
	if err != nil {
		return 0, d.markStored(ctx, p, keys, published, read, err)
	}
	// Every message is now in the stream: new, or still there from an earlier publish.
	batch := publishedBatch{read: read, keys: keys, ids: make([]string, len(msgs))}
	for i, m := range msgs {
		batch.ids[i] = string(m.Key)
		d.inFlight[batch.ids[i]] = true
	}
	d.unmarked = append(d.unmarked, batch)
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

// markPublished marks dispatched the batches read for publishing before the given time.
func (d *dispatcher) markPublished(ctx context.Context, readBefore time.Time) error {
	for len(d.unmarked) > 0 && d.unmarked[0].read.Before(readBefore) {
		b := d.unmarked[0]
		if err := d.jobs.MarkDispatched(ctx, b.keys, time.Since(b.read)); err != nil {
			return fmt.Errorf("mark %d jobs dispatched: %w", len(b.keys), err)
		}
		for _, id := range b.ids {
			delete(d.inFlight, id)
		}
		d.unmarked = d.unmarked[1:]
	}
	return nil
}

// messages encodes the jobs' keys; a key that cannot be encoded is logged and skipped, and so
// is a job published within MarkDelay (not marked yet).
func (d *dispatcher) messages(due []jobsdb.Job) ([]queue.Message, []jobsdb.Key) {
	msgs := make([]queue.Message, 0, len(due))
	keys := make([]jobsdb.Key, 0, len(due))
	for _, job := range due {
		data, err := d.target.KeyJSON(job.Key)
		if err != nil {
			d.log.Error("cannot encode a job's key; skipping it", "key", fmt.Sprint(job.Key), "err", err)
			continue
		}
		if d.inFlight[string(data)] {
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
func (d *dispatcher) markStored(ctx context.Context, p *pass, keys []jobsdb.Key, published []bool, read time.Time, err error) error {
	var stored []jobsdb.Key
	for i, ok := range published {
		if ok {
			stored = append(stored, keys[i])
		}
	}
	if len(stored) > 0 {
		if merr := d.jobs.MarkDispatched(ctx, stored, time.Since(read)); merr == nil {
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

// wake wakes idle workers once per pass, as soon as the stream holds new messages: before
// the jobs are marked dispatched, whose commit the workers need not wait for (a job reserved
// meanwhile is not marked: MarkDispatched only marks pending jobs).
func (d *dispatcher) wake(p *pass) {
	if p.stored == 0 || p.woken {
		return
	}
	p.woken = true
	if err := d.stream.Wake(); err != nil {
		d.log.Warn("waking workers failed; they find the jobs at their next poll", "err", err)
	}
}

// report tells what a pass did: the published counter, a wake-up for idle workers when there
// are new messages (unless a batch woke them already), a debug log and OnDispatch.
func (d *dispatcher) report(ctx context.Context, p *pass) {
	if p.stored > 0 {
		d.o.Telemetry.Metrics().Published(ctx, d.table, p.stored)
	}
	d.wake(p)
	if p.Published+p.AlreadyQueued > 0 {
		d.log.Debug("dispatched", "published", p.Published, "already_queued", p.AlreadyQueued)
		if d.o.OnDispatch != nil {
			d.o.OnDispatch(p.DispatchEvent)
		}
	}
}
