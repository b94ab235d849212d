package scheduler

import (
	"database/sql"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/worker"
)

// Defaults of Options.
const (
	// RefreshIntervalDefault is how often the refresher of a table's leader refreshes the
	// table from its key source (jobsdb.RefreshIntervalDefault).
	RefreshIntervalDefault = jobsdb.RefreshIntervalDefault
	// PollIntervalDefault caps the sleep between two dispatch passes of a table. jobsctl,
	// DataJoint and workers' retries add due jobs without telling the scheduler, so this is
	// the worst-case delay before such a job is published; a pass costs two indexed queries.
	PollIntervalDefault = time.Second
	// BatchSizeDefault is the number of jobs read, published and marked per dispatch batch.
	BatchSizeDefault = 1000
	// MaxBatchesPerPass bounds one dispatch pass (BatchSize·MaxBatchesPerPass jobs), so that
	// a pass ends, and a poke or a newly due urgent job is looked at, while a huge backlog is
	// being published.
	MaxBatchesPerPass = 100
	// DispatchWindowDefault bounds the messages in a table's stream (queue.WindowDefault).
	DispatchWindowDefault = queue.WindowDefault
	// MinRecoverInterval is the shortest default recovery interval (lease_duration/4).
	MinRecoverInterval = time.Second
	// ErrorBackoffMaxDefault caps the exponential wait between retries of a failing step.
	ErrorBackoffMaxDefault = 10 * time.Second
	// PublishTimeoutDefault bounds one batch's publish, so a NATS server that stopped
	// answering cannot stall the dispatcher.
	PublishTimeoutDefault = 30 * time.Second
	// LostAfter is how long before the dispatcher last read the stream's consumers a pending job
	// whose priority had no message left (none waiting, none delivered and unacked) must have
	// been published, to be published again: its message is gone (a deleted, purged or
	// restarted stream; an ack that landed after the job went back to pending). Only this
	// scheduler publishes for the table, so this only guards against an overlapping former
	// leader.
	LostAfter = time.Second
	// MarkDelay is how long after a publish the dispatcher marks its jobs dispatched
	// (jobsdb's MarkDispatched): by then most of them are reserved, and the UPDATE writes
	// only the rows still waiting. Meanwhile the dispatcher remembers them, so that a pass
	// from the head does not publish them again.
	MarkDelay = time.Second
	// RepairInterval is how often the dispatcher reads the stream's consumers (to repair the
	// stream and find priorities whose messages are gone); in between a pass reads only the
	// stream's message count, which stays cheap on a deep stream.
	RepairInterval = time.Second
	// WindowPerSlot sizes the dispatch window: this many messages per slot of the workers
	// that report demand, so that every slot finds its next job waiting while a refill is on
	// its way, and no more: a deep stream costs the servers, and blunts priorities.
	WindowPerSlot = 4
	// DemandTTL is how long a worker counts towards the window after its last demand report.
	DemandTTL = 10 * time.Second
	// refillFraction: a pass publishes only when the window has room for a batch or for this
	// fraction of the window, so that a fed stream is topped up in batches, not job by job.
	refillFraction = 4
	// CoalesceDefault is the shortest time between two refreshes of a table for events
	// (EventOptions.Coalesce).
	CoalesceDefault = 5 * time.Millisecond
	// MaxEventKeysDefault bounds the keys waiting for a refresh for events
	// (EventOptions.MaxKeys).
	MaxEventKeysDefault = 100000
	// GaugeIntervalDefault is how often a table's leader samples its jobs table and stream
	// for the gauges when metrics are on.
	GaugeIntervalDefault = 5 * time.Second
)

// Table is a target table to schedule.
type Table struct {
	// Name is "schema.table".
	Name string
	// KeySource is an SQL SELECT returning the key columns. Empty: the key source is derived
	// from the target's primary parents, as DataJoint does (see jobsdb.Inspect).
	KeySource string
	// DependsOn names the tables ("schema.table") a configured KeySource reads: rows
	// inserted there (package notify's inserted subject, which workers publish for the jobs
	// they complete) refresh the table at once for their keys, matched to the key columns by
	// name. A derived key source depends on the primary parents, read from the foreign keys;
	// DependsOn is then not used.
	DependsOn []string
}

// EventOptions configure the refreshes for events (package notify): keys a notify names,
// and rows inserted into the tables a key source depends on, completed jobs among them.
type EventOptions struct {
	// Disabled: the leader follows no event; keys are found by the periodic refresh only.
	Disabled bool
	// Coalesce is the shortest time between the starts of two refreshes of a table for
	// events: the keys told meanwhile wait and go into the next one together. Default
	// CoalesceDefault (5 ms): at most 200 such refreshes a second per table, however many
	// notifies arrive, at up to that much added latency during a burst.
	Coalesce time.Duration
	// MaxKeys bounds the keys waiting; past it, the next refresh for events refreshes the
	// whole key source instead. Default MaxEventKeysDefault.
	MaxKeys int
}

