package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/startstop"
)

// Pacing of the attempts to open a table at start.
const (
	openRetryInitial = 100 * time.Millisecond
	openRetryMax     = 5 * time.Second
	// openQueueTimeout bounds the attempt to open a table's stream at start with DispatchAuto:
	// a NATS server that does not answer by then is no reason to wait.
	openQueueTimeout = 5 * time.Second
)

// Worker takes jobs from JetStream and reserves them in MySQL, or claims them from MySQL alone
// (Options.Dispatch), runs the handler and records the outcome. Create it with New; Run it, or
// Start and Stop it.
type Worker struct {
	opts Options
	log  *slog.Logger
	id   string // random, for the demand reports

	slots chan struct{} // one token per running (or being reserved) job
	// progress is signalled whenever a job's outcome was settled.
	progress chan struct{}

	// Set by Start.
	modes      *modes // the dispatch mode now
	tables     []*table
	stopTaking context.CancelFunc // ends the fetch loops
	// jobsCtx is the parent of every job's context; abort cancels it (the grace period
	// ended): the running jobs are released.
	jobsCtx  context.Context
	abort    context.CancelFunc
	running  sync.WaitGroup // jobs reserved and not yet handed to their completer
	runs     chan *job      // reserved jobs, to the runners
	jobsDone chan struct{}  // closed once no fetch loop and no job is left
	done     chan struct{}  // closed once everything stopped

	mu       sync.Mutex
	started  bool
	summary  Summary
	finished int // jobs that count towards MaxCalls
	inflight int // jobs reserved and not yet settled
	failed   bool
}

// table is the worker's view of one target table: its jobs handle, its stream, and the
// services that keep its running jobs' leases and record their outcomes.
type table struct {
	name string
	jobs *jobsdb.Jobs
	// queue is the table's stream: set once opened; never with DispatchMySQL, and with
	// DispatchAuto only once NATS was reached.
	queue     atomic.Pointer[queue.Table]
	keeper    *keeper
	completer *completer

	// The sources of the fetch loop, made by it when it first needs them.
	nats    *natsSource
	claimer *claimer
}

// New checks the options and returns a worker; it does not touch MySQL or NATS until Start.
func New(opts Options) (*Worker, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	var id [8]byte
	rand.Read(id[:])
	w := &Worker{
		opts:     opts,
		log:      opts.Logger,
		id:       hex.EncodeToString(id[:]),
		slots:    make(chan struct{}, opts.Concurrency),
		progress: make(chan struct{}, 1),
		jobsDone: make(chan struct{}),
		done:     make(chan struct{}),
	}
	w.summary.ErrorList = []ErrorEntry{}
	return w, nil
}

// Run is populate(): it starts the worker and waits until it is done by itself (Once,
// MaxCalls, or a failure without SuppressErrors) or ctx ends; then it stops the worker,
// giving running jobs Grace to finish, and returns the summary. The error is ErrJobFailed
// when a job failed without SuppressErrors, or why the worker could not start (ctx ending
// while it still waited for MySQL or NATS is not an error).
func (w *Worker) Run(ctx context.Context) (Summary, error) {
	if err := w.Start(ctx); err != nil {
		sum, _ := w.Summary()
		if ctx.Err() != nil {
			return sum, nil // told to stop while starting
		}
		return sum, err
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		grace, cancel := context.WithTimeout(context.Background(), w.opts.Grace)
		w.Stop(grace)
		cancel()
	}
	return w.Summary()
}

// Start opens the tables and starts taking jobs in the background; the worker runs until
// Stop, or until it is done by itself (Done). While MySQL or NATS are unreachable (or a
// table's stream is being created by another process) it retries, logging each attempt,
// until ctx ends. A table that cannot be served as configured is a *TableError.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return errors.New("worker: already started")
	}
	w.started = true
	w.mu.Unlock()
	for _, t := range w.opts.Tables {
		tbl, err := w.openTableRetrying(ctx, t)
		if err != nil {
			w.stopServices()
			close(w.jobsDone)
			close(w.done)
			return err
		}
		w.tables = append(w.tables, tbl)
	}
	w.modes = newModes(w.initialMode(), w.opts.NATS, w.log)

	takeCtx, stopTaking := context.WithCancel(context.Background())
	w.stopTaking = stopTaking
	w.jobsCtx, w.abort = context.WithCancel(context.Background())
	// One runner per slot runs the reserved jobs: goroutines whose stacks have grown to what a
	// job needs, rather than a new goroutine per job.
	w.runs = make(chan *job, w.opts.Concurrency)
	var runners sync.WaitGroup
	for range w.opts.Concurrency {
		runners.Go(func() {
			for j := range w.runs {
				w.run(takeCtx, j)
				w.running.Done()
			}
		})
	}
	var loops, watch sync.WaitGroup
	if w.opts.Dispatch == DispatchAuto {
		watch.Go(func() { w.modes.watch(takeCtx, w.reopenQueues) })
	}
	unobserve := w.observeMode()
	for _, t := range w.tables {
		loops.Go(func() { w.fetchLoop(takeCtx, t) })
	}
	go func() {
		loops.Wait()
		stopTaking()
		watch.Wait()
		close(w.runs) // no reservation is left to hand over
		runners.Wait()
		w.running.Wait()
		close(w.jobsDone)
		w.stopServices()
		unobserve()
		w.abort()
		close(w.done)
	}()
	return nil
}

