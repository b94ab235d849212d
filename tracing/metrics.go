package tracing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/embedded"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// Instrument names. Prometheus sees them with dots as underscores, counters with "_total"
// and seconds with "_seconds" (jetjobs_jobs_reserved_total, jetjobs_job_duration_seconds).
// Every instrument has the attribute jetjobs.table; the stream depth also jetjobs.priority.
const (
	MetricPublished       = "jetjobs.jobs.published"   // counter: messages published for due jobs (scheduler)
	MetricReserved        = "jetjobs.jobs.reserved"    // counter: jobs reserved (worker)
	MetricCompleted       = "jetjobs.jobs.completed"   // counter: jobs completed successfully (worker)
	MetricFailed          = "jetjobs.jobs.failed"      // counter: jobs that ended in error (worker)
	MetricRetried         = "jetjobs.jobs.retried"     // counter: failed jobs sent back to pending for a retry (worker)
	MetricReleased        = "jetjobs.jobs.released"    // counter: interrupted jobs released to pending (worker)
	MetricRecovered       = "jetjobs.jobs.recovered"   // counter: expired leases returned to pending (scheduler)
	MetricJobDuration     = "jetjobs.job.duration"     // histogram, s: handler run time (worker)
	MetricDispatchLag     = "jetjobs.job.dispatch_lag" // histogram, s: due time to reservation (worker)
	MetricRefreshDuration = "jetjobs.refresh.duration" // histogram, s: one refresh (scheduler)
	MetricRefreshAdded    = "jetjobs.refresh.added"    // counter: jobs added by refresh (scheduler)
	MetricRefreshRemoved  = "jetjobs.refresh.removed"  // counter: stale jobs removed by refresh (scheduler)
	MetricPending         = "jetjobs.queue.pending"    // gauge: jobs pending (ObserveQueue)
	MetricReservedNow     = "jetjobs.queue.reserved"   // gauge: jobs reserved now (ObserveQueue)
	MetricStreamDepth     = "jetjobs.stream.depth"     // gauge: messages waiting per priority (ObserveStream)
	// MetricDispatchMode is a gauge of the worker: 1 for the way it takes jobs now, 0 for the
	// other, by the attribute jetjobs.dispatch ("nats" or "mysql") (ObserveDispatchMode).
	MetricDispatchMode = "jetjobs.worker.dispatch_mode"
)

// DispatchModes are the values of the jetjobs.dispatch attribute of MetricDispatchMode.
var DispatchModes = []string{"nats", "mysql"}

// Histogram bucket boundaries, in seconds.
var (
	// JobDurationBuckets span a millisecond to a day: jobs range from no-ops to long
	// computations.
	JobDurationBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400}
	// DispatchLagBuckets span a millisecond (an idle fleet) to an hour (a backlog).
	DispatchLagBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
	// RefreshDurationBuckets span 10 ms to 10 minutes (about 2-4 s per million keys).
	RefreshDurationBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// Metrics records the jetjobs measurements. A nil *Metrics (metrics disabled) is valid: every
// method returns at once. The methods are safe for concurrent use and, per call, look up the
// table's cached attribute set without allocating.
type Metrics struct {
	tables *tableCache
	meter  metric.Meter

	published, reserved, completed, failed, retried, released, recovered metric.Int64Counter
	refreshAdded, refreshRemoved                                         metric.Int64Counter
	jobDuration, dispatchLag, refreshDuration                            metric.Float64Histogram
	pending, reservedNow, streamDepth, dispatchMode                      metric.Int64ObservableGauge
}