// RefreshOptions configure the refresher: the periodic refresh of each table by its leader
// (jobsdb's Refresh), which turns the key source's new keys into pending jobs and removes
// stale ones.
type RefreshOptions struct {
	// Disabled turns the periodic refresh off: jobs then come only from jobsctl refresh,
	// DataJoint or other writers of the jobs table. Default false: the leader refreshes at
	// once and every Interval.
	Disabled bool
	// Interval between the starts of two refreshes of a table. Default RefreshIntervalDefault
	// (1 minute). Shorter finds new keys sooner, at a rescan of the key source each time.
	Interval time.Duration
	// Priority of the jobs a refresh adds, -128..127, lower is more urgent. Nil:
	// jobsdb.PriorityDefault (5, DataJoint's jobs.default_priority).
	Priority *int
	// StaleTimeout: pending jobs created longer ago than this whose key left the key source,
	// or reached the target, are removed. Default 0: no stale removal.
	StaleTimeout time.Duration
}

// Options configure a Scheduler. Tables and DB are required, and NATS unless Dispatch is
// worker.DispatchMySQL; zero values of the others take the defaults.
type Options struct {
	// Tables to schedule.
	Tables []Table
	// DB is the MySQL pool (jobsdb.Open). Each table's elector holds one connection of it
	// for its lock the whole time, and its refresher may hold one for minutes: Start raises a
	// limited pool's MaxOpenConns by two per table, so that these never starve the
	// dispatcher's short statements, and Stop lowers it again.
	DB *sql.DB
	// NATS is the connection to the NATS server with JetStream (queue.Connect). With
	// worker.DispatchAuto it may be a connection still trying to reach its server
	// (queue.ConnectOptions.Background). Not used with worker.DispatchMySQL.
	NATS *nats.Conn
	// Dispatch is how the workers learn which jobs are due, and so what the scheduler does
	// with NATS. worker.DispatchMySQL: nothing; the leader of a table refreshes it and
	// recovers expired leases, and the workers claim due jobs from the jobs table.
	// worker.DispatchNATS and worker.DispatchAuto (the default): the leader also publishes due
	// jobs, once the table's stream opens; while NATS is unreachable it refreshes and recovers
	// all the same, and publishes when NATS returns. With DispatchAuto, /readyz does not
	// require NATS: the workers claim from MySQL while it is down.
	Dispatch worker.Dispatch
	// Jobs configure each table's jobs handle (jobsdb.New). Its LeaseDuration also sets the
	// defaults of RecoverInterval and RedispatchAfter; its Identity is written into the
	// handles (the scheduler reserves nothing). Zero values take jobsdb's defaults.
	Jobs jobsdb.Options
	// Queue configures each table's stream (queue.Open): the subject prefix, the replicas and
	// the ack wait (part of RedispatchAfter's default). Zero values take queue's defaults.
	Queue queue.Config
	// Refresh configures the periodic refresh.
	Refresh RefreshOptions
	// Events configure the refreshes for notifies and inserts (package notify).
	Events EventOptions
	// OrphanTimeout recovers jobs reserved by DataJoint itself (they have no lease) whose
	// reserved_time is older than this, in the rescuer's recoveries and in each refresh's.
	// Default 0: never, as DataJoint's default.
	OrphanTimeout time.Duration
	// Logger receives the service's logs; each table's carry a "table" attribute. Default
	// slog.Default().
	Logger *slog.Logger

	// Metrics is served on /metrics by Handler when not nil (Telemetry.MetricsHandler, the
	// tracing package's Prometheus handler). Nil: /metrics answers 404.
	Metrics http.Handler
	// Telemetry records traces and metrics (tracing.Setup). With tracing on, each job's
	// message gets a publish span whose W3C trace context travels in the message header, so
	// that the worker's spans for the job join its trace. With metrics on, the leader of a
	// table counts published, refreshed and recovered jobs and reports the table's pending and
	// reserved jobs and stream depth (see GaugeInterval). Default nil: disabled, at no cost
	// per job.
	Telemetry *tracing.Telemetry
	// GaugeInterval is how often the sampler of a table's leader samples its jobs table (a
	// GROUP BY status count) and its stream's consumers for the gauges; it also samples
	// after each refresh. The gauges report these samples: a collection (a Prometheus scrape)
	// never queries MySQL or NATS. Shorter is fresher but costs a count over the jobs table
	// each time. Only with metrics on. Default GaugeIntervalDefault (5 s).
	GaugeInterval time.Duration

	// PollInterval caps the sleep between dispatch passes; it is also the first wait after
	// a failed step. Default PollIntervalDefault (1 s).
	PollInterval time.Duration
	// RecoverInterval between the rescuer's recoveries of expired leases. Default
	// Jobs.LeaseDuration/4, at least MinRecoverInterval: a crashed worker's job waits at most
	// its lease plus this.
	RecoverInterval time.Duration
	// RedispatchAfter: a pending due job published longer ago than this is published again,
	// in case its message was lost (stream deleted or purged, message dropped). Default
	// 2·Queue.AckWait + Jobs.LeaseDuration: by then a message that is still in the stream has
	// been delivered and its delivery timed out at least once, so republishing is rare and
	// cheap (a no-op while the message is still there).
	RedispatchAfter time.Duration
	// BatchSize of dispatch. Default BatchSizeDefault (1000).
	BatchSize int
	// DispatchWindow is the most messages a table's stream holds (waiting, or delivered and
	// not yet acked) before the scheduler stops publishing until workers drain it; the
	// window is WindowPerSlot per slot of the reporting workers, up to this. Default
	// DispatchWindowDefault.
	DispatchWindow int
	// ErrorBackoffMax caps the wait between retries of a failing step. Default
	// ErrorBackoffMaxDefault (10 s).
	ErrorBackoffMax time.Duration
	// PublishTimeout bounds the publish of one batch. Default PublishTimeoutDefault (30 s).
	PublishTimeout time.Duration
	// Leadership configures the per-table electors (intervals; the logger is set per table).
	Leadership leadership.Config

	// OnDispatch, when not nil, is called after each dispatch pass that published or
	// re-confirmed at least one job, from the table's dispatcher. For metrics and tests.
	OnDispatch func(DispatchEvent)
	// OnEventRefresh, when not nil, is called after each refresh for events, from the table's
	// events service. For metrics and tests.
	OnEventRefresh func(EventRefresh)
}

