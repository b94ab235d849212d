package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/startstop"
	"github.com/jetjobs/jetjobs/worker"
)

// connsPerTable is how far Start raises a limited pool's MaxOpenConns per table: one for the
// elector's lock, one for the refresher, whose statements may run for minutes, and one for
// the refreshes for events.
const connsPerTable = 3

// Scheduler schedules the jobs of a set of tables between Start and Stop. Create it with New.
type Scheduler struct {
	startstop.Base
	opts   Options
	log    *slog.Logger
	tables []*table

	mu     sync.Mutex // guards errs and cancel
	errs   []error    // why the current (or last) run stopped by itself
	cancel context.CancelFunc
}

// New returns a scheduler for opts.Tables. It does not touch MySQL or NATS until Start.
func New(opts Options) *Scheduler {
	s := &Scheduler{opts: opts.withDefaults()}
	s.log = s.opts.Logger
	for _, spec := range s.opts.Tables {
		s.tables = append(s.tables, newTable(&s.opts, spec, s.fail))
	}
	return s
}

// States returns each table's leadership state.
func (s *Scheduler) States() map[string]leadership.State {
	states := make(map[string]leadership.State, len(s.tables))
	for _, t := range s.tables {
		states[t.spec.Name] = t.elector.State()
	}
	return states
}

// Start schedules the tables in the background until Stop is called or ctx ends: each table
// is inspected, then campaigned for, and led whenever this scheduler holds its lock. It
// returns at once an error for options that cannot work (ErrNoTables, a *TableError for a
// name that is not schema.table or is listed twice). MySQL and NATS errors are logged and
// retried; a table that cannot be scheduled as configured stops the scheduler, which then
// reports it through Err once Stopped is closed.
func (s *Scheduler) Start(ctx context.Context) error {
	if err := s.validate(); err != nil {
		return err
	}
	ctx, ok, done := s.StartInit(ctx)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.errs, s.cancel = nil, cancel
	s.mu.Unlock()
	restore := s.reserveConns()
	s.log.Info("scheduler starting", "tables", s.names(), "dispatch", s.opts.Dispatch,
		"auto_refresh", !s.opts.Refresh.Disabled,
		"refresh_interval", s.opts.Refresh.Interval,
		"recover_interval", s.opts.RecoverInterval,
		"redispatch_after", s.opts.RedispatchAfter,
		"poll_interval", s.opts.PollInterval)
	tables := make([]startstop.Service, len(s.tables))
	for i, t := range s.tables {
		tables[i] = t
	}
	_ = startstop.StartAll(ctx, tables...) // a table's Start never fails
	go func() {
		defer done()
		<-ctx.Done()
		startstop.StopAll(tables...)
		cancel()
		restore()
		s.log.Info("scheduler stopped")
	}()
	return nil
}

// Err returns why the scheduler stopped by itself: each table that cannot be scheduled as
// configured (a *TableError), joined. It is nil while the scheduler runs, and when it was
// stopped (Stop, the end of Start's context) before any table failed.
func (s *Scheduler) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}

// fail records a table that cannot be scheduled and stops the scheduler.
func (s *Scheduler) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, err)
	s.cancel()
}

func (s *Scheduler) validate() error {
	switch {
	case s.opts.DB == nil:
		return errors.New("scheduler: Options.DB is nil")
	case !s.opts.Dispatch.Valid():
		return fmt.Errorf("scheduler: Options.Dispatch %q: want one of %v", s.opts.Dispatch, worker.Dispatches)
	case s.opts.NATS == nil && s.opts.Dispatch != worker.DispatchMySQL:
		return errors.New("scheduler: Options.NATS is nil (it may be only with Dispatch mysql)")
	case len(s.tables) == 0:
		return ErrNoTables
	}
	return checkTables(s.opts.Tables)
}

// reserveConns raises a limited pool's MaxOpenConns by connsPerTable per table and returns
// the function that lowers it again.
func (s *Scheduler) reserveConns() (restore func()) {
	db := s.opts.DB
	limit := db.Stats().MaxOpenConnections
	if limit <= 0 {
		return func() {}
	}
	db.SetMaxOpenConns(limit + connsPerTable*len(s.tables))
	return func() { db.SetMaxOpenConns(limit) }
}

func (s *Scheduler) names() []string {
	names := make([]string, len(s.tables))
	for i, t := range s.tables {
		names[i] = t.spec.Name
	}
	return names
}