// initialMode is the dispatch mode at start: DispatchAuto starts with NATS when the connection
// is up and every table's stream opened, and with MySQL otherwise.
func (w *Worker) initialMode() Dispatch {
	switch w.opts.Dispatch {
	case DispatchNATS, DispatchMySQL:
		w.log.Info("taking jobs", "dispatch", w.opts.Dispatch)
		return w.opts.Dispatch
	}
	for _, t := range w.tables {
		if t.queue.Load() == nil {
			w.log.Warn("NATS unreachable at start; claiming jobs from MySQL until it answers", "dispatch", DispatchAuto,
				"nats", w.opts.NATS.Status().String())
			return DispatchMySQL
		}
	}
	w.log.Info("taking jobs from JetStream; from MySQL while NATS is unreachable", "dispatch", DispatchAuto)
	return DispatchNATS
}

// reopenQueues opens the streams of the tables that have none yet, and asks JetStream whether
// it answers: whether the worker can take jobs from JetStream again (DispatchAuto).
func (w *Worker) reopenQueues(ctx context.Context) error {
	for _, t := range w.tables {
		if t.queue.Load() != nil {
			continue
		}
		q, err := w.openQueue(ctx, t.jobs.Target())
		if err != nil {
			return fmt.Errorf("table %s: %w", t.name, err)
		}
		t.queue.Store(q)
	}
	return queue.Ping(ctx, w.opts.NATS)
}

// observeMode reports the dispatch mode on the metrics; the function returned stops that.
func (w *Worker) observeMode() (unobserve func()) {
	reg, err := w.opts.Telemetry.Metrics().ObserveDispatchMode(w.modes.mode)
	if err != nil {
		w.log.Warn("cannot report the dispatch mode on the metrics", "err", err)
		return func() {}
	}
	return func() { _ = reg.Unregister() }
}

// Stop stops taking jobs and lets the running ones finish until ctx ends; then they are
// released to pending. It returns once every outcome was recorded (or given up on, after
// StopTimeout of an unreachable MySQL) and every goroutine of the worker returned.
func (w *Worker) Stop(ctx context.Context) {
	w.mu.Lock()
	started := w.started
	w.mu.Unlock()
	if !started || w.stopTaking == nil {
		return
	}
	w.stopTaking()
	select {
	case <-w.jobsDone:
	case <-ctx.Done():
		w.log.Warn("grace period over; releasing the jobs still running")
		w.abort()
	}
	<-w.done
}

// Done is closed once the worker has stopped: by itself (Once, MaxCalls, a failure without
// SuppressErrors), after Stop, or when Start failed.
func (w *Worker) Done() <-chan struct{} { return w.done }

// Summary returns populate()'s summary so far, and ErrJobFailed when a job failed without
// SuppressErrors.
func (w *Worker) Summary() (Summary, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Summary{SuccessCount: w.summary.SuccessCount, ErrorList: append([]ErrorEntry{}, w.summary.ErrorList...)}
	if w.failed && !w.opts.SuppressErrors {
		return s, ErrJobFailed
	}
	return s, nil
}

// stopServices stops each table's keeper and completer, the completer first: it records the
// last outcomes, whose jobs the keeper keeps leased until then.
func (w *Worker) stopServices() {
	for _, t := range w.tables {
		startstop.StopAll(t.keeper, t.completer)
	}
}

