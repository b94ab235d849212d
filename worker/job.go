package worker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

const (
	// maxRetryDelay caps the exponential retry backoff.
	maxRetryDelay = time.Hour
	// stopSignalWait is how long a job whose handler was killed by SIGTERM, SIGINT, SIGHUP or
	// SIGQUIT waits for the worker's own stop before the death counts as the job's failure: a
	// supervisor (systemd, Kubernetes, kill -TERM -PGID) signals every process at once, and
	// the handler may die before the worker has seen its signal. Such a job is released.
	stopSignalWait = 2 * time.Second
)

// job is one message on its way through the worker: fetched, reserved, run, recorded and
// settled. Its key was parsed once from the message, and its canonical JSON encoded once.
type job struct {
	t       *table
	msg     queue.Msg // nil for a lease no message carried
	key     jobsdb.Key
	keyJSON []byte
	// extra marks a lease won without a slot of its own (see releaseUnmatched).
	extra bool
	// ran marks a job whose handler returned: its slot was freed then, while its outcome
	// waits for its recording (the completer's buffer bounds how many wait).
	ran bool

	lease    jobsdb.Lease
	reserved time.Time // when the reservation statement was sent

	// Trace context (its parent is the scheduler's publish span) and spans; the spans are
	// no-ops unless tracing is on, and reserveSpan is nil then.
	ctx         context.Context
	span        tracing.Job
	process     trace.Span
	reserveSpan trace.Span

	// While it runs. The keeper's fields are guarded by keeper.mu.
	cancel context.CancelCauseFunc
	// finishing is set once the handler returned and the outcome waits to be recorded: the
	// lease is still renewed, but a lost lease then cancels nothing (the recording is fenced
	// and reports it), and a job recorded between a heartbeat's snapshot and its statement is
	// not mistaken for a lost one.
	finishing atomic.Bool
	renewed   time.Time // when the last reservation or renewal that took effect was sent
	cancelled bool      // cancel was called

	// Its outcome, once the handler returned.
	outcome jobsdb.Outcome
	write   func(ctx context.Context, tx *sql.Tx) error
	keyMap  map[string]any // the key as the handler and events see it
}

// newJob starts a fetched message's job: its process span, child of the publish span.
func (w *Worker) newJob(t *table, m queue.Msg, key jobsdb.Key, keyJSON []byte) *job {
	j := &job{t: t, msg: m, key: key, keyJSON: keyJSON, span: tracing.Job{Table: t.name, Key: keyJSON, Priority: m.Priority()}}
	j.ctx, j.process = w.opts.Telemetry.StartProcess(tracing.Extract(context.Background(), m.Header()), j.span)
	return j
}

// endSpans ends the job's spans.
func (j *job) endSpans(err error) {
	if j.reserveSpan != nil {
		tracing.End(j.reserveSpan, err)
	}
	if j.process != nil {
		tracing.End(j.process, err)
	}
}

