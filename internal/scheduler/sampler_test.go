package scheduler

import (
	"context"
	"github.com/jetjobs/jetjobs/queue"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/tracing/tracingtest"
)

func TestSampler(t *testing.T) {
	t.Parallel()

	t.Run("reports the gauges while it runs, samples at once when poked, and none once stopped", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 3)
		b.refresh(t)
		tel, rec := tracingtest.New(t)
		// A gauge interval of a minute: only the first sample and pokes explain new values.
		o := b.options(func(o *Options) {
			o.Telemetry = tel
			o.GaugeInterval = time.Minute
		})
		s := newSampler(o, b.table, b.log, b.jobs, func() *queue.Table { return b.stream })
		t.Cleanup(s.Stop)
		if _, ok := gauge(t, rec, tracing.MetricPending, b.table); ok {
			t.Error("a pending gauge is reported before the sampler started")
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitForGauge(t, rec, tracing.MetricPending, b.table, 3)
		b.reserve(t, 1)
		b.addSubjects(t, 4, 5)
		b.refresh(t)
		s.Poke()
		waitForGauge(t, rec, tracing.MetricPending, b.table, 4)
		waitForGauge(t, rec, tracing.MetricReservedNow, b.table, 1)

		s.Stop()
		for _, name := range []string{tracing.MetricPending, tracing.MetricReservedNow} {
			if v, ok := gauge(t, rec, name, b.table); ok {
				t.Errorf("the stopped sampler still reports %s = %d", name, v)
			}
		}
	})

	t.Run("there is none without metrics", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 0)
		if s := newSampler(b.options(nil), b.table, b.log, b.jobs, func() *queue.Table { return b.stream }); s != nil {
			t.Error("a sampler without metrics")
		}
	})
}
