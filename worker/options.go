package worker

import (
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

// Defaults of Options.
const (
	// ConcurrencyDefault is the number of jobs run at once: populate()'s processes.
	ConcurrencyDefault = 1
	// GraceDefault is how long running jobs may finish after Run's context ends.
	GraceDefault = 30 * time.Second
	// MaxAttemptsDefault is the number of reservations a job may use for retryable failures.
	MaxAttemptsDefault = 3
	// RetryBackoffDefault is the base of the exponential retry delay.
	RetryBackoffDefault = 10 * time.Second
	// RecordBatchDefault is the most outcomes recorded in one transaction.
	RecordBatchDefault = 500
	// RecordDelayDefault is the longest an outcome waits for others to join its batch.
	RecordDelayDefault = 2 * time.Millisecond
	// StopTimeoutDefault bounds how long outcomes are retried against an unreachable MySQL
	// once the worker was told to stop; unrecorded jobs are then left to their leases' expiry.
	StopTimeoutDefault = 30 * time.Second
)

// Dispatch is how a worker learns which jobs are due (Options.Dispatch).
type Dispatch string

// The ways of dispatch.
const (
	// DispatchAuto takes messages from JetStream while NATS is reachable, and claims due jobs
	// from the jobs table while it is not: from the start when NATS is unreachable then, and
	// once it has been unreachable for NATSOutage mid-run; back to JetStream when NATS answers
	// again. Running jobs keep their leases across a switch.
	DispatchAuto Dispatch = "auto"
	// DispatchNATS takes messages from JetStream only: while NATS is unreachable, no new job
	// starts.
	DispatchNATS Dispatch = "nats"
	// DispatchMySQL claims due jobs from the jobs table in batches (jobsdb's Claim), with no
	// NATS at all: a deployment of nothing but a database.
	DispatchMySQL Dispatch = "mysql"
)

// Dispatches lists the ways of dispatch, for flags and configuration.
var Dispatches = []Dispatch{DispatchNATS, DispatchMySQL, DispatchAuto}

// Valid reports whether d is one of Dispatches.
func (d Dispatch) Valid() bool {
	for _, v := range Dispatches {
		if d == v {
			return true
		}
	}
	return false
}

// NATSOutage is how long NATS may be unreachable (disconnected, or its JetStream not
// answering while fetches fail) before a worker with DispatchAuto claims jobs from MySQL.
// Shorter would switch on a NATS server's restart, which its reconnect rides out.
const NATSOutage = 3 * time.Second

// Sentinel errors, tested with errors.Is.
var (
	// ErrInvalidOptions: Options lack a required field or hold a value out of range.
	ErrInvalidOptions = errors.New("worker: invalid options")
	// ErrJobFailed: a job failed and SuppressErrors is off, so the worker stopped taking work.
	ErrJobFailed = errors.New("worker: a job failed and SuppressErrors is off")
)

// TableError is a table the worker cannot serve as configured: unknown, without key columns,
// with a key source MySQL rejects, or on a NATS server without the stream features jetjobs
// needs. errors.Is sees its cause (jobsdb.ErrUnknownTable, jobsdb.ErrNoKeyColumns,
// queue.ErrUnsupportedServer, …).
type TableError struct {
	Table string
	Err   error
}

func (e *TableError) Error() string { return fmt.Sprintf("table %s: %v", e.Table, e.Err) }
func (e *TableError) Unwrap() error { return e.Err }

// Table is a target table the worker serves.
type Table struct {
	// Name is "schema.table". Required.
	Name string
	// KeySource is a SELECT returning the key columns, for a target whose key is not derived
	// from its primary parents (see jobsdb.Inspect). Empty: derived.
	KeySource string
}

// Options configure a worker. DB, Tables and Handler are required, and NATS unless Dispatch
// is DispatchMySQL; the zero value of every other field means its default.
type Options struct {
	// DB is the MySQL pool (jobsdb.Open).
	DB *sql.DB
	// NATS is the connection to the NATS server with JetStream (queue.Connect). With
	// DispatchAuto it may be a connection still trying to reach its server
	// (queue.ConnectOptions.Background): the worker claims from MySQL meanwhile.
	NATS *nats.Conn
	// Dispatch is how the worker learns which jobs are due. Default DispatchAuto.
	Dispatch Dispatch
	// Tables are the target tables served.
	Tables []Table
	// Handler computes each job.
	Handler Handler

	// Concurrency is the number of jobs run at once (populate's processes). It also bounds
	// each fetch and its reservation statement. A job's slot is freed when its handler
	// returns; its outcome then waits for its batch to be recorded (at most 4 × RecordBatch
	// wait, beyond which finishing jobs wait for room). Default ConcurrencyDefault.
	Concurrency int
	// MaxCalls stops the worker after this many jobs finished (succeeded, failed or were
	// retried); 0 means no limit. It counts finished jobs, not candidates.
	MaxCalls int
	// SuppressErrors keeps going after a job fails. Without it the worker records the error,
	// stops taking work, lets running jobs finish, and Run returns ErrJobFailed.
	SuppressErrors bool
	// MaxPriority, when set, takes only jobs with priority <= *MaxPriority.
	MaxPriority *int
	// Once stops the worker when no due job is left in its tables and none is running.
	Once bool
	// Grace is how long running jobs may finish after Run's context ends; the rest are
	// released to pending. Default GraceDefault.
	Grace time.Duration

	// MaxAttempts is the number of reservations a job may use for retryable failures before
	// it is recorded as an error. Default MaxAttemptsDefault.
	MaxAttempts int
	// RetryBackoff is the base of the retry delay: RetryBackoff·2^(attempt−1), with ±50%
	// jitter, at most an hour. Default RetryBackoffDefault.
	RetryBackoff time.Duration
	// RecordBatch is the most outcomes recorded in one transaction: larger batches cost the
	// database less per job, at a little latency. Default RecordBatchDefault.
	RecordBatch int
	// RecordDelay is the longest a finished job waits for others to join its batch. Default
	// RecordDelayDefault.
	RecordDelay time.Duration
	// StopTimeout bounds how long outcomes are retried against an unreachable MySQL after the
	// worker was told to stop. Default StopTimeoutDefault.
	StopTimeout time.Duration
	// NoEvents: do not announce completed jobs and retries. By default, once a batch of
	// outcomes has committed, the worker publishes the keys of its successes on the table's
	// inserted subject (package notify), one core NATS message per batch, so that the
	// scheduler refreshes the tables that depend on this one at once instead of at their next
	// periodic refresh; and the earliest due time of its retries, so that the scheduler
	// publishes them on time rather than at its next poll.
	NoEvents bool

	// Jobs configures each table's jobs handle: the lease duration, keep_completed, the
	// identity written into reservations, statement timeouts (see jobsdb.Options).
	Jobs jobsdb.Options
	// Queue configures each table's stream and consumers; it must match the scheduler's. Its
	// Storage is ignored: the scheduler decides the stream's storage.
	Queue queue.Config

	// Logger receives the worker's logs. Default slog.Default().
	Logger *slog.Logger
	// OnFinish, when set, is called after each job's outcome was settled (for progress bars).
	OnFinish func(Event)
	// Telemetry receives the worker's spans and metrics (tracing.Setup). Nil: none, at no
	// cost. The scheduler's publish span, carried in each message's header, is the parent of
	// the job's spans either way.
	Telemetry *tracing.Telemetry
}

// withDefaults checks the options and fills in the defaults.
func (o Options) withDefaults() (Options, error) {
	switch {
	case o.DB == nil:
		return o, fmt.Errorf("%w: DB is required", ErrInvalidOptions)
	case o.Dispatch != "" && !o.Dispatch.Valid():
		return o, fmt.Errorf("%w: Dispatch %q: want one of %v", ErrInvalidOptions, o.Dispatch, Dispatches)
	case o.NATS == nil && o.Dispatch != DispatchMySQL:
		return o, fmt.Errorf("%w: NATS is required unless Dispatch is %s", ErrInvalidOptions, DispatchMySQL)
	case o.Handler == nil:
		return o, fmt.Errorf("%w: Handler is required", ErrInvalidOptions)
	case len(o.Tables) == 0:
		return o, fmt.Errorf("%w: no table to serve", ErrInvalidOptions)
	case o.Concurrency < 0, o.MaxCalls < 0, o.MaxAttempts < 0, o.RecordBatch < 0:
		return o, fmt.Errorf("%w: Concurrency, MaxCalls, MaxAttempts and RecordBatch must not be negative", ErrInvalidOptions)
	}
	for _, t := range o.Tables {
		if t.Name == "" {
			return o, fmt.Errorf("%w: a table without a name", ErrInvalidOptions)
		}
	}
	if o.Dispatch == "" {
		o.Dispatch = DispatchAuto
	}
	if o.Concurrency == 0 {
		o.Concurrency = ConcurrencyDefault
	}
	if o.Grace <= 0 {
		o.Grace = GraceDefault
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = MaxAttemptsDefault
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = RetryBackoffDefault
	}
	if o.RecordBatch == 0 {
		o.RecordBatch = RecordBatchDefault
	}
	if o.RecordDelay <= 0 {
		o.RecordDelay = RecordDelayDefault
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = StopTimeoutDefault
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}