// DispatchEvent describes one dispatch pass of a table.
type DispatchEvent struct {
	Table string
	// Published messages are new in the stream.
	Published int
	// AlreadyQueued jobs still had their message in the stream (a republish that changed
	// nothing).
	AlreadyQueued int
}

func (o Options) withDefaults() Options {
	if o.Dispatch == "" {
		o.Dispatch = worker.DispatchAuto
	}
	if o.Dispatch == worker.DispatchMySQL {
		o.NATS = nil
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	lease := orDefault(o.Jobs.LeaseDuration, jobsdb.LeaseDurationDefault)
	if o.Refresh.Interval <= 0 {
		o.Refresh.Interval = RefreshIntervalDefault
	}
	priority := jobsdb.PriorityDefault
	if o.Refresh.Priority != nil {
		priority = *o.Refresh.Priority
	}
	o.Refresh.Priority = &priority // a copy: the caller's variable may change
	if o.PollInterval <= 0 {
		o.PollInterval = PollIntervalDefault
	}
	if o.RecoverInterval <= 0 {
		o.RecoverInterval = max(lease/4, MinRecoverInterval)
	}
	if o.RedispatchAfter <= 0 {
		o.RedispatchAfter = 2*orDefault(o.Queue.AckWait, queue.DefaultAckWait) + lease
	}
	if o.BatchSize <= 0 {
		o.BatchSize = BatchSizeDefault
	}
	if o.DispatchWindow <= 0 {
		o.DispatchWindow = DispatchWindowDefault
	}
	if o.ErrorBackoffMax <= 0 {
		o.ErrorBackoffMax = ErrorBackoffMaxDefault
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = PublishTimeoutDefault
	}
	if o.Events.Coalesce <= 0 {
		o.Events.Coalesce = CoalesceDefault
	}
	if o.Events.MaxKeys <= 0 {
		o.Events.MaxKeys = MaxEventKeysDefault
	}
	if o.GaugeInterval <= 0 {
		o.GaugeInterval = GaugeIntervalDefault
	}
	return o
}

// refreshOptions are the arguments of each periodic refresh.
func (o *Options) refreshOptions() jobsdb.RefreshOptions {
	return jobsdb.RefreshOptions{
		Priority:      *o.Refresh.Priority,
		StaleTimeout:  o.Refresh.StaleTimeout,
		OrphanTimeout: o.OrphanTimeout,
	}
}

// orDefault is d, or def when d is not positive (as jobsdb and queue read their options).
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
