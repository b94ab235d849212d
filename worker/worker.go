package worker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

// Defaults of Options.
const (
	DefaultConcurrency = 1
	DefaultGrace       = 30 * time.Second
	// idleFetch is how long one fetch waits for messages before the worker checks whether it
	// should stop (--once, --max-calls) and lets other tables use the free slots.
	idleFetch = time.Second
	// maxRetryDelay caps the exponential retry backoff.
	maxRetryDelay = time.Hour
	// messageRetryDelay is how long a message waits before redelivery when its job could not
	// be reserved because MySQL was unreachable.
	messageRetryDelay = 5 * time.Second
	// shutdownRecordTimeout bounds how long outcomes are retried against an unreachable MySQL
	// once the worker stops; unrecorded jobs are then left to lease expiry.
	shutdownRecordTimeout = 30 * time.Second
	// idleCheckTimeout bounds the statement that tells an idle worker with Once whether due
	// jobs are left.
	idleCheckTimeout = 10 * time.Second
	// stopSignalWait is how long a job whose handler was killed by SIGTERM, SIGINT, SIGHUP or
	// SIGQUIT waits for the worker's own stop before the death counts as the job's failure: a
	// supervisor (systemd, Kubernetes, kill -TERM -PGID) signals every process at once, and
	// the handler may die before the worker has seen its signal. Such a job is released.
	stopSignalWait = 2 * time.Second
)

// Options configure a worker.
type Options struct {
	// DB is the MySQL pool (jobsdb.Open). Required.
	DB *sql.DB
	// NATS is the connection to the NATS server with JetStream (queue.Connect). Required.
	NATS *nats.Conn
	// Config supplies the jobs, nats and tables settings.
	Config config.Config
	// Tables are the target tables served, "schema.table". Required.
	Tables []string
	// Handler computes each job. Required.
	Handler Handler
	// Concurrency is the number of jobs run at once (populate's processes). Default 1.
	Concurrency int
	// MaxCalls stops the worker after this many jobs finished (succeeded, failed or were
	// retried); 0 means no limit. Counts finished jobs, not candidates.
	MaxCalls int
	// SuppressErrors keeps going after a job fails. Without it the worker records the
	// error, stops taking work, lets running jobs finish and Run returns ErrJobFailed.
	SuppressErrors bool
	// MaxPriority, when set, takes only jobs with priority <= *MaxPriority.
	MaxPriority *int
	// Once stops the worker when no due job is left in its tables and none is running.
	Once bool
	// Grace is how long running jobs may finish after the worker is told to stop; the rest
	// are released to pending. Default 30 s.
	Grace time.Duration
	// Logger receives the worker's logs. Default slog.Default().
	Logger *slog.Logger
	// OnFinish, when set, is called after each job's outcome is recorded (for progress bars).
	OnFinish func(Event)
	// Telemetry receives the worker's spans and metrics (tracing.Setup). Nil: none, at no
	// cost. The scheduler's publish span, carried in each message's header, is the parent of
	// the job's spans either way.
	Telemetry *tracing.Telemetry
}

// Event reports one recorded outcome.
type Event struct {
	Table   string
	Key     map[string]any
	Outcome Outcome
	Error   string // the recorded error message, for OutcomeFailed
}

// Outcome is how a job ended, as reported in an Event.
type Outcome string

// Outcomes reported in events.
const (
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeFailed    Outcome = "failed"
	OutcomeRetried   Outcome = "retried"
	OutcomeReleased  Outcome = "released"
	OutcomeLost      Outcome = "lease_lost"
)

// Summary is populate()'s return value: the jobs that succeeded and the errors recorded.
type Summary struct {
	SuccessCount int          `json:"success_count"`
	ErrorList    []ErrorEntry `json:"error_list"`
}

// ErrorEntry is one failed job.
type ErrorEntry struct {
	Table string         `json:"table"`
	Key   map[string]any `json:"key"`
	Error string         `json:"error"`
}

// ErrJobFailed is returned by Run when a job failed and SuppressErrors is off.
var ErrJobFailed = errors.New("a job failed (use --suppress-errors to keep going)")

