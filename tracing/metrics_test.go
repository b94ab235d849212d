package tracing_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/tracing/tracingtest"

	"github.com/jetjobs/jetjobs/jobsdb"
)

func TestMetricsCounters(t *testing.T) {
	t.Parallel()
	tel, rec := tracingtest.New(t)
	m := tel.Metrics()
	ctx := context.Background()

	// Two tables, several goroutines: counts add up per table.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			m.Published(ctx, "lab.a", 1)
			m.Reserved(ctx, "lab.a", 3)
			m.Recorded(ctx, "lab.a", jobsdb.OutcomeSuccess, 2)
			m.Recorded(ctx, "lab.a", jobsdb.OutcomeError, 1)
			m.Recorded(ctx, "lab.b", jobsdb.OutcomeRetry, 4)
			m.Recorded(ctx, "lab.b", jobsdb.OutcomeRelease, 5)
			m.Recovered(ctx, "lab.b", 6)
		})
	}
	wg.Wait()

	for _, c := range []struct {
		name, table string
		want        int64
	}{
		{tracing.MetricPublished, "lab.a", 8},
		{tracing.MetricReserved, "lab.a", 24},
		{tracing.MetricCompleted, "lab.a", 16},
		{tracing.MetricFailed, "lab.a", 8},
		{tracing.MetricRetried, "lab.b", 32},
		{tracing.MetricReleased, "lab.b", 40},
		{tracing.MetricRecovered, "lab.b", 48},
		{tracing.MetricReserved, "lab.b", 0},
	} {
		if got := rec.Counter(t, c.name, c.table); got != c.want {
			t.Errorf("%s{%s} = %d, want %d", c.name, c.table, got, c.want)
		}
	}
}

func TestMetricsHistograms(t *testing.T) {
	t.Parallel()
	tel, rec := tracingtest.New(t)
	m := tel.Metrics()
	ctx := context.Background()

	m.JobDuration(ctx, "lab.a", 1500*time.Millisecond)
	m.JobDuration(ctx, "lab.a", 500*time.Millisecond)
	m.DispatchLag(ctx, "lab.a", 250*time.Millisecond)
	m.DispatchLag(ctx, "lab.a", -time.Second) // clock skew counts as 0
	m.RefreshDone(ctx, "lab.a", 3*time.Second, 1000, 7)
	m.RefreshDone(ctx, "lab.a", time.Second, 5, 0)

	for _, c := range []struct {
		name       string
		count      uint64
		sum        float64
		boundaries []float64
	}{
		{tracing.MetricJobDuration, 2, 2.0, tracing.JobDurationBuckets},
		{tracing.MetricDispatchLag, 2, 0.25, tracing.DispatchLagBuckets},
		{tracing.MetricRefreshDuration, 2, 4.0, tracing.RefreshDurationBuckets},
	} {
		p, ok := rec.Histogram(t, c.name, "lab.a")
		if !ok {
			t.Errorf("%s: no data point", c.name)
			continue
		}
		if p.Count != c.count || p.Sum != c.sum || len(p.Bounds) != len(c.boundaries) {
			t.Errorf("%s: count %d sum %v bounds %d, want %d %v %d", c.name, p.Count, p.Sum, len(p.Bounds), c.count, c.sum, len(c.boundaries))
		}
	}
	if got := rec.Counter(t, tracing.MetricRefreshAdded, "lab.a"); got != 1005 {
		t.Errorf("refresh added = %d, want 1005", got)
	}
	if got := rec.Counter(t, tracing.MetricRefreshRemoved, "lab.a"); got != 7 {
		t.Errorf("refresh removed = %d, want 7", got)
	}
}

func TestMetricsGauges(t *testing.T) {
	t.Parallel()
	tel, rec := tracingtest.New(t)
	m := tel.Metrics()

	var mu sync.Mutex
	pending := int64(10)
	reg, err := m.ObserveQueue(func(context.Context) []tracing.QueueSample {
		mu.Lock()
		defer mu.Unlock()
		return []tracing.QueueSample{{Table: "lab.a", Pending: pending, Reserved: 4}, {Table: "lab.b", Pending: 1}}
	})
	if err != nil {
		t.Fatal(err)
	}
	sreg, err := m.ObserveStream(func(context.Context) []tracing.StreamSample {
		return []tracing.StreamSample{{Table: "lab.a", Priority: 1, Depth: 3}, {Table: "lab.a", Priority: 5, Depth: 9}}
	})
	if err != nil {
		t.Fatal(err)
	}
	gauge := func(name string, kv ...attribute.KeyValue) (int64, bool) { return rec.Int64(t, name, kv...) }
	a := tracing.TableKey.String("lab.a")

	t.Run("the callbacks report per table and per priority", func(t *testing.T) {
		for _, c := range []struct {
			name string
			kv   []attribute.KeyValue
			want int64
		}{
			{tracing.MetricPending, []attribute.KeyValue{a}, 10},
			{tracing.MetricReservedNow, []attribute.KeyValue{a}, 4},
			{tracing.MetricPending, []attribute.KeyValue{tracing.TableKey.String("lab.b")}, 1},
			{tracing.MetricStreamDepth, []attribute.KeyValue{a, tracing.PriorityKey.Int(1)}, 3},
			{tracing.MetricStreamDepth, []attribute.KeyValue{a, tracing.PriorityKey.Int(5)}, 9},
		} {
			if got, ok := gauge(c.name, c.kv...); !ok || got != c.want {
				t.Errorf("%s%v = %d (present %v), want %d", c.name, c.kv, got, ok, c.want)
			}
		}
	})
	t.Run("each collection calls the callback again", func(t *testing.T) {
		mu.Lock()
		pending = 2
		mu.Unlock()
		if got, _ := gauge(tracing.MetricPending, a); got != 2 {
			t.Errorf("pending = %d, want 2", got)
		}
	})
	t.Run("unregistered callbacks stop reporting", func(t *testing.T) {
		if err := reg.Unregister(); err != nil {
			t.Fatal(err)
		}
		if err := sreg.Unregister(); err != nil {
			t.Fatal(err)
		}
		if got, ok := gauge(tracing.MetricPending, a); ok {
			t.Errorf("pending still reported: %d", got)
		}
	})
}

func TestMetricsDisabled(t *testing.T) {
	t.Parallel()
	var m *tracing.Metrics // what Telemetry.Metrics returns with metrics off
	ctx := context.Background()
	m.Published(ctx, "t", 1)
	m.Reserved(ctx, "t", 1)
	m.Recorded(ctx, "t", jobsdb.OutcomeSuccess, 1)
	m.Recorded(ctx, "t", jobsdb.OutcomeError, 1)
	m.Recorded(ctx, "t", jobsdb.OutcomeRetry, 1)
	m.Recorded(ctx, "t", jobsdb.OutcomeRelease, 1)
	m.Recovered(ctx, "t", 1)
	m.JobDuration(ctx, "t", time.Second)
	m.DispatchLag(ctx, "t", time.Second)
	m.RefreshDone(ctx, "t", time.Second, 1, 1)
	called := false
	reg, err := m.ObserveQueue(func(context.Context) []tracing.QueueSample { called = true; return nil })
	if err != nil || reg.Unregister() != nil {
		t.Fatal("ObserveQueue on nil Metrics failed")
	}
	reg, err = m.ObserveStream(func(context.Context) []tracing.StreamSample { called = true; return nil })
	if err != nil || reg.Unregister() != nil {
		t.Fatal("ObserveStream on nil Metrics failed")
	}
	if called {
		t.Error("a callback ran with metrics disabled")
	}
}
