package tracing_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/tracing/tracingtest"

	"github.com/jetjobs/jetjobs/jobsdb"
)

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func ended(t *testing.T, rec *tracingtest.Recorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range rec.Ended() {
		if s.Name() == name {
			return s
		}
	}
	t.Fatalf("no ended span %q", name)
	return nil
}

func wantAttrs(t *testing.T, s sdktrace.ReadOnlySpan, want map[string]any) {
	t.Helper()
	got := attrs(s)
	for k, w := range want {
		v, ok := got[attribute.Key(k)]
		if !ok {
			t.Errorf("%s: no attribute %s", s.Name(), k)
			continue
		}
		if v.AsInterface() != w {
			t.Errorf("%s: %s = %v, want %v", s.Name(), k, v.AsInterface(), w)
		}
	}
}

func TestSpanAttributes(t *testing.T) {
	t.Parallel()
	tel, rec := tracingtest.New(t)
	ctx := context.Background()
	j := tracing.Job{Table: "lab.__session", Key: []byte(`{"id":1}`), Priority: 2, Attempt: 3, Subject: "jetjobs.lab.__session.p2"}

	_, s := tel.StartPublish(ctx, j)
	s.End()
	_, s = tel.StartProcess(ctx, j)
	s.End()
	_, s = tel.StartDB(ctx, tracing.OpRecord(jobsdb.OutcomeError), j)
	s.End()
	_, s = tel.StartRun(ctx, tracing.Job{Table: "solo"})
	s.End()

	jobAttrs := map[string]any{"jetjobs.table": "lab.__session", "jetjobs.key": `{"id":1}`, "jetjobs.priority": int64(2), "jetjobs.attempt": int64(3)}
	t.Run("publish has messaging attributes with operation type send", func(t *testing.T) {
		s := ended(t, rec, "publish jetjobs.lab.__session.p2")
		wantAttrs(t, s, map[string]any{"messaging.system": "nats", "messaging.operation.type": "send",
			"messaging.operation.name": "publish", "messaging.destination.name": "jetjobs.lab.__session.p2"})
		wantAttrs(t, s, jobAttrs)
	})
	t.Run("process has messaging attributes with operation type process", func(t *testing.T) {
		s := ended(t, rec, "process jetjobs.lab.__session.p2")
		wantAttrs(t, s, map[string]any{"messaging.system": "nats", "messaging.operation.type": "process"})
		wantAttrs(t, s, jobAttrs)
	})
	t.Run("a DB span names the schema and the DataJoint jobs table", func(t *testing.T) {
		s := ended(t, rec, "fail lab.~~session")
		wantAttrs(t, s, map[string]any{"db.system.name": "mysql", "db.namespace": "lab",
			"db.collection.name": "~~session", "db.operation.name": "fail"})
		wantAttrs(t, s, jobAttrs)
	})
	t.Run("optional attributes are left out when unknown", func(t *testing.T) {
		s := ended(t, rec, "run solo")
		a := attrs(s)
		for _, k := range []attribute.Key{tracing.KeyKey, tracing.AttemptKey} {
			if _, ok := a[k]; ok {
				t.Errorf("run solo has %s", k)
			}
		}
	})
}

func TestEnd(t *testing.T) {
	t.Parallel()

	t.Run("an error sets the error status, error.type and an exception event", func(t *testing.T) {
		tel, rec := tracingtest.New(t)
		_, span := tel.StartRun(context.Background(), job)
		tracing.End(span, errors.New("exit status 3"))
		s := ended(t, rec, "run lab.session")
		if s.Status().Code != codes.Error || s.Status().Description != "exit status 3" {
			t.Errorf("status = %+v", s.Status())
		}
		if _, ok := attrs(s)["error.type"]; !ok {
			t.Error("no error.type")
		}
		if len(s.Events()) != 1 || s.Events()[0].Name != "exception" {
			t.Errorf("events = %v", s.Events())
		}
	})
	t.Run("no error leaves the status unset", func(t *testing.T) {
		tel, rec := tracingtest.New(t)
		_, span := tel.StartRun(context.Background(), job)
		tracing.End(span, nil)
		if s := ended(t, rec, "run lab.session"); s.Status().Code != codes.Unset {
			t.Errorf("status = %+v", s.Status())
		}
	})
}

func TestDisabledSpans(t *testing.T) {
	t.Parallel()
	for name, tel := range map[string]*tracing.Telemetry{"nil Telemetry": nil, "New(nil, nil)": must(tracing.New(nil, nil))} {
		t.Run(name+" returns the context unchanged and a non-recording span", func(t *testing.T) {
			ctx := context.Background()
			for op, start := range map[string]func(context.Context, tracing.Job) (context.Context, trace.Span){
				"publish": tel.StartPublish, "process": tel.StartProcess, "run": tel.StartRun,
				"db": func(ctx context.Context, j tracing.Job) (context.Context, trace.Span) {
					return tel.StartDB(ctx, tracing.OpReserve, j)
				},
			} {
				got, span := start(ctx, job)
				if got != ctx || span.IsRecording() || span.SpanContext().IsValid() {
					t.Errorf("%s: ctx changed %v, recording %v, valid %v", op, got != ctx, span.IsRecording(), span.SpanContext().IsValid())
				}
				tracing.End(span, errors.New("ignored"))
			}
			if tel.Enabled() || tel.Metrics() != nil || tel.MetricsHandler() != nil {
				t.Error("disabled Telemetry reports something enabled")
			}
			if err := tel.Shutdown(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	t.Run("a disabled worker passes the scheduler's context on to its handler", func(t *testing.T) {
		sched := newSide(t, sdktrace.AlwaysSample())
		pctx, pub := sched.tel.StartPublish(context.Background(), job)
		defer pub.End()
		var worker *tracing.Telemetry
		ctx := tracing.Extract(context.Background(), tracing.Inject(pctx, nil))
		ctx, proc := worker.StartProcess(ctx, job)
		defer proc.End()
		ctx, run := worker.StartRun(ctx, job)
		defer run.End()
		if got, want := tracing.Traceparent(ctx), tracing.Traceparent(pctx); got != want {
			t.Errorf("Traceparent = %q, want the publish span's %q", got, want)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