// Worker takes jobs from JetStream, reserves them in MySQL, runs the handler and records the
// outcome. See Run.
type Worker struct {
	opts Options
	log  *slog.Logger

	slots chan struct{} // one token per running (or being reserved) job
	// progress is signalled whenever a job's outcome was settled.
	progress chan struct{}

	// abort cancels every running job at once (second signal, or the grace period ended).
	jobsCtx context.Context
	abort   context.CancelFunc
	// stopTaking ends the fetch loops (max calls reached, a job failed, once-done).
	stopTaking context.CancelFunc

	mu       sync.Mutex
	summary  Summary
	finished int // jobs that count towards MaxCalls
	inflight int // jobs reserved and not yet recorded
	failed   bool
}

// New checks the options and returns a worker.
func New(opts Options) (*Worker, error) {
	switch {
	case opts.DB == nil:
		return nil, errors.New("worker: Options.DB is required")
	case opts.NATS == nil:
		return nil, errors.New("worker: Options.NATS is required")
	case opts.Handler == nil:
		return nil, errors.New("worker: Options.Handler is required")
	case len(opts.Tables) == 0:
		return nil, cli.Usagef("worker: no table to serve: name tables as schema.table arguments or list them under \"tables\" in the config file")
	case opts.Concurrency < 0, opts.MaxCalls < 0:
		return nil, cli.Usagef("worker: --concurrency and --max-calls must not be negative")
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Grace == 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	w := &Worker{opts: opts, log: opts.Logger, slots: make(chan struct{}, opts.Concurrency), progress: make(chan struct{}, 1)}
	w.summary.ErrorList = []ErrorEntry{}
	w.jobsCtx, w.abort = context.WithCancel(context.Background())
	return w, nil
}

// Abort cancels every running job at once; they are released to pending. For a second
// signal after the first one cancelled Run's context.
func (w *Worker) Abort() { w.abort() }

// table is the worker's view of one target table.
type table struct {
	name      string
	jobs      *jobsdb.Jobs
	queue     *queue.Table
	keeper    *keeper
	completer *completer
}

// Run serves the tables until ctx is cancelled (then: stop taking work, let running jobs
// finish within Grace, release the rest), or until Once or MaxCalls says it is done, or a
// job failed without SuppressErrors (ErrJobFailed). It returns populate()'s summary.
func (w *Worker) Run(ctx context.Context) (Summary, error) {
	defer w.abort()
	giveUp, cancelGiveUp := context.WithCancel(context.Background())
	defer cancelGiveUp()
	id := cli.Identity(w.opts.Config)
	var tables []*table
	for _, name := range w.opts.Tables {
		t, err := w.openTableRetrying(ctx, name, id, giveUp)
		if err != nil {
			if ctx.Err() != nil {
				return w.summary, nil // told to stop while starting
			}
			return w.summary, err
		}
		tables = append(tables, t)
	}
	keepCtx, stopKeepers := context.WithCancel(context.Background())
	var keepers sync.WaitGroup
	for _, t := range tables {
		keepers.Add(1)
		go func() { defer keepers.Done(); t.keeper.run(keepCtx) }()
	}

	takeCtx, stopTaking := context.WithCancel(ctx)
	w.stopTaking = stopTaking
	var loops, jobs sync.WaitGroup
	for _, t := range tables {
		loops.Add(1)
		go func() { defer loops.Done(); w.fetchLoop(takeCtx, t, &jobs) }()
	}
	loops.Wait()
	stopTaking()

	// No new work is taken. Running jobs get the grace period when the worker was told to
	// stop; when it ends by itself (once, max calls, a failure) they run to completion.
	allDone := make(chan struct{})
	go func() { jobs.Wait(); close(allDone) }()
	if ctx.Err() != nil {
		grace := time.NewTimer(w.opts.Grace)
		select {
		case <-allDone:
		case <-grace.C:
			w.log.Warn("grace period over; releasing the jobs still running", "grace", w.opts.Grace)
			w.abort()
		case <-w.jobsCtx.Done():
		}
		grace.Stop()
	}
	<-allDone
	// Outcomes are retried against an unreachable MySQL for a bounded time only.
	giveUpTimer := time.AfterFunc(shutdownRecordTimeout, cancelGiveUp)
	for _, t := range tables {
		t.completer.close()
	}
	giveUpTimer.Stop()
	stopKeepers()
	keepers.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed && !w.opts.SuppressErrors {
		return w.summary, ErrJobFailed
	}
	return w.summary, nil
}

// Pacing of the attempts to open a table at start.
const (
	openRetryInitial = 100 * time.Millisecond
	openRetryMax     = 5 * time.Second
)

// openTableRetrying opens a table, retrying with backoff while MySQL or NATS fail (unreachable,
// restarting, a stream being created by another process at the same time), until ctx ends. A
// table that cannot be served as configured (unknown, no key columns, a key source MySQL
// rejects, a NATS server without the stream features jetjobs needs) fails at once.
func (w *Worker) openTableRetrying(ctx context.Context, name string, id jobsdb.Identity, giveUp context.Context) (*table, error) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = openRetryInitial
	b.MaxInterval = openRetryMax
	return backoff.Retry(ctx, func() (*table, error) {
		t, err := w.openTable(ctx, name, id, giveUp)
		var usage *cli.UsageError
		if errors.As(err, &usage) || errors.Is(err, queue.ErrUnsupportedServer) || errors.Is(err, queue.ErrInvalidName) {
			return nil, backoff.Permanent(err)
		}
		return t, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, next time.Duration) {
		w.log.Warn("cannot open the table yet; retrying", "table", name, "err", err, "retry_in", next.Round(time.Millisecond))
	}))
}

