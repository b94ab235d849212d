package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

// sampleTimeout bounds one sampling of a table for the gauges (a count over the jobs table and
// a listing of the stream's consumers).
const sampleTimeout = 10 * time.Second

// startPublishSpans starts a publish span for each message and injects its trace context into
// the message's header. With tracing off it does nothing and returns nil: no per-job work.
func (l *leaderLoop) startPublishSpans(ctx context.Context, msgs []queue.Message) []trace.Span {
	tel := l.t.s.opts.Telemetry
	if !tel.Enabled() {
		return nil
	}
	spans := make([]trace.Span, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		sctx, span := tel.StartPublish(ctx, tracing.Job{
			Table:    l.t.name,
			Key:      m.Key,
			Priority: m.Priority,
			Subject:  l.stream.Subject(m.Priority, m.Key),
		})
		m.Header = tracing.Inject(sctx, m.Header)
		spans[i] = span
	}
	return spans
}

// endPublishSpans ends the publish spans of a batch once Publish has returned. A stored
// message's span ends without error, and so does an already queued one's when Publish
// succeeded. When it failed, the spans of the messages it did not store end with its error:
// Publish cannot say which of them failed and which were already queued.
func endPublishSpans(spans []trace.Span, published []bool, err error) {
	for i, span := range spans {
		var serr error
		if err != nil && (i >= len(published) || !published[i]) {
			serr = err
		}
		tracing.End(span, serr)
	}
}

// gauges holds the last samples of a table taken by its leader, for the gauge callbacks. It
// lives for one term of leadership: a standby has none, so it reports nothing for the table.
type gauges struct {
	mu     sync.Mutex
	queue  []tracing.QueueSample // empty until the first successful sample
	stream []tracing.StreamSample
}

func (g *gauges) queueSamples(context.Context) []tracing.QueueSample {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]tracing.QueueSample(nil), g.queue...)
}

func (g *gauges) streamSamples(context.Context) []tracing.StreamSample {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]tracing.StreamSample(nil), g.stream...)
}

// observe registers the table's gauges for this term of leadership and returns the function
// that unregisters them. With metrics off it does nothing.
func (l *leaderLoop) observe() (unregister func()) {
	m := l.t.s.opts.Telemetry.Metrics()
	if m == nil {
		return func() {}
	}
	g := &gauges{}
	var regs []metric.Registration
	qreg, qerr := m.ObserveQueue(g.queueSamples)
	if qerr == nil {
		regs = append(regs, qreg)
	}
	sreg, serr := m.ObserveStream(g.streamSamples)
	if serr == nil {
		regs = append(regs, sreg)
	}
	if err := errors.Join(qerr, serr); err != nil {
		l.t.log.Warn("cannot report the table's gauges; the counters still work", "err", err)
	}
	l.gauges = g
	return func() {
		for _, r := range regs {
			if err := r.Unregister(); err != nil {
				l.t.log.Warn("unregistering the table's gauges failed", "err", err)
			}
		}
		l.gauges = nil
	}
}

// sample refreshes the gauges' samples of the table: its jobs per status and its stream's
// messages waiting per priority. A sample that fails leaves the last one in place.
func (l *leaderLoop) sample(ctx context.Context) {
	if l.gauges == nil {
		return
	}
	sctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	var errs []error
	if p, err := l.jobs.Progress(sctx); err != nil {
		errs = append(errs, fmt.Errorf("count the jobs: %w", err))
	} else {
		l.gauges.mu.Lock()
		l.gauges.queue = []tracing.QueueSample{{Table: l.t.name, Pending: p.Pending, Reserved: p.Reserved}}
		l.gauges.mu.Unlock()
	}
	if states, err := l.stream.State(sctx); err != nil {
		errs = append(errs, fmt.Errorf("read the stream's state: %w", err))
	} else {
		samples := make([]tracing.StreamSample, len(states))
		for i, st := range states {
			samples[i] = tracing.StreamSample{Table: l.t.name, Priority: st.Priority, Depth: int64(st.Waiting)}
		}
		l.gauges.mu.Lock()
		l.gauges.stream = samples
		l.gauges.mu.Unlock()
	}
	if err := errors.Join(errs...); err != nil && ctx.Err() == nil {
		l.t.log.Warn("sampling the table for the gauges failed; they keep their last values", "err", err)
	}
}