func newMetrics(meter metric.Meter, tables *tableCache) (*Metrics, error) {
	m := &Metrics{tables: tables, meter: meter}
	var errs []error
	counter := func(name, desc, unit string) metric.Int64Counter {
		c, err := meter.Int64Counter(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return c
	}
	histogram := func(name, desc string, buckets []float64) metric.Float64Histogram {
		h, err := meter.Float64Histogram(name, metric.WithDescription(desc), metric.WithUnit("s"),
			metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
		return h
	}
	gauge := func(name, desc, unit string) metric.Int64ObservableGauge {
		g, err := meter.Int64ObservableGauge(name, metric.WithDescription(desc), metric.WithUnit(unit))
		errs = append(errs, err)
		return g
	}
	m.published = counter(MetricPublished, "Messages published to JetStream for due jobs.", "{job}")
	m.reserved = counter(MetricReserved, "Jobs reserved by a worker.", "{job}")
	m.completed = counter(MetricCompleted, "Jobs completed successfully.", "{job}")
	m.failed = counter(MetricFailed, "Jobs that ended in error.", "{job}")
	m.retried = counter(MetricRetried, "Failed jobs returned to pending for a retry.", "{job}")
	m.released = counter(MetricReleased, "Interrupted jobs released to pending.", "{job}")
	m.recovered = counter(MetricRecovered, "Reservations whose lease expired, returned to pending.", "{job}")
	m.refreshAdded = counter(MetricRefreshAdded, "Jobs added by refresh.", "{job}")
	m.refreshRemoved = counter(MetricRefreshRemoved, "Stale jobs removed by refresh.", "{job}")
	m.jobDuration = histogram(MetricJobDuration, "Run time of a job's handler.", JobDurationBuckets)
	m.dispatchLag = histogram(MetricDispatchLag, "Time from a job's due time to its reservation.", DispatchLagBuckets)
	m.refreshDuration = histogram(MetricRefreshDuration, "Duration of one refresh of a jobs table.", RefreshDurationBuckets)
	m.pending = gauge(MetricPending, "Jobs pending in the jobs table (due or not).", "{job}")
	m.reservedNow = gauge(MetricReservedNow, "Jobs reserved in the jobs table.", "{job}")
	m.streamDepth = gauge(MetricStreamDepth, "Messages waiting in JetStream, per priority.", "{message}")
	m.dispatchMode = gauge(MetricDispatchMode, "How the worker takes jobs now: 1 for its mode (nats: messages from JetStream; mysql: claimed from the jobs table), 0 for the other.", "")
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("tracing: creating instruments: %w", err)
	}
	return m, nil
}

// Published counts n messages published for due jobs of table.
func (m *Metrics) Published(ctx context.Context, table string, n int) {
	if m != nil {
		m.published.Add(ctx, int64(n), m.tables.get(table).addOpts...)
	}
}

// Reserved counts n jobs of table reserved (the reservations won, not the keys tried).
func (m *Metrics) Reserved(ctx context.Context, table string, n int) {
	if m != nil {
		m.reserved.Add(ctx, int64(n), m.tables.get(table).addOpts...)
	}
}

// Recorded counts n jobs of table whose outcome of kind was recorded (applied): completed,
// failed, retried or released.
func (m *Metrics) Recorded(ctx context.Context, table string, kind jobsdb.OutcomeKind, n int) {
	if m == nil {
		return
	}
	var c metric.Int64Counter
	switch kind {
	case jobsdb.OutcomeSuccess:
		c = m.completed
	case jobsdb.OutcomeError:
		c = m.failed
	case jobsdb.OutcomeRetry:
		c = m.retried
	case jobsdb.OutcomeRelease:
		c = m.released
	default:
		return
	}
	c.Add(ctx, int64(n), m.tables.get(table).addOpts...)
}

// Recovered counts n reservations of table returned to pending after their lease expired
// (the count jobsdb's RecoverExpired returns).
func (m *Metrics) Recovered(ctx context.Context, table string, n int64) {
	if m != nil {
		m.recovered.Add(ctx, n, m.tables.get(table).addOpts...)
	}
}

// JobDuration records the run time of one job of table.
func (m *Metrics) JobDuration(ctx context.Context, table string, d time.Duration) {
	if m != nil {
		m.jobDuration.Record(ctx, d.Seconds(), m.tables.get(table).recOpts...)
	}
}

// DispatchLag records the time from one job's due time (scheduled_time) to its reservation;
// a negative d (clock skew) counts as 0.
func (m *Metrics) DispatchLag(ctx context.Context, table string, d time.Duration) {
	if m != nil {
		m.dispatchLag.Record(ctx, max(d, 0).Seconds(), m.tables.get(table).recOpts...)
	}
}

// RefreshDone records one refresh of table: its duration and the jobs it added and removed
// (jobsdb's RefreshResult.Added and Removed).
func (m *Metrics) RefreshDone(ctx context.Context, table string, d time.Duration, added, removed int64) {
	if m != nil {
		ti := m.tables.get(table)
		m.refreshDuration.Record(ctx, d.Seconds(), ti.recOpts...)
		m.refreshAdded.Add(ctx, added, ti.addOpts...)
		m.refreshRemoved.Add(ctx, removed, ti.addOpts...)
	}
}

// QueueSample is the jobs table's state of one table, for the pending and reserved gauges.
type QueueSample struct {
	Table    string // "schema.table"
	Pending  int64  // jobs with status pending, due or not
	Reserved int64  // jobs with status reserved
}

// StreamSample is the JetStream state of one priority of one table, for the stream depth
// gauge (queue's PriorityState.Waiting).
type StreamSample struct {
	Table    string // "schema.table"
	Priority int
	Depth    int64 // messages not yet delivered to a worker
}

// ObserveQueue registers f to report the pending and reserved gauges. f runs at every
// collection (each Prometheus scrape, each OTLP export interval), concurrently with the
// program: it should return values the program already has (e.g. from its last progress
// query), not query MySQL. Unregister the returned registration to stop. Several
// registrations may report different tables; a table reported twice in one collection keeps
// the last value. With metrics disabled f is never called.
func (m *Metrics) ObserveQueue(f func(context.Context) []QueueSample) (metric.Registration, error) {
	if m == nil {
		return noopRegistration{}, nil
	}
	reg, err := m.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		for _, s := range f(ctx) {
			opts := m.tables.get(s.Table).obsOpts
			o.ObserveInt64(m.pending, s.Pending, opts...)
			o.ObserveInt64(m.reservedNow, s.Reserved, opts...)
		}
		return nil
	}, m.pending, m.reservedNow)
	if err != nil {
		return nil, fmt.Errorf("tracing: registering the queue gauges: %w", err)
	}
	return reg, nil
}