func (w *Worker) openTable(ctx context.Context, name string, id jobsdb.Identity, giveUp context.Context) (*table, error) {
	jobs, err := cli.OpenJobs(ctx, w.opts.DB, w.opts.Config, name, id)
	if err != nil {
		return nil, err
	}
	if err := jobs.Declare(ctx); err != nil {
		return nil, fmt.Errorf("table %s: declare its jobs table: %w", name, err)
	}
	t := jobs.Target()
	nc := w.opts.Config.NATS
	q, err := queue.Open(ctx, w.opts.NATS, t.Schema, t.Name, queue.Config{
		Prefix: nc.SubjectPrefix, Replicas: nc.Replicas, AckWait: nc.AckWait.Duration(),
	})
	if err != nil {
		return nil, fmt.Errorf("table %s: open its stream: %w", name, err)
	}
	interval := min(w.opts.Config.Jobs.LeaseDuration.Duration(), nc.AckWait.Duration()) / 3
	return &table{
		name:      name,
		jobs:      jobs,
		queue:     q,
		keeper:    newKeeper(jobs, interval, w.log.With("table", name)),
		completer: newCompleter(w.opts.Telemetry, w.opts.DB, jobs, giveUp),
	}, nil
}

// fetchLoop takes messages for t while there are free slots, in strict priority order.
func (w *Worker) fetchLoop(ctx context.Context, t *table, jobs *sync.WaitGroup) {
	fetcher := t.queue.NewFetcher(w.opts.MaxPriority)
	defer fetcher.Stop()
	for ctx.Err() == nil {
		n := w.takeSlots(ctx)
		if n == 0 {
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, idleFetch)
		msgs, err := fetcher.Fetch(fctx, n)
		cancel()
		if len(msgs) < n {
			w.releaseSlots(n - len(msgs))
		}
		if err != nil && len(msgs) == 0 {
			if ctx.Err() != nil {
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				w.log.Warn("fetching messages failed", "table", t.name, "err", err)
			}
			if w.idleDone(ctx, t) {
				w.stopTaking()
				return
			}
			continue
		}
		w.start(ctx, t, msgs, jobs)
	}
}

// takeSlots blocks for one free slot, then takes every other free slot, within MaxCalls.
func (w *Worker) takeSlots(ctx context.Context) int {
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	n := 1
more:
	for n < cap(w.slots) {
		select {
		case w.slots <- struct{}{}:
			n++
		default:
			break more
		}
	}
	if w.opts.MaxCalls > 0 {
		w.mu.Lock()
		allowed := w.opts.MaxCalls - w.finished - w.inflight
		w.mu.Unlock()
		if allowed < n {
			w.releaseSlots(n - max(allowed, 0))
			n = max(allowed, 0)
		}
		if n == 0 {
			// Wait for a running job to finish before looking again.
			w.waitForProgress(ctx)
		}
	}
	return n
}

