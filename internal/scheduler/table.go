package scheduler

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/startstop"
)

// leaderService is what every service of a table's leader holds besides its loop: the
// options, the table's name (for logs, metrics and events) and its jobs handle.
type leaderService struct {
	periodic
	o     *Options
	table string
	jobs  *jobsdb.Jobs
}

// table is the scheduling of one target table, a service: it inspects the target (retrying
// while MySQL is unreachable), then campaigns for the table's lock with its elector, whose
// term (lead) runs the leader's services.
type table struct {
	startstop.Base
	o       *Options
	spec    Table
	log     *slog.Logger
	elector *leadership.Elector
	// fatal reports that the table cannot be scheduled as configured (a *TableError).
	fatal func(error)
	// jobs is the table's handle, set by each Start before the elector starts.
	jobs *jobsdb.Jobs
}

func newTable(o *Options, spec Table, fatal func(error)) *table {
	t := &table{o: o, spec: spec, log: o.Logger.With("table", spec.Name), fatal: fatal}
	lcfg := o.Leadership
	lcfg.Logger = t.log
	t.elector = leadership.New(o.DB, leadership.LockName(spec.Name), lcfg, t.lead)
	return t
}

// Start inspects the table and campaigns for it in the background, until Stop or the end of
// ctx. A table that cannot be scheduled is reported to fatal, and the service ends.
func (t *table) Start(ctx context.Context) error {
	ctx, ok, done := t.StartInit(ctx)
	if !ok {
		return nil
	}
	go func() {
		defer done()
		if !t.inspect(ctx) {
			return
		}
		_ = t.elector.Start(ctx) // never fails
		<-ctx.Done()
		t.elector.Stop()
	}()
	return nil
}

// inspect reads the target and sets t.jobs. It reports whether the table can be scheduled;
// when it cannot, it has told fatal why (unless ctx ended).
func (t *table) inspect(ctx context.Context) bool {
	target, err := backoff.Retry(ctx, func() (*jobsdb.Target, error) {
		target, err := jobsdb.Inspect(ctx, t.o.DB, t.spec.Name, t.spec.KeySource)
		if terr := unschedulable(t.spec.Name, err); terr != nil {
			return nil, backoff.Permanent(error(terr))
		}
		return target, err
	}, t.retryOptions("inspect the target table")...)
	if err != nil {
		if ctx.Err() == nil {
			t.log.Error("cannot schedule table", "err", err)
			t.fatal(err)
		}
		return false
	}
	t.jobs = jobsdb.New(t.o.DB, target, t.o.Jobs)
	return true
}

// retryOptions retry a step of the table's setup until it succeeds, logging each failure.
func (t *table) retryOptions(what string) []backoff.RetryOption {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = t.o.PollInterval
	b.MaxInterval = max(t.o.ErrorBackoffMax, t.o.PollInterval)
	return []backoff.RetryOption{
		backoff.WithBackOff(b),
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, next time.Duration) {
			t.log.Error("cannot "+what+"; retrying", "err", err, "retry_in", next.Round(time.Millisecond))
		}),
	}
}

// lead is the table's term of leadership: it declares the jobs table and runs the leader's
// services until ctx ends (the lock was lost or the scheduler stops). Refreshing, recovering
// and sampling need MySQL only, and start at once; the dispatcher starts once the table's
// stream opens (never without NATS), so an unreachable NATS server holds up nothing else.
func (t *table) lead(ctx context.Context) {
	if t.o.NATS == nil {
		t.log.Info("leading table: refreshing and recovering (dispatch=mysql: workers claim due jobs from the jobs table)")
	} else {
		t.log.Info("leading table: refreshing and dispatching")
	}
	defer t.log.Info("stopped leading table")
	if !t.declare(ctx) {
		return
	}
	services := t.services()
	if err := startstop.StartAll(ctx, services...); err != nil {
		t.log.Error("cannot start leading the table", "err", err)
		return
	}
	<-ctx.Done()
	startstop.StopAll(services...)
}

// declare declares the jobs table, retrying until it succeeds or ctx ends.
func (t *table) declare(ctx context.Context) bool {
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		return struct{}{}, t.jobs.Declare(ctx)
	}, t.retryOptions("declare the jobs table")...)
	return err == nil
}

// services are the leader's services for one term: the dispatcher on its stream (unless there
// is no NATS), the rescuer, the refresher (unless the periodic refresh is off), the events
// service (unless events are off or there is no NATS) and the sampler (when metrics are on).
// The refresher pokes the dispatcher and the sampler after each refresh, the events service
// after each refresh that added jobs, the rescuer pokes the dispatcher when it recovered jobs.
func (t *table) services() []startstop.Service {
	var services []startstop.Service
	poke := func() {}
	var stream func() *queue.Table
	if t.o.NATS != nil {
		d := newStreamDispatcher(t)
		services = append(services, d)
		poke, stream = d.Poke, d.stream.Load
	}
	services = append(services, newRescuer(t.o, t.spec.Name, t.log, t.jobs, poke))
	refreshed := poke
	if s := newSampler(t.o, t.spec.Name, t.log, t.jobs, stream); s != nil {
		services = append(services, s)
		refreshed = func() { poke(); s.Poke() }
	}
	if !t.o.Refresh.Disabled {
		services = append(services, newRefresher(t.o, t.spec.Name, t.log, t.jobs, refreshed))
	}
	if !t.o.Events.Disabled && t.o.NATS != nil {
		services = append(services, newEvents(t.o, t.spec, t.log, t.jobs, refreshed))
	}
	return services
}

// streamDispatcher opens the table's stream, retrying while NATS is unreachable, and then runs
// the dispatcher on it until it is stopped. Poke reaches the dispatcher once it runs.
type streamDispatcher struct {
	startstop.Base
	t      *table
	stream atomic.Pointer[queue.Table] // once opened
	mu     sync.Mutex
	d      *dispatcher // once running
}

func newStreamDispatcher(t *table) *streamDispatcher { return &streamDispatcher{t: t} }

// Start opens the stream and starts the dispatcher in the background.
func (s *streamDispatcher) Start(ctx context.Context) error {
	ctx, ok, done := s.StartInit(ctx)
	if !ok {
		return nil
	}
	go func() {
		defer done()
		t := s.t
		target := t.jobs.Target()
		stream, err := backoff.Retry(ctx, func() (*queue.Table, error) {
			return queue.Open(ctx, t.o.NATS, target.Schema, target.Name, t.o.Queue)
		}, t.retryOptions("open the table's stream; refreshing and recovering meanwhile")...)
		if err != nil {
			return // stopped
		}
		s.stream.Store(stream)
		d := newDispatcher(t.o, t.spec.Name, t.log, t.jobs, stream)
		if err := d.Start(ctx); err != nil {
			t.log.Error("cannot start dispatching", "err", err)
			return
		}
		s.mu.Lock()
		s.d = d
		s.mu.Unlock()
		<-ctx.Done()
		d.Stop()
	}()
	return nil
}

// Poke makes the dispatcher pass at once, once it runs.
func (s *streamDispatcher) Poke() {
	s.mu.Lock()
	d := s.d
	s.mu.Unlock()
	if d != nil {
		d.Poke()
	}
}
