package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// table is the scheduling of one target table: its elector and, while it leads, its loop.
type table struct {
	s       *Scheduler
	name    string
	log     *slog.Logger
	elector *leadership.Elector
}

// run inspects the table, then campaigns for it and leads it whenever elected, until ctx
// ends. It returns an error only when the table cannot be scheduled at all.
func (t *table) run(ctx context.Context) error {
	jobs, err := t.open(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		t.log.Error("cannot schedule table", "err", err)
		return err
	}
	return t.elector.Run(ctx, func(ctx context.Context) { t.lead(ctx, jobs) })
}

// open inspects the target, retrying while MySQL is unreachable; a table that cannot be
// scheduled as configured (cli.OpenJobs' usage errors) is final.
func (t *table) open(ctx context.Context) (*jobsdb.Jobs, error) {
	o := &t.s.opts
	return backoff.Retry(ctx, func() (*jobsdb.Jobs, error) {
		jobs, err := cli.OpenJobs(ctx, o.DB, o.Config, t.name, o.Identity)
		var usage *cli.UsageError
		if errors.As(err, &usage) {
			return nil, backoff.Permanent(err)
		}
		return jobs, err
	}, t.retryOptions("inspect the target table")...)
}

func (t *table) newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = t.s.opts.PollInterval
	b.MaxInterval = max(t.s.opts.ErrorBackoffMax, t.s.opts.PollInterval)
	b.Reset()
	return b
}

func (t *table) retryOptions(what string) []backoff.RetryOption {
	return []backoff.RetryOption{
		backoff.WithBackOff(t.newBackoff()),
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			t.log.Error("cannot "+what+"; retrying", "err", err, "retry_in", next.Round(time.Millisecond))
		}),
	}
}

// lead runs the leader loop until ctx ends (the lock was lost or the scheduler stops).
func (t *table) lead(ctx context.Context, jobs *jobsdb.Jobs) {
	o := &t.s.opts
	target := jobs.Target()
	t.log.Info("leading table: refreshing and dispatching")
	defer t.log.Info("stopped leading table")
	if _, err := backoff.Retry(ctx, func() (struct{}, error) {
		return struct{}{}, jobs.Declare(ctx)
	}, t.retryOptions("declare the jobs table")...); err != nil {
		return
	}
	qcfg := queue.Config{
		Prefix:   o.Config.NATS.SubjectPrefix,
		Replicas: o.Config.NATS.Replicas,
		AckWait:  o.Config.NATS.AckWait.Duration(),
	}
	stream, err := backoff.Retry(ctx, func() (*queue.Table, error) {
		return queue.Open(ctx, o.NATS, target.Schema, target.Name, qcfg)
	}, t.retryOptions("open the table's stream")...)
	if err != nil {
		return
	}
	l := &leaderLoop{
		t:               t,
		jobs:            jobs,
		target:          target,
		stream:          stream,
		refreshBackoff:  t.newBackoff(),
		recoverBackoff:  t.newBackoff(),
		dispatchBackoff: t.newBackoff(),
	}
	defer l.observe()()
	l.loop(ctx)
}

// leaderLoop is one term of leadership of a table.
type leaderLoop struct {
	t      *table
	jobs   *jobsdb.Jobs
	target *jobsdb.Target
	stream *queue.Table

	nextRefresh, nextRecover, nextSample            time.Time // zero: at once
	refreshBackoff, recoverBackoff, dispatchBackoff *backoff.ExponentialBackOff
	gauges                                          *gauges // nil when metrics are off
}

func (l *leaderLoop) loop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		wake := l.pass(ctx)
		if ctx.Err() != nil {
			return
		}
		timer.Reset(time.Until(wake))
	}
}