// run runs one reserved job and hands its outcome to the completer.
func (w *Worker) run(takeCtx context.Context, j *job) {
	t := j.t
	j.keyMap = t.jobs.Target().KeyMap(j.lease.Key)
	handlerJob := &Job{
		Table:      t.name,
		Key:        j.keyMap,
		KeyJSON:    j.keyJSON,
		Attempt:    j.lease.Attempts,
		Priority:   j.lease.Priority,
		leaseToken: j.lease.Token,
	}
	jobCtx, cancel := context.WithCancelCause(trace.ContextWithSpan(w.jobsCtx, j.process))
	defer cancel(nil)
	// The lease is renewed until the outcome is recorded, not just while the handler runs:
	// an outcome waiting for its batch must not lose its job to an orphan recovery.
	j.cancel = cancel
	t.keeper.add(j)
	j.outcome.Lease = j.lease
	if takeCtx.Err() != nil || !t.keeper.valid(j) {
		// The worker was told to stop between the fetch and the reservation, or the
		// reservation took so long that the lease may expire before the job could finish.
		j.outcome.Kind = jobsdb.OutcomeRelease
		j.finishing.Store(true)
		t.completer.add(j)
		return
	}
	began := time.Now()
	runCtx, span := w.opts.Telemetry.StartRun(jobCtx, j.span)
	result, err := w.call(runCtx, handlerJob)
	tracing.End(span, err)
	j.outcome.Duration = time.Since(began)
	switch {
	case err == nil:
		j.outcome.Kind = jobsdb.OutcomeSuccess
		j.outcome.Rows = result.Rows
		j.write = result.Write
	case jobCtx.Err() != nil, killedByStopSignal(err) && stopping(takeCtx):
		// Interrupted (the worker stops, and perhaps its handler got the same signal), or its
		// lease was lost or could not be renewed: back to pending, not an error. A lost lease
		// makes this write a no-op: the new holder owns the job.
		j.outcome.Kind = jobsdb.OutcomeRelease
	case IsRetryable(err) && j.lease.Attempts < w.opts.MaxAttempts:
		j.outcome.Kind = jobsdb.OutcomeRetry
		j.outcome.RetryAfter = retryDelay(w.opts.RetryBackoff, j.lease.Attempts)
	default:
		j.outcome.Kind = jobsdb.OutcomeError
		j.outcome.Message, j.outcome.Stack = describe(err)
		if IsRetryable(err) {
			j.outcome.Message = fmt.Sprintf("%s (attempt %d of %d)", j.outcome.Message, j.lease.Attempts, w.opts.MaxAttempts)
		}
	}
	j.finishing.Store(true)
	j.ran = !j.extra
	t.completer.add(j)
	if j.ran {
		// The next job's fetch and reservation overlap this one's recording.
		w.releaseSlots(1)
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

// stopping reports whether the worker stops taking work (ctx ends) now or within
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

// settled accounts for a job whose outcome the completer settled: applied is false when the
// lease had been taken over, err is set when nothing could be recorded. The outcome may have
// changed kind (a success whose rows did not fit became an error).
func (w *Worker) settled(j *job, applied bool, err error) {
	t := j.t
	t.keeper.remove(j)
	if j.process != nil {
		tracing.End(j.process, err)
	}
	event := Event{Table: t.name, Key: j.keyMap, Outcome: j.outcome.Kind, Recorded: applied && err == nil}
	w.mu.Lock()
	w.inflight--
	switch {
	case err != nil:
		w.log.Error("recording a job's outcome failed; its lease will expire and the job will be recovered", "table", t.name, "key", string(j.keyJSON), "err", err)
	case !applied:
		w.log.Warn("the job's lease was taken over; its outcome was discarded", "table", t.name, "key", string(j.keyJSON))
	default:
		w.count(j)
		switch j.outcome.Kind {
		case jobsdb.OutcomeSuccess:
			w.summary.SuccessCount++
			w.finished++
		case jobsdb.OutcomeError:
			w.summary.ErrorList = append(w.summary.ErrorList, ErrorEntry{Table: t.name, Key: j.keyMap, Error: j.outcome.Message})
			w.finished++
			w.failed = true
			event.Error = j.outcome.Message
			w.log.Error("job failed", "table", t.name, "key", string(j.keyJSON), "err", j.outcome.Message)
		case jobsdb.OutcomeRetry:
			w.finished++
		}
	}
	stop := (w.failed && !w.opts.SuppressErrors) || (w.opts.MaxCalls > 0 && w.finished >= w.opts.MaxCalls)
	w.mu.Unlock()
	if !j.extra && !j.ran {
		w.releaseSlots(1)
	}
	select {
	case w.progress <- struct{}{}:
	default:
	}
	if stop {
		w.stopTaking()
	}
	if w.opts.OnFinish != nil && !j.extra {
		w.opts.OnFinish(event)
	}
}

// count records a job's outcome in the metrics.
func (w *Worker) count(j *job) {
	m := w.opts.Telemetry.Metrics()
	if m == nil {
		return
	}
	ctx := context.Background()
	m.Recorded(ctx, j.t.name, j.outcome.Kind, 1)
	if j.outcome.Kind != jobsdb.OutcomeRelease {
		m.JobDuration(ctx, j.t.name, j.outcome.Duration)
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
