package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

// sampleTimeout bounds one sampling of a table for the gauges (a count over the jobs table and
// a listing of the stream's consumers).
const sampleTimeout = 10 * time.Second

// sampler is the service of a table's leader that reports the table's gauges when metrics are
// on: jetjobs.queue.{pending,reserved} (a count per status of the jobs table) and
// jetjobs.stream.depth (messages waiting per priority). It registers them when it starts and
// unregisters them when it stops, so only a leader reports a table; it samples at once, every
// GaugeInterval and when poked (after each refresh), and a collection reports the last
// samples without querying anything. A sample that fails leaves the last one in place and is
// retried with a backoff of its own.
type sampler struct {
	leaderService
	stream  func() *queue.Table // nil, or returning nil: no stream (yet)
	metrics *tracing.Metrics

	mu     sync.Mutex
	queue  []tracing.QueueSample // empty until the first successful sample
	depths []tracing.StreamSample
}

// newSampler returns the table's sampler, or nil when metrics are off.
func newSampler(o *Options, table string, log *slog.Logger, jobs *jobsdb.Jobs, stream func() *queue.Table) *sampler {
	m := o.Telemetry.Metrics()
	if m == nil {
		return nil
	}
	s := &sampler{leaderService: leaderService{o: o, table: table, jobs: jobs}, stream: stream, metrics: m}
	s.init(log, s.runOnce, "sampling the table for the gauges failed; they keep their last values",
		slog.LevelWarn, o.GaugeInterval, o.ErrorBackoffMax)
	s.begin = s.observe
	return s
}

// observe registers the table's gauges and returns the function that unregisters them.
func (s *sampler) observe() (unregister func()) {
	var regs []metric.Registration
	qreg, qerr := s.metrics.ObserveQueue(s.queueSamples)
	if qerr == nil {
		regs = append(regs, qreg)
	}
	sreg, serr := s.metrics.ObserveStream(s.streamSamples)
	if serr == nil {
		regs = append(regs, sreg)
	}
	if err := errors.Join(qerr, serr); err != nil {
		s.log.Warn("cannot report the table's gauges; the counters still work", "err", err)
	}
	return func() {
		for _, r := range regs {
			if err := r.Unregister(); err != nil {
				s.log.Warn("unregistering the table's gauges failed", "err", err)
			}
		}
	}
}

func (s *sampler) queueSamples(context.Context) []tracing.QueueSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]tracing.QueueSample(nil), s.queue...)
}

func (s *sampler) streamSamples(context.Context) []tracing.StreamSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]tracing.StreamSample(nil), s.depths...)
}

// runOnce samples the table's jobs per status and its stream's messages waiting per priority,
// and returns when to sample again. What it could read replaces the last sample even when the
// other read failed.
func (s *sampler) runOnce(ctx context.Context) (time.Time, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	var errs []error
	if p, err := s.jobs.Progress(ctx); err != nil {
		errs = append(errs, fmt.Errorf("count the jobs: %w", err))
	} else {
		s.mu.Lock()
		s.queue = []tracing.QueueSample{{Table: s.table, Pending: p.Pending, Reserved: p.Reserved}}
		s.mu.Unlock()
	}
	var stream *queue.Table
	if s.stream != nil {
		stream = s.stream()
	}
	if stream == nil {
		// No stream (dispatch=mysql, or NATS not reached yet): no depth to report.
	} else if states, err := stream.State(ctx); err != nil {
		errs = append(errs, fmt.Errorf("read the stream's state: %w", err))
	} else {
		depths := make([]tracing.StreamSample, len(states))
		for i, st := range states {
			depths[i] = tracing.StreamSample{Table: s.table, Priority: st.Priority, Depth: int64(st.Waiting)}
		}
		s.mu.Lock()
		s.depths = depths
		s.mu.Unlock()
	}
	return start.Add(s.o.GaugeInterval), errors.Join(errs...)
}
