package tracing_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/tracing"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// A program sets telemetry up once from the environment, serves --metrics-addr from it, and
// flushes it before exiting. With no OTEL_* variable set nothing is exported.
func ExampleSetup() {
	ctx := context.Background()
	tel, err := tracing.Setup(ctx, tracing.Options{
		ServiceName: "jetjobs-worker",
		Prometheus:  true,                              // the program has --metrics-addr
		Getenv:      func(string) string { return "" }, // here: an empty environment
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tel.Shutdown(ctx)

	mux := http.NewServeMux()
	mux.Handle("/metrics", tel.MetricsHandler())
	fmt.Println("tracing:", tel.Enabled(), "metrics:", tel.Metrics() != nil)
	// Output: tracing: false metrics: true
}

// The scheduler starts a publish span per job and injects it into the message header; the
// worker extracts it, and its spans for the job become children of the publish span.
func Example_trace() {
	ctx := context.Background()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	tel, _ := tracing.New(tp, nil) // both "processes" share one recorder here
	job := tracing.Job{Table: "lab.session", Key: []byte(`{"id":1}`), Priority: 5, Subject: "jetjobs.lab.session.p5"}

	// Scheduler.
	pctx, pub := tel.StartPublish(ctx, job)
	header := tracing.Inject(pctx, nats.Header{"Nats-Msg-Id": {"lab.session:1"}})
	pub.End()

	// Worker: a fetch of one message.
	msgs := []nats.Header{header}
	ctxs := make([]context.Context, len(msgs))
	procs := make([]trace.Span, len(msgs))
	for i, h := range msgs {
		ctxs[i], procs[i] = tel.StartProcess(tracing.Extract(ctx, h), job)
	}
	// One reserve statement for the whole fetch; one span per job only when tracing is on.
	var reserves []trace.Span
	if tel.Enabled() {
		for i := range msgs {
			_, s := tel.StartDB(ctxs[i], tracing.OpReserve, job)
			reserves = append(reserves, s)
		}
	}
	// … jobs.Reserve(ctx, keys) …
	for _, s := range reserves {
		tracing.End(s, nil)
	}
	for i := range msgs {
		job.Attempt = 1 // from the lease
		rctx, run := tel.StartRun(ctxs[i], job)
		cmd := exec.Command("handler")
		cmd.Env = tracing.AppendEnv(rctx, cmd.Environ()) // TRACEPARENT=00-…
		tracing.End(run, errors.New("exit status 1"))
		_, fail := tel.StartDB(ctxs[i], tracing.OpRecord(jobsdb.OutcomeError), job)
		tracing.End(fail, nil)
		tel.Metrics().Recorded(ctx, job.Table, jobsdb.OutcomeError, 1) // nil Metrics: does nothing
		procs[i].End()
	}

	byID := map[trace.SpanID]string{{}: "(none)"}
	for _, s := range spans.GetSpans() {
		byID[s.SpanContext.SpanID()] = s.Name
	}
	for _, s := range spans.GetSpans() {
		fmt.Printf("%-32s %-9s parent: %s\n", s.Name, s.SpanKind, byID[s.Parent.SpanID()])
	}
	// Output:
	// publish jetjobs.lab.session.p5   producer  parent: (none)
	// reserve lab.~~session            client    parent: process jetjobs.lab.session.p5
	// run lab.session                  internal  parent: process jetjobs.lab.session.p5
	// fail lab.~~session               client    parent: process jetjobs.lab.session.p5
	// process jetjobs.lab.session.p5   consumer  parent: publish jetjobs.lab.session.p5
}

// The gauges come from callbacks that report what the program already knows; they run at
// each collection (a Prometheus scrape, an OTLP export).
func ExampleMetrics_ObserveQueue() {
	ctx := context.Background()
	tel, _ := tracing.Setup(ctx, tracing.Options{Prometheus: true, Getenv: func(string) string { return "" }})
	defer tel.Shutdown(ctx)

	// The scheduler keeps its last progress query per table.
	last := map[string]tracing.QueueSample{"lab.session": {Table: "lab.session", Pending: 120, Reserved: 8}}
	reg, err := tel.Metrics().ObserveQueue(func(context.Context) []tracing.QueueSample {
		out := make([]tracing.QueueSample, 0, len(last))
		for _, s := range last {
			out = append(out, s)
		}
		return out
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer reg.Unregister()

	tel.Metrics().RefreshDone(ctx, "lab.session", 1500*time.Millisecond, 120, 0)
	fmt.Println("registered")
	// Output: registered
}
