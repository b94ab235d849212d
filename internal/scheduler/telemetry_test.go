package scheduler

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/tracing/tracingtest"
)

// withTelemetry has the scheduler record into tel and sample its gauges often.
func withTelemetry(tel *tracing.Telemetry) func(*Options) {
	return func(o *Options) {
		o.Telemetry = tel
		o.GaugeInterval = 100 * time.Millisecond
	}
}

// publishSpans returns the ended publish spans, by the key they published.
func publishSpans(rec *tracingtest.Recorder) map[string]sdktrace.ReadOnlySpan {
	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		if s.SpanKind() != trace.SpanKindProducer || !strings.HasPrefix(s.Name(), "publish ") {
			continue
		}
		for _, kv := range s.Attributes() {
			if kv.Key == tracing.KeyKey {
				spans[kv.Value.AsString()] = s
			}
		}
	}
	return spans
}

func spanAttr(s sdktrace.ReadOnlySpan, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// traceparent returns the trace and parent span ids of a W3C traceparent header
// ("00-<trace id>-<span id>-<flags>") in h; empty when there is none.
func traceparent(t *testing.T, h nats.Header) (traceID, spanID string) {
	t.Helper()
	v := h["traceparent"]
	if len(v) == 0 {
		return "", ""
	}
	parts := strings.Split(v[0], "-")
	if len(parts) != 4 || parts[0] != "00" {
		t.Fatalf("malformed traceparent %q", v[0])
	}
	return parts[1], parts[2]
}

// gauge returns a gauge's value for the table (and the priority, for the stream depth), and
// whether there is one.
func gauge(t *testing.T, rec *tracingtest.Recorder, name, table string, priority ...int) (int64, bool) {
	t.Helper()
	attrs := []attribute.KeyValue{tracing.TableKey.String(table)}
	for _, p := range priority {
		attrs = append(attrs, tracing.PriorityKey.Int(p))
	}
	return rec.Int64(t, name, attrs...)
}

// waitForGauge waits until a gauge reports want.
func waitForGauge(t *testing.T, rec *tracingtest.Recorder, name, table string, want int64, priority ...int) {
	t.Helper()
	waitfor.Within(t, 20*time.Second, fmt.Sprintf("%s of %s %v reports %d", name, table, priority, want), func() bool {
		got, ok := gauge(t, rec, name, table, priority...)
		return ok && got == want
	})
}

func TestTelemetry(t *testing.T) {
	t.Parallel()

	t.Run("every published job has a publish span that its message carries", func(t *testing.T) {
		t.Parallel()
		const n = 12
		b := setup(t, n)
		tel, rec := tracingtest.New(t)
		r := b.start(t, withTelemetry(tel))
		priority := jobsdb.PriorityDefault

		// Before any worker fetches: the jobs are pending and their messages wait.
		waitForGauge(t, rec, tracing.MetricPending, b.table, n)
		waitForGauge(t, rec, tracing.MetricStreamDepth, b.table, n, priority)
		if v, _ := gauge(t, rec, tracing.MetricReservedNow, b.table); v != 0 {
			t.Errorf("reserved gauge %d, want 0", v)
		}

		rcv := b.receiver(t)
		if got := rcv.fetch(n, 20*time.Second); len(got) != n {
			t.Fatalf("fetched %d messages, want %d", len(got), n)
		}
		waitfor.Within(t, 10*time.Second, "every publish span has ended", func() bool { return len(publishSpans(rec)) >= n })
		spans := publishSpans(rec)
		if len(spans) != n {
			t.Errorf("%d publish spans for %d jobs", len(spans), n)
		}
		for key, s := range spans {
			if v, _ := spanAttr(s, tracing.TableKey); v.AsString() != b.table {
				t.Errorf("span of %s: jetjobs.table %q, want %q", key, v.AsString(), b.table)
			}
			if v, ok := spanAttr(s, tracing.PriorityKey); !ok || v.AsInt64() != int64(priority) {
				t.Errorf("span of %s: jetjobs.priority %v (set: %v), want %d", key, v.AsInt64(), ok, priority)
			}
			if v, _ := spanAttr(s, "messaging.destination.name"); v.AsString() != b.stream.Subject(priority, []byte(key)) {
				t.Errorf("span of %s: destination %q, want the job's subject", key, v.AsString())
			}
			if s.Status().Code != 0 {
				t.Errorf("span of %s: status %v %q, want unset", key, s.Status().Code, s.Status().Description)
			}
		}
		rcv.mu.Lock()
		msgs := append([]queue.Msg(nil), rcv.msgs...)
		rcv.mu.Unlock()
		for _, m := range msgs {
			s, ok := spans[string(m.Key())]
			if !ok {
				t.Errorf("message %s: no publish span", m.Key())
				continue
			}
			traceID, parentID := traceparent(t, m.Header())
			if traceID == "" {
				t.Errorf("message %s: no traceparent in header %v", m.Key(), m.Header())
				continue
			}
			if want := s.SpanContext().TraceID().String(); traceID != want {
				t.Errorf("message %s: trace id %s, want its publish span's %s", m.Key(), traceID, want)
			}
			if want := s.SpanContext().SpanID().String(); parentID != want {
				t.Errorf("message %s: parent span id %s, want its publish span's %s", m.Key(), parentID, want)
			}
		}

		waitfor.Within(t, 10*time.Second, "the scheduler reports its dispatch passes", func() bool { return r.published.Load() >= n })
		if got := rec.Counter(t, tracing.MetricPublished, b.table); got != n {
			t.Errorf("published counter %d, want %d", got, n)
		}
		if got := rec.Counter(t, tracing.MetricRefreshAdded, b.table); got != n {
			t.Errorf("refresh added counter %d, want %d", got, n)
		}
		if h, ok := rec.Histogram(t, tracing.MetricRefreshDuration, b.table); !ok || h.Count == 0 {
			t.Errorf("refresh duration histogram: %d refreshes (recorded: %v), want at least 1", h.Count, ok)
		}
		// Delivered, not acked: no longer waiting, still pending in MySQL.
		waitForGauge(t, rec, tracing.MetricStreamDepth, b.table, 0, priority)
		if v, _ := gauge(t, rec, tracing.MetricPending, b.table); v != n {
			t.Errorf("pending gauge %d after the fetch, want %d", v, n)
		}
	})

	t.Run("without telemetry messages carry no trace context", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 3)
		b.start(t, nil)
		rcv := b.receiver(t)
		if got := rcv.fetch(3, 20*time.Second); len(got) != 3 {
			t.Fatalf("fetched %v, want 3 messages", got)
		}
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		for _, m := range rcv.msgs {
			for k := range m.Header() {
				if strings.EqualFold(k, "traceparent") || strings.EqualFold(k, "tracestate") {
					t.Errorf("message %s has header %s=%q", m.Key(), k, m.Header()[k])
				}
			}
			if sc := trace.SpanContextFromContext(tracing.Extract(context.Background(), m.Header())); sc.IsValid() {
				t.Errorf("message %s carries span context %v", m.Key(), sc)
			}
		}
	})

	t.Run("recovered jobs are counted and the gauges follow reservations", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 3)
		tel, rec := tracingtest.New(t)
		b.start(t, withTelemetry(tel))
		rcv := b.receiver(t)
		if got := rcv.fetch(3, 20*time.Second); len(got) != 3 {
			t.Fatalf("fetched %v, want 3 messages", got)
		}
		// A worker reserves job 2, acks its message, and dies: its lease expires.
		b.reserve(t, 2)
		rcv.ack(2)
		waitForGauge(t, rec, tracing.MetricReservedNow, b.table, 1)
		waitForGauge(t, rec, tracing.MetricPending, b.table, 2)
		if got := rec.Counter(t, tracing.MetricRecovered, b.table); got != 0 {
			t.Errorf("recovered counter %d before any lease expired", got)
		}

		b.expire(t, 2)
		if got := rcv.fetch(1, 20*time.Second); len(got) != 1 || got[0] != 2 {
			t.Fatalf("after the lease expired, fetched %v, want 2", got)
		}
		waitfor.Within(t, 10*time.Second, "the recovery is counted", func() bool {
			return rec.Counter(t, tracing.MetricRecovered, b.table) >= 1
		})
		if got := rec.Counter(t, tracing.MetricRecovered, b.table); got != 1 {
			t.Errorf("recovered counter %d for one expired lease", got)
		}
		waitForGauge(t, rec, tracing.MetricReservedNow, b.table, 0)
		waitForGauge(t, rec, tracing.MetricPending, b.table, 3)
	})

	t.Run("only the leader reports the table's gauges", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 4)
		tel1, rec1 := tracingtest.New(t)
		tel2, rec2 := tracingtest.New(t)
		r1 := b.start(t, withTelemetry(tel1))
		waitfor.Within(t, 10*time.Second, "the first scheduler leads", func() bool { return r1.state(b.table) == leadership.StateLeader })
		r2 := b.start(t, withTelemetry(tel2))
		waitfor.Within(t, 10*time.Second, "the second scheduler is standby", func() bool { return r2.state(b.table) == leadership.StateStandby })
		waitForGauge(t, rec1, tracing.MetricPending, b.table, 4)

		for _, name := range []string{tracing.MetricPending, tracing.MetricReservedNow} {
			if v, ok := gauge(t, rec2, name, b.table); ok {
				t.Errorf("the standby reports %s = %d", name, v)
			}
		}
		if v, ok := gauge(t, rec2, tracing.MetricStreamDepth, b.table, jobsdb.PriorityDefault); ok {
			t.Errorf("the standby reports the stream depth %d", v)
		}
		if v := rec2.Counter(t, tracing.MetricPublished, b.table); v != 0 {
			t.Errorf("the standby counted %d published jobs", v)
		}

		r1.stop(t)
		waitForGauge(t, rec2, tracing.MetricPending, b.table, 4)
		if v, ok := gauge(t, rec1, tracing.MetricPending, b.table); ok {
			t.Errorf("the stopped leader still reports pending = %d", v)
		}
	})
}
