package tracing_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/jetjobs/jetjobs/tracing"

	"github.com/jetjobs/jetjobs/jobsdb"
)

var (
	benchJob    = tracing.Job{Table: "lab.session", Key: []byte(`{"subject_id":7,"session":3}`), Priority: 5, Attempt: 1, Subject: "jetjobs.lab.session.p5"}
	benchHeader = nats.Header{"Nats-Msg-Id": {"lab.session:7:3"}}
	sink        int
)

// work stands for the job's own work in the bare loop and in the instrumented ones.
//
//go:noinline
func work(j tracing.Job) int { return len(j.Key) + j.Priority }

// perJob is every call the scheduler and the worker make for one job on the hot path: publish
// span, inject, extract, process span, reserve span, run span, Traceparent for --exec,
// complete span, and the per-job metrics.
func perJob(ctx context.Context, tel *tracing.Telemetry, h nats.Header, j tracing.Job) int {
	m := tel.Metrics()
	// Scheduler.
	pctx, pub := tel.StartPublish(ctx, j)
	h = tracing.Inject(pctx, h)
	m.Published(ctx, j.Table, 1)
	pub.End()
	// Worker.
	wctx := tracing.Extract(ctx, h)
	wctx, proc := tel.StartProcess(wctx, j)
	_, res := tel.StartDB(wctx, tracing.OpReserve, j)
	tracing.End(res, nil)
	m.Reserved(wctx, j.Table, 1)
	m.DispatchLag(wctx, j.Table, 3*time.Millisecond)
	rctx, run := tel.StartRun(wctx, j)
	n := work(j) + len(tracing.Traceparent(rctx))
	tracing.End(run, nil)
	m.JobDuration(wctx, j.Table, 40*time.Millisecond)
	_, done := tel.StartDB(wctx, tracing.OpRecord(jobsdb.OutcomeSuccess), j)
	tracing.End(done, nil)
	m.Recorded(wctx, j.Table, jobsdb.OutcomeSuccess, 1)
	proc.End()
	return n
}

func disabled(tb testing.TB) *tracing.Telemetry {
	tel, err := tracing.Setup(context.Background(), tracing.Options{Getenv: func(string) string { return "" }})
	if err != nil {
		tb.Fatal(err)
	}
	return tel
}

// BenchmarkPerJob compares the per-job instrumentation with telemetry disabled (the default)
// against a bare loop doing the same work, and shows what metrics and tracing cost when on.
func BenchmarkPerJob(b *testing.B) {
	ctx := context.Background()
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink += work(benchJob)
		}
	})
	b.Run("disabled", func(b *testing.B) {
		tel := disabled(b)
		b.ReportAllocs()
		for b.Loop() {
			sink += perJob(ctx, tel, benchHeader, benchJob)
		}
	})
	b.Run("metrics-prometheus", func(b *testing.B) {
		tel, err := tracing.Setup(ctx, tracing.Options{Prometheus: true, Getenv: func(string) string { return "" }})
		if err != nil {
			b.Fatal(err)
		}
		defer tel.Shutdown(ctx)
		b.ReportAllocs()
		for b.Loop() {
			sink += perJob(ctx, tel, benchHeader, benchJob)
		}
	})
	b.Run("traces+metrics-sdk-no-export", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		defer tp.Shutdown(ctx)
		defer mp.Shutdown(ctx)
		tel, err := tracing.New(tp, mp)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			sink += perJob(ctx, tel, nats.Header{"Nats-Msg-Id": {"k"}}, benchJob)
		}
	})
}

// allocsPerRun is the least of a few testing.AllocsPerRun measurements: AllocsPerRun counts
// the whole process's allocations, so a goroutine left by another test can add one.
func allocsPerRun(f func()) float64 {
	least := testing.AllocsPerRun(1000, f)
	for range 4 {
		least = min(least, testing.AllocsPerRun(1000, f))
	}
	return least
}

func TestDisabledAllocatesNothing(t *testing.T) {
	tel := disabled(t)
	ctx := context.Background()
	if n := allocsPerRun(func() { sink += perJob(ctx, tel, benchHeader, benchJob) }); n != 0 {
		t.Errorf("disabled per-job instrumentation: %v allocations, want 0", n)
	}
}

func TestMetricsAllocateNothingPerCall(t *testing.T) {
	tel, err := tracing.Setup(context.Background(), tracing.Options{Prometheus: true, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	m, ctx := tel.Metrics(), context.Background()
	m.Reserved(ctx, "lab.session", 1) // first use of a table builds its attribute set
	m.JobDuration(ctx, "lab.session", time.Second)
	if n := allocsPerRun(func() {
		m.Reserved(ctx, "lab.session", 1)
		m.JobDuration(ctx, "lab.session", time.Second)
	}); n != 0 {
		t.Errorf("metrics: %v allocations per call, want 0 (cached attribute sets)", n)
	}
}