// openTableRetrying opens a table, retrying with backoff while MySQL or NATS fail, until ctx
// ends. A table that cannot be served as configured fails at once with a *TableError.
func (w *Worker) openTableRetrying(ctx context.Context, t Table) (*table, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = openRetryInitial
	b.MaxInterval = openRetryMax
	return backoff.Retry(ctx, func() (*table, error) {
		tbl, err := w.openTable(ctx, t)
		if permanent(err) {
			return nil, backoff.Permanent(&TableError{Table: t.Name, Err: err})
		}
		return tbl, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, next time.Duration) {
		w.log.Warn("cannot open the table yet; retrying", "table", t.Name, "err", err, "retry_in", next.Round(time.Millisecond))
	}))
}

// openQueue opens the stream of target.
func (w *Worker) openQueue(ctx context.Context, target *jobsdb.Target) (*queue.Table, error) {
	qcfg := w.opts.Queue
	qcfg.Storage = "" // the scheduler decides the stream's storage
	return queue.Open(ctx, w.opts.NATS, target.Schema, target.Name, qcfg)
}

// permanent reports errors of opening a table that retrying cannot fix.
func permanent(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, jobsdb.ErrUnknownTable), errors.Is(err, jobsdb.ErrNoKeyColumns), errors.Is(err, jobsdb.ErrBadKey),
		errors.Is(err, queue.ErrUnsupportedServer), errors.Is(err, queue.ErrInvalidName):
		return true
	}
	switch jobsdb.Classify(err) {
	case jobsdb.FailureSchema, jobsdb.FailureData:
		return true
	}
	return false
}

// openTable inspects a target, declares (or adopts) its jobs table, opens its stream and
// starts its keeper and completer. With DispatchMySQL it opens no stream; with DispatchAuto it
// opens the stream when NATS answers within openQueueTimeout, and leaves it for later
// otherwise (but a NATS server that can never serve the table is an error all the same).
func (w *Worker) openTable(ctx context.Context, t Table) (*table, error) {
	target, err := jobsdb.Inspect(ctx, w.opts.DB, t.Name, t.KeySource)
	if err != nil {
		return nil, err
	}
	jobs := jobsdb.New(w.opts.DB, target, w.opts.Jobs)
	if err := jobs.Declare(ctx); err != nil {
		return nil, fmt.Errorf("declare its jobs table: %w", err)
	}
	var q *queue.Table
	switch w.opts.Dispatch {
	case DispatchNATS:
		if q, err = w.openQueue(ctx, target); err != nil {
			return nil, fmt.Errorf("open its stream: %w", err)
		}
	case DispatchAuto:
		if w.opts.NATS.IsConnected() {
			qctx, cancel := context.WithTimeout(ctx, openQueueTimeout)
			q, err = w.openQueue(qctx, target)
			cancel()
			if errors.Is(err, queue.ErrUnsupportedServer) || errors.Is(err, queue.ErrInvalidName) {
				return nil, fmt.Errorf("open its stream: %w", err)
			}
			if err != nil {
				w.log.Warn("cannot open the table's stream yet; claiming its jobs from MySQL meanwhile", "table", t.Name, "err", err)
			}
		}
	}
	log := w.log.With("table", t.Name)
	lease := jobs.Options().LeaseDuration
	ackWait := w.opts.Queue.AckWait
	if ackWait <= 0 {
		ackWait = queue.DefaultAckWait
	}
	tbl := &table{
		name:      t.Name,
		jobs:      jobs,
		keeper:    newKeeper(jobs, min(lease, ackWait)/3, log),
		completer: newCompleter(w.opts, jobs, w.settled),
	}
	if q != nil {
		tbl.queue.Store(q)
	}
	if !w.opts.NoEvents {
		// Announced over NATS while the table has its stream; without it (dispatch=mysql, or
		// NATS down) the dependent tables find the keys at their periodic refresh.
		tbl.completer.inserted = func(keys [][]byte) {
			if q := tbl.queue.Load(); q != nil {
				if err := q.PublishInserted(keys); err != nil {
					log.Debug("cannot announce completed keys; the tables depending on this one find them at their periodic refresh", "err", err)
				}
			}
		}
		tbl.completer.due = func(after time.Duration) {
			if q := tbl.queue.Load(); q != nil {
				if err := q.PublishDue(after); err != nil {
					log.Debug("cannot announce a retry's due time; the scheduler publishes it at its next poll", "err", err)
				}
			}
		}
	}
	// The services run until the worker stops them, whatever happens to ctx meanwhile.
	if err := startstop.StartAll(context.WithoutCancel(ctx), tbl.completer, tbl.keeper); err != nil {
		return nil, err
	}
	return tbl, nil
}
