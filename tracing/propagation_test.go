package tracing_test

import (
	"context"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/tracing"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// side is one simulated process: its own TracerProvider exporting to its own recorder.
type side struct {
	tel *tracing.Telemetry
	rec *tracetest.InMemoryExporter
}

func newSide(t *testing.T, sampler sdktrace.Sampler) side {
	t.Helper()
	rec := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(rec), sdktrace.WithSampler(sampler))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tel, err := tracing.New(tp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return side{tel: tel, rec: rec}
}

func (s side) span(t *testing.T, name string) tracetest.SpanStub {
	t.Helper()
	for _, st := range s.rec.GetSpans() {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no span %q among %v", name, names(s.rec.GetSpans()))
	return tracetest.SpanStub{}
}

func names(spans tracetest.SpanStubs) []string {
	var n []string
	for _, s := range spans {
		n = append(n, s.Name)
	}
	return n
}

// wire copies a header as the NATS wire would: a fresh map, fresh slices.
func wire(h nats.Header) nats.Header {
	out := nats.Header{}
	for k, v := range h {
		out[k] = slices.Clone(v)
	}
	return out
}

var job = tracing.Job{
	Table:    "lab.session",
	Key:      []byte(`{"subject_id":7}`),
	Priority: 3,
	Subject:  "jetjobs.lab.session.p3",
}

func TestPropagationAcrossProviders(t *testing.T) {
	t.Parallel()
	sched := newSide(t, sdktrace.AlwaysSample())
	work := newSide(t, sdktrace.ParentBased(sdktrace.AlwaysSample()))
	ctx := context.Background()

	// Scheduler: publish span, injected into the message header.
	pctx, pub := sched.tel.StartPublish(ctx, job)
	h := tracing.Inject(pctx, nil)
	pub.End()
	if got := h["traceparent"]; len(got) != 1 {
		t.Fatalf("header after Inject = %v, want one lowercase traceparent", h)
	}

	// Worker, in "another process": extract, process, reserve, run, complete.
	wctx := tracing.Extract(ctx, wire(h))
	wctx, proc := work.tel.StartProcess(wctx, job)
	_, res := work.tel.StartDB(wctx, tracing.OpReserve, job)
	res.End()
	proc.SetAttributes(tracing.AttemptKey.Int(1))
	rctx, run := work.tel.StartRun(wctx, tracing.Job{Table: job.Table, Key: job.Key, Priority: job.Priority, Attempt: 1})
	traceparent := tracing.Traceparent(rctx)
	run.End()
	_, done := work.tel.StartDB(wctx, tracing.OpRecord(jobsdb.OutcomeSuccess), job)
	done.End()
	proc.End()

	publish := sched.span(t, "publish jetjobs.lab.session.p3")
	process := work.span(t, "process jetjobs.lab.session.p3")
	reserve := work.span(t, "reserve lab.~~session")
	runSpan := work.span(t, "run lab.session")
	complete := work.span(t, "complete lab.~~session")

	t.Run("the worker's spans share the publish span's trace", func(t *testing.T) {
		want := publish.SpanContext.TraceID()
		for _, s := range []tracetest.SpanStub{process, reserve, runSpan, complete} {
			if got := s.SpanContext.TraceID(); got != want {
				t.Errorf("%s: trace %s, want %s", s.Name, got, want)
			}
		}
	})
	t.Run("the publish span is the remote parent of the process span", func(t *testing.T) {
		if process.Parent.SpanID() != publish.SpanContext.SpanID() || !process.Parent.IsRemote() {
			t.Errorf("process parent = %v (remote %v), want remote %s", process.Parent.SpanID(), process.Parent.IsRemote(), publish.SpanContext.SpanID())
		}
	})
	t.Run("reserve, run and complete are children of process", func(t *testing.T) {
		for _, s := range []tracetest.SpanStub{reserve, runSpan, complete} {
			if s.Parent.SpanID() != process.SpanContext.SpanID() {
				t.Errorf("%s: parent %s, want %s", s.Name, s.Parent.SpanID(), process.SpanContext.SpanID())
			}
		}
	})
	t.Run("the exec handler's TRACEPARENT names the run span", func(t *testing.T) {
		want := "00-" + runSpan.SpanContext.TraceID().String() + "-" + runSpan.SpanContext.SpanID().String() + "-01"
		if traceparent != want {
			t.Errorf("Traceparent = %q, want %q", traceparent, want)
		}
	})
	t.Run("span kinds follow the messaging and database conventions", func(t *testing.T) {
		for s, want := range map[*tracetest.SpanStub]trace.SpanKind{
			&publish: trace.SpanKindProducer, &process: trace.SpanKindConsumer,
			&reserve: trace.SpanKindClient, &runSpan: trace.SpanKindInternal, &complete: trace.SpanKindClient,
		} {
			if s.SpanKind != want {
				t.Errorf("%s: kind %v, want %v", s.Name, s.SpanKind, want)
			}
		}
	})
}

func TestExtract(t *testing.T) {
	t.Parallel()
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

	t.Run("a canonical-case Traceparent header is found", func(t *testing.T) {
		ctx := tracing.Extract(context.Background(), nats.Header{"Traceparent": {tp}, "Nats-Msg-Id": {"x"}})
		if got := tracing.Traceparent(ctx); got != tp {
			t.Errorf("Traceparent = %q, want %q", got, tp)
		}
	})
	t.Run("a malformed traceparent is ignored", func(t *testing.T) {
		ctx := tracing.Extract(context.Background(), nats.Header{"traceparent": {"00-zz-yy-01"}})
		if trace.SpanContextFromContext(ctx).IsValid() {
			t.Error("malformed traceparent produced a valid span context")
		}
	})
	t.Run("no header leaves the context as it was", func(t *testing.T) {
		ctx := context.Background()
		if got := tracing.Extract(ctx, nil); got != ctx {
			t.Error("Extract(nil header) returned a new context")
		}
	})
	t.Run("baggage is carried", func(t *testing.T) {
		ctx := tracing.Extract(context.Background(), nats.Header{"baggage": {"tenant=lab1"}})
		if got := baggage.FromContext(ctx).Member("tenant").Value(); got != "lab1" {
			t.Errorf("baggage tenant = %q, want lab1", got)
		}
	})
}

func TestInject(t *testing.T) {
	t.Parallel()
	s := newSide(t, sdktrace.AlwaysSample())

	t.Run("nothing to inject leaves a nil header nil", func(t *testing.T) {
		if h := tracing.Inject(context.Background(), nil); h != nil {
			t.Errorf("Inject = %v, want nil", h)
		}
	})
	t.Run("a differently-cased traceparent is replaced", func(t *testing.T) {
		ctx, span := s.tel.StartPublish(context.Background(), job)
		defer span.End()
		h := tracing.Inject(ctx, nats.Header{"Traceparent": {"stale"}, "Nats-Msg-Id": {"k"}})
		if _, ok := h["Traceparent"]; ok {
			t.Errorf("stale Traceparent kept: %v", h)
		}
		if h.Get("traceparent") != tracing.Traceparent(ctx) || h.Get("Nats-Msg-Id") != "k" {
			t.Errorf("header = %v", h)
		}
	})
}

func TestTraceparent(t *testing.T) {
	t.Parallel()
	format := regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`)

	t.Run("a sampled span gives a W3C traceparent with its IDs", func(t *testing.T) {
		s := newSide(t, sdktrace.AlwaysSample())
		ctx, span := s.tel.StartRun(context.Background(), job)
		defer span.End()
		got := tracing.Traceparent(ctx)
		sc := span.SpanContext()
		if !format.MatchString(got) || !strings.Contains(got, sc.TraceID().String()+"-"+sc.SpanID().String()) {
			t.Errorf("Traceparent = %q, span %s/%s", got, sc.TraceID(), sc.SpanID())
		}
	})
	t.Run("no span gives an empty string", func(t *testing.T) {
		if got := tracing.Traceparent(context.Background()); got != "" {
			t.Errorf("Traceparent = %q, want empty", got)
		}
	})
	t.Run("an unsampled span gives an empty string", func(t *testing.T) {
		s := newSide(t, sdktrace.NeverSample())
		ctx, span := s.tel.StartRun(context.Background(), job)
		defer span.End()
		if !span.SpanContext().IsValid() {
			t.Fatal("span context not valid")
		}
		if got := tracing.Traceparent(ctx); got != "" {
			t.Errorf("Traceparent = %q, want empty", got)
		}
	})
}

func TestAppendEnv(t *testing.T) {
	t.Parallel()
	s := newSide(t, sdktrace.AlwaysSample())

	t.Run("TRACEPARENT and BAGGAGE are appended", func(t *testing.T) {
		m, _ := baggage.NewMember("tenant", "lab1")
		b, _ := baggage.New(m)
		ctx := baggage.ContextWithBaggage(context.Background(), b)
		ctx, span := s.tel.StartRun(ctx, job)
		defer span.End()
		env := tracing.AppendEnv(ctx, []string{"HOME=/root"})
		want := []string{"HOME=/root", "TRACEPARENT=" + tracing.Traceparent(ctx), "BAGGAGE=tenant=lab1"}
		if !slices.Equal(env, want) {
			t.Errorf("env = %q, want %q", env, want)
		}
	})
	t.Run("nothing to carry leaves env as it was", func(t *testing.T) {
		env := []string{"A=1"}
		if got := tracing.AppendEnv(context.Background(), env); !slices.Equal(got, env) {
			t.Errorf("env = %q", got)
		}
	})
}

// FuzzExtract feeds message headers as they may arrive from any publisher: Extract never
// panics, and what it accepts survives Inject and Extract again unchanged.
func FuzzExtract(f *testing.F) {
	f.Add("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "congo=t61rcWkgMzE", "a=b")
	f.Add("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", "", "")
	f.Add("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "x", "k=v;p=1")
	f.Add("00-00000000000000000000000000000000-b7ad6b7169203331-01", "", "%zz")
	f.Add("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09-extra", ",,,", "=")
	f.Fuzz(func(t *testing.T, traceparent, tracestate, bag string) {
		h := nats.Header{"traceparent": {traceparent}, "Tracestate": {tracestate}, "baggage": {bag}}
		ctx := tracing.Extract(context.Background(), h)
		sc := trace.SpanContextFromContext(ctx)
		again := tracing.Extract(context.Background(), tracing.Inject(ctx, nil))
		if sc2 := trace.SpanContextFromContext(again); !sc.Equal(sc2) {
			t.Errorf("round trip changed the span context: %v → %v", sc, sc2)
		}
		if sc.IsValid() && sc.IsSampled() && !strings.Contains(tracing.Traceparent(ctx), sc.TraceID().String()) {
			t.Errorf("Traceparent %q lacks trace %s", tracing.Traceparent(ctx), sc.TraceID())
		}
		b1, b2 := baggage.FromContext(ctx), baggage.FromContext(again)
		if !maps.Equal(members(b1), members(b2)) {
			t.Errorf("round trip changed the baggage: %v → %v", b1, b2)
		}
	})
}

func members(b baggage.Baggage) map[string]string {
	m := map[string]string{}
	for _, mem := range b.Members() {
		m[mem.Key()] = mem.Value()
	}
	return m
}