// pass does what is due: refresh, recovery, dispatch; it returns when to pass again.
func (l *leaderLoop) pass(ctx context.Context) time.Time {
	o := &l.t.s.opts
	log := l.t.log
	autoRefresh := o.Config.Jobs.AutoRefresh
	metrics := o.Telemetry.Metrics()
	refreshed := false

	if now := time.Now(); autoRefresh && !now.Before(l.nextRefresh) {
		res, err := l.jobs.Refresh(ctx, jobsdb.RefreshOptions{
			Priority:      o.Config.Jobs.DefaultPriority,
			StaleTimeout:  o.Config.Jobs.StaleTimeout.Duration(),
			OrphanTimeout: o.Config.Jobs.OrphanTimeout.Duration(),
		})
		switch {
		case ctx.Err() != nil:
			return time.Now()
		case err != nil:
			next := l.refreshBackoff.NextBackOff()
			log.Error("refresh failed; retrying", "err", err, "retry_in", next.Round(time.Millisecond))
			l.nextRefresh = time.Now().Add(next)
		default:
			l.refreshBackoff.Reset()
			took := time.Since(now)
			metrics.RefreshDone(ctx, l.t.name, took, res.Added, res.Removed)
			// Refresh recovers expired leases too, as the recovery below does.
			metrics.Recovered(ctx, l.t.name, res.Orphaned)
			refreshed = true
			level := slog.LevelDebug
			if res.Added+res.Removed+res.Orphaned+res.RePended > 0 {
				level = slog.LevelInfo
			}
			log.Log(ctx, level, "refreshed", "added", res.Added, "removed", res.Removed,
				"orphaned", res.Orphaned, "re_pended", res.RePended, "took", took.Round(time.Millisecond))
			l.nextRefresh = now.Add(o.Config.Jobs.RefreshInterval.Duration())
		}
	}

	if now := time.Now(); !now.Before(l.nextRecover) {
		n, err := l.jobs.RecoverExpired(ctx, o.Config.Jobs.OrphanTimeout.Duration())
		switch {
		case ctx.Err() != nil:
			return time.Now()
		case errors.Is(err, jobsdb.ErrNoJobsTable):
			// Dropped behind our back (jobsctl drop): nothing to recover.
			l.nextRecover = now.Add(o.RecoverInterval)
		case err != nil:
			next := l.recoverBackoff.NextBackOff()
			log.Error("recovering expired leases failed; retrying", "err", err, "retry_in", next.Round(time.Millisecond))
			l.nextRecover = time.Now().Add(next)
		default:
			l.recoverBackoff.Reset()
			metrics.Recovered(ctx, l.t.name, n)
			if n > 0 {
				log.Info("recovered jobs whose lease expired", "jobs", n)
			}
			l.nextRecover = now.Add(o.RecoverInterval)
		}
	}

	wake, err := l.dispatch(ctx)
	if ctx.Err() != nil {
		return time.Now()
	}
	if errors.Is(err, jobsdb.ErrNoJobsTable) {
		// Dropped behind our back (jobsctl drop): nothing to dispatch until a refresh
		// declares it again.
		log.Debug("the jobs table does not exist; nothing to dispatch")
		err, wake = nil, time.Now().Add(o.PollInterval)
	}
	if err != nil {
		next := l.dispatchBackoff.NextBackOff()
		log.Error("dispatch failed; retrying", "err", err, "retry_in", next.Round(time.Millisecond))
		wake = time.Now().Add(next)
	} else {
		l.dispatchBackoff.Reset()
	}

	// The gauges' samples: after each refresh, so that they show its jobs, and every
	// GaugeInterval, so that they follow the workers.
	if l.gauges != nil {
		if now := time.Now(); refreshed || !now.Before(l.nextSample) {
			l.sample(ctx)
			if ctx.Err() != nil {
				return time.Now()
			}
			l.nextSample = now.Add(o.GaugeInterval)
		}
		if l.nextSample.Before(wake) {
			wake = l.nextSample
		}
	}
	if autoRefresh && l.nextRefresh.Before(wake) {
		wake = l.nextRefresh
	}
	if l.nextRecover.Before(wake) {
		wake = l.nextRecover
	}
	return wake
}

