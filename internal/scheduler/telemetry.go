package scheduler

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

// startPublishSpans starts a publish span for each message and injects its trace context into
// the message's header. With tracing off it does nothing and returns nil: no per-job work.
func (d *dispatcher) startPublishSpans(ctx context.Context, msgs []queue.Message) []trace.Span {
	tel := d.o.Telemetry
	if !tel.Enabled() {
		return nil
	}
	spans := make([]trace.Span, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		sctx, span := tel.StartPublish(ctx, tracing.Job{
			Table:    d.table,
			Key:      m.Key,
			Priority: m.Priority,
			Subject:  d.stream.Subject(m.Priority, m.Key),
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