func (w *Worker) releaseSlots(n int) {
	for range n {
		<-w.slots
	}
}

// waitForProgress blocks until a job's outcome was settled or ctx ends.
func (w *Worker) waitForProgress(ctx context.Context) {
	select {
	case <-w.progress:
	case <-ctx.Done():
	}
}

// idleDone reports whether the worker is done after a fetch found nothing: with Once, when
// no due job is left in MySQL for t and nothing runs; with MaxCalls, when the limit is met.
func (w *Worker) idleDone(ctx context.Context, t *table) bool {
	w.mu.Lock()
	finished, inflight := w.finished, w.inflight
	w.mu.Unlock()
	if w.opts.MaxCalls > 0 && finished >= w.opts.MaxCalls {
		return true
	}
	if !w.opts.Once || inflight > 0 {
		return false
	}
	qctx, cancel := context.WithTimeout(ctx, idleCheckTimeout)
	due, err := t.jobs.FetchPending(qctx, 1, w.opts.MaxPriority, nil)
	cancel()
	if err != nil {
		w.log.Warn("checking for due jobs failed", "table", t.name, "err", err)
		return false
	}
	return len(due) == 0
}

// start reserves the fetched jobs in one statement and runs the ones won.
func (w *Worker) start(ctx context.Context, t *table, msgs []queue.Msg, jobs *sync.WaitGroup) {
	target := t.jobs.Target()
	keys := make([]jobsdb.Key, 0, len(msgs))
	byKey := make(map[string]*delivery, len(msgs))
	for _, m := range msgs {
		key, err := target.ParseKey(m.Key())
		if err != nil {
			// A malformed message can never succeed: drop it for good, change nothing.
			w.log.Error("rejecting a malformed message", "table", t.name, "payload", truncate(string(m.Key()), 200), "err", err)
			m.Term()
			w.releaseSlots(1)
			continue
		}
		keyJSON := mustJSON(target, key)
		id := string(keyJSON)
		if _, dup := byKey[id]; dup {
			m.Ack(ctx)
			w.releaseSlots(1)
			continue
		}
		byKey[id] = w.deliver(t, m, keyJSON)
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return
	}
	tel := w.opts.Telemetry
	if tel.Enabled() {
		for _, d := range byKey {
			_, d.reserve = tel.StartDB(d.ctx, tracing.OpReserve, d.span)
		}
	}
	// The reservation is not cancelled with ctx: a cancelled statement may still commit, and
	// then the winners would be unknown. Jobs won after a stop are released by run. It is
	// bounded by the lease: a reservation that takes longer has nothing left to run.
	sent := time.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.jobs.Options().LeaseDuration)
	leases, err := t.jobs.Reserve(rctx, keys)
	cancel()
	if err != nil {
		msg := "reserving jobs failed; their messages come back later"
		if errors.Is(err, jobsdb.ErrAmbiguous) {
			msg = "reserving jobs failed and MySQL could not tell whether they were reserved; if they were, they return to pending when their lease expires"
		}
		w.log.Warn(msg, "table", t.name, "jobs", len(keys), "err", err)
		for _, d := range byKey {
			d.end(err)
			d.msg.NakWithDelay(messageRetryDelay)
		}
		w.releaseSlots(len(keys))
		return
	}
	metrics := tel.Metrics()
	metrics.Reserved(ctx, t.name, len(leases))
	w.mu.Lock()
	w.inflight += len(leases)
	w.mu.Unlock()
	for _, l := range leases {
		id := string(mustJSON(target, l.Key))
		d := byKey[id]
		delete(byKey, id)
		metrics.DispatchLag(ctx, t.name, l.ReservedTime.Sub(l.ScheduledTime))
		d.span.Attempt = l.Attempts
		if d.reserve != nil {
			tracing.End(d.reserve, nil)
		}
		jobs.Add(1)
		go func() { defer jobs.Done(); w.run(ctx, t, l, d, sent) }()
	}
	for _, d := range byKey {
		// Not pending or not due any more: MySQL decided; the message is spent.
		d.end(nil)
		d.msg.Ack(ctx)
		w.releaseSlots(1)
	}
}

// delivery is one message on its way through a job: its trace context (the scheduler's
// publish span is its parent) and its spans.
type delivery struct {
	msg     queue.Msg
	ctx     context.Context // carries the process span
	span    tracing.Job
	process trace.Span
	reserve trace.Span // nil unless tracing is enabled
}