// ObserveStream registers f to report the stream depth gauge per table and priority, on the
// same terms as ObserveQueue.
func (m *Metrics) ObserveStream(f func(context.Context) []StreamSample) (metric.Registration, error) {
	if m == nil {
		return noopRegistration{}, nil
	}
	reg, err := m.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		for _, s := range f(ctx) {
			o.ObserveInt64(m.streamDepth, s.Depth,
				metric.WithAttributes(TableKey.String(s.Table), PriorityKey.Int(s.Priority)))
		}
		return nil
	}, m.streamDepth)
	if err != nil {
		return nil, fmt.Errorf("tracing: registering the stream gauge: %w", err)
	}
	return reg, nil
}

// ObserveDispatchMode registers f to report the worker's dispatch mode gauge: 1 with
// jetjobs.dispatch=f(), 0 with each other mode of DispatchModes. On the same terms as
// ObserveQueue.
func (m *Metrics) ObserveDispatchMode(f func() string) (metric.Registration, error) {
	if m == nil {
		return noopRegistration{}, nil
	}
	reg, err := m.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		now := f()
		for _, mode := range DispatchModes {
			var v int64
			if mode == now {
				v = 1
			}
			o.ObserveInt64(m.dispatchMode, v, metric.WithAttributes(DispatchKey.String(mode)))
		}
		return nil
	}, m.dispatchMode)
	if err != nil {
		return nil, fmt.Errorf("tracing: registering the dispatch mode gauge: %w", err)
	}
	return reg, nil
}

// noopRegistration is returned by the Observe methods of a nil *Metrics.
type noopRegistration struct{ embedded.Registration }

func (noopRegistration) Unregister() error { return nil }
