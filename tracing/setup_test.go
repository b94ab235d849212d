package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/jetjobs/jetjobs/internal/buildtest"
	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/tracing/tracingtest"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// env is a fake environment for Options.Getenv.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// childEnv, when set, makes the test binary act as a worker process (see TestMain).
const childEnv = "JETJOBS_TRACING_TEST_CHILD"

func TestMain(m *testing.M) {
	if h := os.Getenv(childEnv); h != "" {
		os.Exit(runChildWorker(h))
	}
	os.Exit(m.Run())
}

// runChildWorker is a worker in another process: it extracts the header passed as JSON and
// records process, reserve and run spans, exporting through JETJOBS_TRACE_FILE.
func runChildWorker(headerJSON string) int {
	ctx := context.Background()
	tel, err := tracing.Setup(ctx, tracing.Options{ServiceName: "jetjobs-worker"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var h nats.Header
	if err := json.Unmarshal([]byte(headerJSON), &h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	pctx, proc := tel.StartProcess(tracing.Extract(ctx, h), job)
	_, res := tel.StartDB(pctx, tracing.OpReserve, job)
	res.End()
	rctx, run := tel.StartRun(pctx, job)
	fmt.Println(tracing.Traceparent(rctx)) // what an --exec handler would get
	run.End()
	proc.End()
	if err := tel.Shutdown(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func TestSetupDefaultIsDisabled(t *testing.T) {
	t.Parallel()
	tel, err := tracing.Setup(context.Background(), tracing.Options{Getenv: env{}.get})
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := tel.StartProcess(context.Background(), job)
	if tel.Enabled() || span.IsRecording() || tracing.Traceparent(ctx) != "" {
		t.Errorf("enabled %v, recording %v", tel.Enabled(), span.IsRecording())
	}
	if tel.Metrics() != nil || tel.MetricsHandler() != nil {
		t.Error("metrics enabled by default")
	}
	if _, ok := tel.Tracer().Start(context.Background(), "x"); ok.IsRecording() {
		t.Error("Tracer records")
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestSetupSelection(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name            string
		env             env
		tracing, metric bool
		err             error
	}{
		{"none is disabled", env{"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}, false, false, nil},
		{"console traces only", env{"OTEL_TRACES_EXPORTER": "console"}, true, false, nil},
		{"console metrics only", env{"OTEL_METRICS_EXPORTER": "Console"}, false, true, nil},
		{"a list with none", env{"OTEL_TRACES_EXPORTER": "none, console"}, true, false, nil},
		{"OTEL_SDK_DISABLED wins", env{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}, false, false, nil},
		{"otlp over grpc starts without a collector", env{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, false, nil},
		{"an unknown trace exporter is an error", env{"OTEL_TRACES_EXPORTER": "zipkin"}, false, false, tracing.ErrUnsupported},
		{"prometheus is not a trace exporter", env{"OTEL_TRACES_EXPORTER": "prometheus"}, false, false, tracing.ErrUnsupported},
		{"an unknown protocol is an error", env{"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/json"}, false, false, tracing.ErrUnsupported},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tel, err := tracing.Setup(context.Background(), tracing.Options{Getenv: c.env.get, Console: io.Discard})
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tel.Shutdown(context.Background())
			if tel.Enabled() != c.tracing || (tel.Metrics() != nil) != c.metric {
				t.Errorf("tracing %v metrics %v, want %v %v", tel.Enabled(), tel.Metrics() != nil, c.tracing, c.metric)
			}
		})
	}
}

func TestSetupConsole(t *testing.T) {
	t.Parallel()
	var out buildtest.Output
	tel, err := tracing.Setup(context.Background(), tracing.Options{
		ServiceName: "jetjobs-test",
		Getenv:      env{"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}.get,
		Console:     &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.StartRun(context.Background(), job)
	if !span.IsRecording() {
		t.Error("span not recording")
	}
	span.End()
	tel.Metrics().Recorded(context.Background(), job.Table, jobsdb.OutcomeSuccess, 1)
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"Name":"run lab.session"`, `"jetjobs-test"`, tracing.MetricCompleted} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console output lacks %s:\n%s", want, out.String())
		}
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestTraceFileAcrossProcesses(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spans.jsonl")
	ctx := context.Background()

	// This process is the scheduler.
	sched, err := tracing.Setup(ctx, tracing.Options{ServiceName: "jetjobs-scheduler", Getenv: env{tracing.EnvTraceFile: path}.get})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pub := sched.StartPublish(ctx, job)
	header, _ := json.Marshal(tracing.Inject(pctx, nil))
	pub.End()
	if err := sched.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	// The worker is a child process with only the environment in common.
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+string(header), tracing.EnvTraceFile+"="+path,
		"OTEL_TRACES_EXPORTER=", "OTEL_METRICS_EXPORTER=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child worker: %v\n%s", err, stderr.String())
	}

	spans, err := tracingtest.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]tracingtest.Span{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	publish, process := byName["publish jetjobs.lab.session.p3"], byName["process jetjobs.lab.session.p3"]
	reserve, run := byName["reserve lab.~~session"], byName["run lab.session"]
	if len(spans) != 4 || publish.SpanID == "" || process.SpanID == "" || reserve.SpanID == "" || run.SpanID == "" {
		t.Fatalf("spans in %s: %+v", path, spans)
	}
	t.Run("all spans share one trace", func(t *testing.T) {
		for _, s := range spans {
			if s.TraceID != publish.TraceID {
				t.Errorf("%s: trace %s, want %s", s.Name, s.TraceID, publish.TraceID)
			}
		}
	})
	t.Run("the worker's process span has the scheduler's publish span as remote parent", func(t *testing.T) {
		if process.ParentSpanID != publish.SpanID || !process.RemoteParent {
			t.Errorf("process parent %s (remote %v), want %s", process.ParentSpanID, process.RemoteParent, publish.SpanID)
		}
		if reserve.ParentSpanID != process.SpanID || run.ParentSpanID != process.SpanID {
			t.Errorf("reserve parent %s, run parent %s, want %s", reserve.ParentSpanID, run.ParentSpanID, process.SpanID)
		}
	})
	t.Run("each side names its service", func(t *testing.T) {
		if publish.Service != "jetjobs-scheduler" || process.Service != "jetjobs-worker" {
			t.Errorf("services %q, %q", publish.Service, process.Service)
		}
	})
	t.Run("kinds and attributes survive the file", func(t *testing.T) {
		if publish.Kind != trace.SpanKindProducer || process.Kind != trace.SpanKindConsumer || reserve.Kind != trace.SpanKindClient {
			t.Errorf("kinds %v %v %v", publish.Kind, process.Kind, reserve.Kind)
		}
		if reserve.Attributes["db.collection.name"] != "~~session" || process.Attributes["jetjobs.priority"] != float64(3) {
			t.Errorf("attributes %v / %v", reserve.Attributes, process.Attributes)
		}
	})
	t.Run("the child's TRACEPARENT names its run span", func(t *testing.T) {
		if got, want := strings.TrimSpace(string(out)), "00-"+run.TraceID+"-"+run.SpanID+"-01"; got != want {
			t.Errorf("TRACEPARENT %q, want %q", got, want)
		}
	})
}

func TestPrometheusHandler(t *testing.T) {
	t.Parallel()
	tel, err := tracing.Setup(context.Background(), tracing.Options{Prometheus: true, Getenv: env{}.get})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if tel.Enabled() {
		t.Error("Prometheus turned tracing on")
	}
	ctx := context.Background()
	m := tel.Metrics()
	m.Reserved(ctx, "lab.session", 3)
	m.Recorded(ctx, "lab.session", jobsdb.OutcomeError, 1)
	m.JobDuration(ctx, "lab.session", 2*time.Second)
	if _, err := m.ObserveStream(func(context.Context) []tracing.StreamSample {
		return []tracing.StreamSample{{Table: "lab.session", Priority: 5, Depth: 42}}
	}); err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewServer(tel.MetricsHandler())
	defer srv.Close()
	body := get(t, srv.URL)
	for _, want := range []string{
		`jetjobs_jobs_reserved_total{jetjobs_table="lab.session"`,
		`jetjobs_jobs_failed_total{jetjobs_table="lab.session"`,
		`jetjobs_job_duration_seconds_bucket{jetjobs_table="lab.session"`,
		`jetjobs_stream_depth{jetjobs_priority="5",jetjobs_table="lab.session"`,
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if v := sample(body, "jetjobs_jobs_reserved_total"); v != "3" {
		t.Errorf("jetjobs_jobs_reserved_total = %q, want 3\n%s", v, body)
	}
	if v := sample(body, "jetjobs_stream_depth"); v != "42" {
		t.Errorf("jetjobs_stream_depth = %q, want 42", v)
	}
}

// sample returns the value of the first sample of metric name in a Prometheus text body.
func sample(body, name string) string {
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			return f[len(f)-1]
		}
	}
	return ""
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func TestPrometheusExporterFromEnv(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	tel, err := tracing.Setup(context.Background(), tracing.Options{Getenv: env{
		"OTEL_METRICS_EXPORTER":         "prometheus",
		"OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
		"OTEL_EXPORTER_PROMETHEUS_PORT": port,
	}.get})
	if err != nil {
		t.Fatal(err)
	}
	if tel.MetricsHandler() != nil {
		t.Error("MetricsHandler without Options.Prometheus")
	}
	tel.Metrics().Recorded(context.Background(), "lab.session", jobsdb.OutcomeSuccess, 5)
	if v := sample(get(t, "http://127.0.0.1:"+port+"/metrics"), "jetjobs_jobs_completed_total"); v != "5" {
		t.Errorf("jetjobs_jobs_completed_total = %q, want 5", v)
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://127.0.0.1:" + port + "/metrics"); err == nil {
		t.Error("the Prometheus server still serves after Shutdown")
	}
}

// collector counts what OTLP exporters send it.
type collector struct {
	colltrace.UnimplementedTraceServiceServer
	mu      sync.Mutex
	spans   []string
	metrics []string
}

func (c *collector) addTraces(req *colltrace.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans = append(c.spans, s.Name)
			}
		}
	}
}

func (c *collector) addMetrics(req *collmetrics.ExportMetricsServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rm := range req.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				c.metrics = append(c.metrics, m.Name)
			}
		}
	}
}

func (c *collector) Export(_ context.Context, req *colltrace.ExportTraceServiceRequest) (*colltrace.ExportTraceServiceResponse, error) {
	c.addTraces(req)
	return &colltrace.ExportTraceServiceResponse{}, nil
}

// metricsServer adapts collector to the metrics service (both services name their method Export).
type metricsServer struct {
	collmetrics.UnimplementedMetricsServiceServer
	c *collector
}

func (m metricsServer) Export(_ context.Context, req *collmetrics.ExportMetricsServiceRequest) (*collmetrics.ExportMetricsServiceResponse, error) {
	m.c.addMetrics(req)
	return &collmetrics.ExportMetricsServiceResponse{}, nil
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/v1/traces":
		var req colltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.addTraces(&req)
	case "/v1/metrics":
		var req collmetrics.ExportMetricsServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.addMetrics(&req)
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
}

// TestSetupOTLP exports to a fake collector over both protocols. It sets the endpoint in
// the process environment (the OTLP exporters read it there), so it does not run in parallel.
func TestSetupOTLP(t *testing.T) {
	for _, protocol := range []string{tracing.ProtocolHTTPProtobuf, tracing.ProtocolGRPC} {
		t.Run("spans and metrics reach the collector over "+protocol, func(t *testing.T) {
			c := &collector{}
			var endpoint string
			if protocol == tracing.ProtocolGRPC {
				lis, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				gs := grpc.NewServer()
				colltrace.RegisterTraceServiceServer(gs, c)
				collmetrics.RegisterMetricsServiceServer(gs, metricsServer{c: c})
				go gs.Serve(lis)
				defer gs.Stop()
				endpoint = "http://" + lis.Addr().String()
			} else {
				srv := httptest.NewServer(c)
				defer srv.Close()
				endpoint = srv.URL
			}
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)

			tel, err := tracing.Setup(context.Background(), tracing.Options{Getenv: env{
				"OTEL_TRACES_EXPORTER":        "otlp",
				"OTEL_METRICS_EXPORTER":       "otlp",
				"OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
			}.get})
			if err != nil {
				t.Fatal(err)
			}
			_, span := tel.StartPublish(context.Background(), job)
			span.End()
			tel.Metrics().Published(context.Background(), job.Table, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := tel.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if strings.Join(c.spans, ",") != "publish jetjobs.lab.session.p3" {
				t.Errorf("collector got spans %q", c.spans)
			}
			if !strings.Contains(strings.Join(c.metrics, ","), tracing.MetricPublished) {
				t.Errorf("collector got metrics %q", c.metrics)
			}
		})
	}
}

// TestSetGlobal changes OpenTelemetry's globals, so it does not run in parallel.
func TestSetGlobal(t *testing.T) {
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
	})
	tel, err := tracing.Setup(context.Background(), tracing.Options{SetGlobal: true, Console: io.Discard,
		Getenv: env{"OTEL_TRACES_EXPORTER": "console"}.get})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	ctx, run := tel.StartRun(context.Background(), job)
	defer run.End()
	// A Go handler using the global tracer joins the run span's trace.
	_, child := otel.Tracer("handler").Start(ctx, "compute")
	defer child.End()
	if !child.IsRecording() || child.SpanContext().TraceID() != run.SpanContext().TraceID() {
		t.Errorf("handler span recording %v, trace %s, want %s", child.IsRecording(), child.SpanContext().TraceID(), run.SpanContext().TraceID())
	}
	if otel.GetTextMapPropagator().Fields() == nil {
		t.Error("no global propagator")
	}
}
