// Package tracingtest records jetjobs telemetry for tests.
//
// In one process, New returns an enabled *tracing.Telemetry whose spans and metrics stay in
// memory. Across processes (a test that runs the scheduler and worker binaries), set
// JETJOBS_TRACE_FILE to one file in every child's environment: each process appends its
// ended spans there as JSON lines, and ReadFile reads them back:
//
//	path := filepath.Join(t.TempDir(), "spans.jsonl")
//	cmd.Env = append(os.Environ(), tracing.EnvTraceFile+"="+path)
//	…
//	spans, err := tracingtest.ReadFile(path)
package tracingtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/tracing"
)

// Recorder holds what a Telemetry made by New recorded.
type Recorder struct {
	Spans          *tracetest.SpanRecorder // every started and ended span
	Reader         *sdkmetric.ManualReader // collect on demand
	TracerProvider *sdktrace.TracerProvider
	MeterProvider  *sdkmetric.MeterProvider
}

// New returns an enabled Telemetry (every span sampled) that records in memory, and the
// recorder. The providers shut down when the test ends.
func New(t testing.TB) (*tracing.Telemetry, *Recorder) {
	t.Helper()
	r := &Recorder{Spans: tracetest.NewSpanRecorder(), Reader: sdkmetric.NewManualReader()}
	r.TracerProvider = sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
		sdktrace.WithSpanProcessor(r.Spans))
	r.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.Reader))
	t.Cleanup(func() {
		_ = r.TracerProvider.Shutdown(context.Background())
		_ = r.MeterProvider.Shutdown(context.Background())
	})
	tel, err := tracing.New(r.TracerProvider, r.MeterProvider)
	if err != nil {
		t.Fatalf("tracingtest: %v", err)
	}
	return tel, r
}

// Ended returns the spans ended so far, in the order they ended.
func (r *Recorder) Ended() []sdktrace.ReadOnlySpan { return r.Spans.Ended() }

// Collect returns the metrics recorded so far.
func (r *Recorder) Collect(t testing.TB) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("tracingtest: collecting metrics: %v", err)
	}
	return rm
}

// Int64 returns the value of the int64 counter or gauge called name at the data point whose
// attributes are exactly attrs, and whether there is one.
func (r *Recorder) Int64(t testing.TB, name string, attrs ...attribute.KeyValue) (int64, bool) {
	t.Helper()
	want := attribute.NewSet(attrs...)
	m, ok := find(r.Collect(t), name)
	if !ok {
		return 0, false
	}
	var points []metricdata.DataPoint[int64]
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		points = d.DataPoints
	case metricdata.Gauge[int64]:
		points = d.DataPoints
	default:
		t.Fatalf("tracingtest: %s is a %T, not an int64 counter or gauge", name, m.Data)
	}
	for _, p := range points {
		if p.Attributes.Equals(&want) {
			return p.Value, true
		}
	}
	return 0, false
}

// Counter is Int64 for a counter with the single attribute jetjobs.table=table; 0 when
// nothing was counted.
func (r *Recorder) Counter(t testing.TB, name, table string) int64 {
	t.Helper()
	v, _ := r.Int64(t, name, tracing.TableKey.String(table))
	return v
}

// Histogram returns the data point of the float64 histogram called name for table, and
// whether there is one.
func (r *Recorder) Histogram(t testing.TB, name, table string) (metricdata.HistogramDataPoint[float64], bool) {
	t.Helper()
	want := attribute.NewSet(tracing.TableKey.String(table))
	m, ok := find(r.Collect(t), name)
	if !ok {
		return metricdata.HistogramDataPoint[float64]{}, false
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("tracingtest: %s is a %T, not a float64 histogram", name, m.Data)
	}
	for _, p := range h.DataPoints {
		if p.Attributes.Equals(&want) {
			return p, true
		}
	}
	return metricdata.HistogramDataPoint[float64]{}, false
}

func find(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// Span is one span read from a JETJOBS_TRACE_FILE.
type Span struct {
	Name         string
	TraceID      string // 32 hex digits
	SpanID       string // 16 hex digits
	ParentSpanID string // "0000000000000000" for a root span
	RemoteParent bool   // the parent came from another process (e.g. through NATS headers)
	Kind         trace.SpanKind
	Status       string         // "Unset", "Ok" or "Error"
	Attributes   map[string]any // JSON values: string, float64, bool, []any
	Service      string         // service.name of the process that recorded it
}

// fileSpan is the stdouttrace encoding of a span (tracetest.SpanStub as JSON).
type fileSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct {
		SpanID string
		Remote bool
	}
	SpanKind   trace.SpanKind
	Status     struct{ Code string }
	Attributes []keyValue
	Resource   []keyValue
}

type keyValue struct {
	Key   string
	Value struct{ Value any }
}

// ReadFile reads the spans appended to a JETJOBS_TRACE_FILE, in the order they ended.
func ReadFile(path string) ([]Span, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tracingtest: reading spans: %w", err)
	}
	defer f.Close()
	var spans []Span
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var fs fileSpan
		if err := json.Unmarshal(sc.Bytes(), &fs); err != nil {
			return nil, fmt.Errorf("tracingtest: %s:%d: %w", path, line, err)
		}
		s := Span{
			Name:         fs.Name,
			TraceID:      fs.SpanContext.TraceID,
			SpanID:       fs.SpanContext.SpanID,
			ParentSpanID: fs.Parent.SpanID,
			RemoteParent: fs.Parent.Remote,
			Kind:         fs.SpanKind,
			Status:       fs.Status.Code,
			Attributes:   make(map[string]any, len(fs.Attributes)),
		}
		for _, kv := range fs.Attributes {
			s.Attributes[kv.Key] = kv.Value.Value
		}
		for _, kv := range fs.Resource {
			if kv.Key == "service.name" {
				s.Service, _ = kv.Value.Value.(string)
			}
		}
		spans = append(spans, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tracingtest: reading %s: %w", path, err)
	}
	return spans, nil
}