func (w *Worker) deliver(t *table, m queue.Msg, keyJSON []byte) *delivery {
	d := &delivery{msg: m, span: tracing.Job{Table: t.name, Key: keyJSON, Priority: m.Priority()}}
	d.ctx, d.process = w.opts.Telemetry.StartProcess(tracing.Extract(context.Background(), m.Header()), d.span)
	return d
}

// end ends the delivery's spans.
func (d *delivery) end(err error) {
	if d.reserve != nil {
		tracing.End(d.reserve, err)
	}
	tracing.End(d.process, err)
}

// run runs one reserved job, whose reservation was sent at reserved, and hands its outcome to
// the completer.
func (w *Worker) run(takeCtx context.Context, t *table, lease jobsdb.Lease, d *delivery, reserved time.Time) {
	target := t.jobs.Target()
	job := &Job{
		Table:      t.name,
		Key:        target.KeyMap(lease.Key),
		KeyJSON:    mustJSON(target, lease.Key),
		Attempt:    lease.Attempts,
		Priority:   lease.Priority,
		leaseToken: lease.Token,
	}
	jobCtx, cancel := context.WithCancelCause(trace.ContextWithSpan(w.jobsCtx, d.process))
	defer cancel(nil)
	// The lease is renewed until the outcome is recorded, not just while the handler runs:
	// an outcome waiting for its batch must not lose its job to an orphan recovery.
	r := &running{lease: lease, msg: d.msg, cancel: cancel}
	t.keeper.add(r, reserved)
	settled := w.settled(t, job)
	f := &finished{msg: d.msg, ctx: d.ctx, span: d.span, done: func(f *finished, applied bool, err error) {
		t.keeper.remove(r)
		settled(f, applied, err)
		tracing.End(d.process, err)
	}}
	f.outcome.Lease = lease
	if takeCtx.Err() != nil || !t.keeper.valid(r) {
		// The worker was told to stop between the fetch and the reservation, or the
		// reservation took so long that the lease may expire before the job could finish.
		f.outcome.Kind = jobsdb.OutcomeRelease
		r.finishing.Store(true)
		t.completer.add(f)
		return
	}
	began := time.Now()
	runCtx, span := w.opts.Telemetry.StartRun(jobCtx, d.span)
	result, err := w.call(runCtx, job)
	tracing.End(span, err)
	f.outcome.Duration = time.Since(began)
	switch {
	case err == nil:
		f.outcome.Kind = jobsdb.OutcomeSuccess
		f.outcome.Rows = result.Rows
		f.write = result.Write
	case jobCtx.Err() != nil, killedByStopSignal(err) && stopping(takeCtx):
		// Interrupted (the worker stops, and perhaps its handler got the same signal), or its
		// lease was lost or could not be renewed: back to pending, not an error. A lost lease
		// makes this write a no-op: the new holder owns the job.
		f.outcome.Kind = jobsdb.OutcomeRelease
	case IsRetryable(err) && lease.Attempts < w.opts.Config.Jobs.MaxAttempts:
		f.outcome.Kind = jobsdb.OutcomeRetry
		f.outcome.RetryAfter = retryDelay(w.opts.Config.Jobs.RetryBackoff.Duration(), lease.Attempts)
	default:
		f.outcome.Kind = jobsdb.OutcomeError
		f.outcome.Message, f.outcome.Stack = describe(err)
		if IsRetryable(err) {
			f.outcome.Message = fmt.Sprintf("%s (attempt %d of %d)", f.outcome.Message, lease.Attempts, w.opts.Config.Jobs.MaxAttempts)
		}
	}
	r.finishing.Store(true)
	t.completer.add(f)
}

// killedByStopSignal reports whether err is an exec handler killed by a signal a supervisor
// sends to stop a service.
func killedByStopSignal(err error) bool {
	var execErr *ExecError
	if !errors.As(err, &execErr) {
		return false
	}
	switch execErr.Signal {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
		return true
	}
	return false
}

// stopping reports whether the worker is stopping (ctx, Run's context, ends) now or within
// stopSignalWait.
func stopping(ctx context.Context) bool {
	timer := time.NewTimer(stopSignalWait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return true
	case <-timer.C:
		return false
	}
}