// health repairs the table's stream (removing messages no consumer would deliver) and returns
// which priorities still hold messages and how many more may be published before the stream
// holds DispatchWindow waiting ones. When the stream cannot be read, busy is nil (nothing is
// presumed lost) and the window is not enforced: MySQL's dispatched_time still keeps one
// message per job.
func (l *leaderLoop) health(ctx context.Context) (busy []int, room int) {
	window := l.t.s.opts.DispatchWindow
	h, purged, err := l.stream.Repair(ctx)
	if err != nil {
		l.t.log.Debug("reading the stream's state failed; publishing without a window", "err", err)
		return nil, window
	}
	if purged > 0 {
		l.t.log.Warn("removed messages that no consumer would deliver (left behind by a NATS server crash, or not published by jetjobs); their jobs are published again",
			"messages", purged)
	}
	return h.Busy(), window - int(h.Waiting())
}

func (l *leaderLoop) dispatch(ctx context.Context) (time.Time, error) {
	o := &l.t.s.opts
	ev := DispatchEvent{Table: l.t.name}
	stored := 0 // new messages in the stream, whether marked dispatched or not
	defer func() {
		if stored > 0 {
			o.Telemetry.Metrics().Published(ctx, l.t.name, stored)
		}
		if ev.Published > 0 {
			if err := l.stream.Wake(); err != nil {
				l.t.log.Warn("waking workers failed; they find the jobs at their next poll", "err", err)
			}
		}
		if ev.Published+ev.AlreadyQueued > 0 {
			l.t.log.Debug("dispatched", "published", ev.Published, "already_queued", ev.AlreadyQueued)
			if o.OnDispatch != nil {
				o.OnDispatch(ev)
			}
		}
	}()

	busy, room := l.health(ctx)
	for range MaxBatchesPerPass {
		if room <= 0 {
			break
		}
		limit := min(o.BatchSize, room)
		due, err := l.jobs.DueForDispatch(ctx, jobsdb.DueFilter{
			Limit: limit, RedispatchAfter: o.RedispatchAfter, Busy: busy, LostAfter: LostAfter,
		})
		if err != nil {
			return time.Time{}, fmt.Errorf("find due jobs: %w", err)
		}
		if len(due) == 0 {
			break
		}
		msgs := make([]queue.Message, 0, len(due))
		keys := make([]jobsdb.Key, 0, len(due))
		for _, job := range due {
			data, err := l.target.KeyJSON(job.Key)
			if err != nil {
				l.t.log.Error("cannot encode a job's key; skipping it", "key", fmt.Sprint(job.Key), "err", err)
				continue
			}
			msgs = append(msgs, queue.Message{Priority: job.Priority, Key: data})
			keys = append(keys, job.Key)
		}
		spans := l.startPublishSpans(ctx, msgs)
		pctx, cancel := context.WithTimeout(ctx, o.PublishTimeout)
		published, err := l.stream.Publish(pctx, msgs)
		cancel()
		if len(published) != len(msgs) {
			err = fmt.Errorf("publish %d jobs: queue reported %d results (%v)", len(msgs), len(published), err)
			endPublishSpans(spans, nil, err)
			return time.Time{}, err
		}
		endPublishSpans(spans, published, err)
		for _, p := range published {
			if p {
				stored++
			}
		}
		if err != nil {
			// published[i] still tells which messages were stored; the others (refused as
			// already queued, or failed: Publish cannot say which) stay unmarked and are
			// published again on the next pass.
			var stored []jobsdb.Key
			for i, p := range published {
				if p {
					stored = append(stored, keys[i])
				}
			}
			if len(stored) > 0 {
				if merr := l.jobs.MarkDispatched(ctx, stored); merr == nil {
					ev.Published += len(stored)
				}
			}
			return time.Time{}, fmt.Errorf("publish %d jobs (%d stored): %w", len(msgs), len(stored), err)
		}
		// Every message is now in the stream: new, or still there from an earlier publish.
		if err := l.jobs.MarkDispatched(ctx, keys); err != nil {
			return time.Time{}, fmt.Errorf("mark %d jobs dispatched: %w", len(keys), err)
		}
		for _, p := range published {
			if p {
				ev.Published++
				room--
			} else {
				ev.AlreadyQueued++
			}
		}
		if len(due) < limit {
			break
		}
	}

	now := time.Now()
	wake := now.Add(o.PollInterval)
	next, ok, err := l.jobs.NextDue(ctx)
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