// call runs the handler, turning a panic into an error with its stack.
func (w *Worker) call(ctx context.Context, job *Job) (result Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &panicError{value: p, stack: string(debug.Stack())}
		}
	}()
	return w.opts.Handler(ctx, job)
}

type panicError struct {
	value any
	stack string
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// describe returns the error message and the stack recorded for a failed job.
func describe(err error) (message, stack string) {
	var execErr *ExecError
	var panicErr *panicError
	switch {
	case errors.As(err, &execErr):
		return execErr.Message, execErr.Stack()
	case errors.As(err, &panicErr):
		return panicErr.Error(), panicErr.stack
	default:
		return err.Error(), fmt.Sprintf("%+v", err)
	}
}

// settled returns the accounting callback of one job.
func (w *Worker) settled(t *table, job *Job) func(f *finished, applied bool, err error) {
	return func(f *finished, applied bool, err error) {
		event := Event{Table: t.name, Key: job.Key}
		w.mu.Lock()
		w.inflight--
		switch {
		case err != nil:
			w.log.Error("recording a job's outcome failed; its lease will expire and the job will be recovered", "table", t.name, "key", string(job.KeyJSON), "err", err)
			event.Outcome = OutcomeLost
		case !applied:
			w.log.Warn("the job's lease was taken over; its outcome was discarded", "table", t.name, "key", string(job.KeyJSON))
			event.Outcome = OutcomeLost
		default:
			w.count(f)
			switch f.outcome.Kind {
			case jobsdb.OutcomeSuccess:
				w.summary.SuccessCount++
				w.finished++
				event.Outcome = OutcomeSucceeded
			case jobsdb.OutcomeError:
				w.summary.ErrorList = append(w.summary.ErrorList, ErrorEntry{Table: t.name, Key: job.Key, Error: f.outcome.Message})
				w.finished++
				w.failed = true
				event.Outcome, event.Error = OutcomeFailed, f.outcome.Message
				w.log.Error("job failed", "table", t.name, "key", string(job.KeyJSON), "err", f.outcome.Message)
			case jobsdb.OutcomeRetry:
				w.finished++
				event.Outcome = OutcomeRetried
			case jobsdb.OutcomeRelease:
				event.Outcome = OutcomeReleased
			}
		}
		stop := (w.failed && !w.opts.SuppressErrors) || (w.opts.MaxCalls > 0 && w.finished >= w.opts.MaxCalls)
		w.mu.Unlock()
		w.releaseSlots(1)
		select {
		case w.progress <- struct{}{}:
		default:
		}
		if stop {
			w.stopTaking()
		}
		if w.opts.OnFinish != nil {
			w.opts.OnFinish(event)
		}
	}
}

// count records a job's outcome in the metrics.
func (w *Worker) count(f *finished) {
	m := w.opts.Telemetry.Metrics()
	if m == nil {
		return
	}
	ctx, table := context.Background(), f.span.Table
	switch f.outcome.Kind {
	case jobsdb.OutcomeSuccess:
		m.Completed(ctx, table, 1)
	case jobsdb.OutcomeError:
		m.Failed(ctx, table, 1)
	case jobsdb.OutcomeRetry:
		m.Retried(ctx, table, 1)
	case jobsdb.OutcomeRelease:
		m.Released(ctx, table, 1)
	}
	if f.outcome.Kind != jobsdb.OutcomeRelease {
		m.JobDuration(ctx, table, f.outcome.Duration)
	}
}

// retryDelay is the exponential backoff with jitter before retry number attempt.
func retryDelay(base time.Duration, attempt int) time.Duration {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = base
	b.Multiplier = 2
	b.RandomizationFactor = 0.5
	b.MaxInterval = maxRetryDelay
	var d time.Duration
	for range max(attempt, 1) {
		d = b.NextBackOff()
	}
	return d
}

func mustJSON(t *jobsdb.Target, k jobsdb.Key) []byte {
	b, err := t.KeyJSON(k)
	if err != nil {
		// Keys come from ParseKey or from MySQL, so they always encode.
		panic(fmt.Sprintf("worker: encode key of %s: %v", t.FullName(), err))
	}
	return b
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
