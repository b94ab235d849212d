package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of the tracer and the meter.
const ScopeName = "github.com/jetjobs/jetjobs/tracing"

// DefaultServiceName is the service.name used when Options.ServiceName is empty and neither
// OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names the service.
const DefaultServiceName = "jetjobs"

// Environment variables interpreted by Setup (through Options.Getenv).
const (
	EnvSDKDisabled     = "OTEL_SDK_DISABLED"     // "true": every OTEL_*_EXPORTER counts as none
	EnvTracesExporter  = "OTEL_TRACES_EXPORTER"  // otlp, console, none (default none); comma list
	EnvMetricsExporter = "OTEL_METRICS_EXPORTER" // otlp, console, prometheus, none (default none); comma list
	EnvOTLPProtocol    = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvOTLPTracesProto = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"  // overrides EnvOTLPProtocol for traces
	EnvOTLPMetricProto = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL" // overrides EnvOTLPProtocol for metrics
	EnvPrometheusHost  = "OTEL_EXPORTER_PROMETHEUS_HOST"       // OTEL_METRICS_EXPORTER=prometheus: default "localhost"
	EnvPrometheusPort  = "OTEL_EXPORTER_PROMETHEUS_PORT"       // OTEL_METRICS_EXPORTER=prometheus: default "9464"
	// EnvTraceFile names a file that every ended span is appended to as one JSON line (the
	// stdouttrace format), synchronously, in addition to OTEL_TRACES_EXPORTER. It turns tracing
	// on by itself. Meant for tests that follow a trace across processes and for debugging;
	// read it back with tracingtest.ReadFile.
	EnvTraceFile = "JETJOBS_TRACE_FILE"
)

// Exporter names accepted in OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER.
const (
	ExporterNone       = "none"
	ExporterOTLP       = "otlp"
	ExporterConsole    = "console"
	ExporterPrometheus = "prometheus" // metrics only
)

// OTLP protocols accepted in OTEL_EXPORTER_OTLP_*PROTOCOL. The default is http/protobuf, as
// the OpenTelemetry specification says.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// ErrUnsupported marks an exporter name or OTLP protocol this package does not know; the
// error names the variable, its value and the accepted values.
var ErrUnsupported = errors.New("unsupported telemetry setting")

// Options configure Setup.
type Options struct {
	// ServiceName is the service.name resource attribute, e.g. "jetjobs-worker".
	// OTEL_SERVICE_NAME and service.name in OTEL_RESOURCE_ATTRIBUTES override it. Default
	// DefaultServiceName.
	ServiceName string

	// Prometheus asks for a Prometheus metrics reader with its own registry (never the global
	// one), served by Telemetry.MetricsHandler: set it when the program has --metrics-addr.
	// It is added to the readers chosen by OTEL_METRICS_EXPORTER, and turns metrics on even
	// when that variable is unset. Default false: MetricsHandler returns nil.
	Prometheus bool

	// SetGlobal also installs the providers and the W3C propagator as OpenTelemetry's globals
	// (otel.SetTracerProvider, SetMeterProvider, SetTextMapPropagator), so code that uses
	// otel.Tracer, such as a Go job handler or an instrumented driver, joins jetjobs' traces.
	// The propagator is always installed; a disabled signal leaves its global provider
	// untouched. Default false: tests and embedders keep their own globals.
	SetGlobal bool

	// Getenv looks up the variables listed with the Env constants (the choice of exporters,
	// protocols, OTEL_SERVICE_NAME and the Prometheus host and port). Default os.Getenv. The
	// OpenTelemetry SDK and exporters read their own settings (OTEL_EXPORTER_OTLP_ENDPOINT,
	// _HEADERS, OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_METRIC_EXPORT_INTERVAL,
	// OTEL_RESOURCE_ATTRIBUTES, …) from the process environment whatever Getenv says.
	Getenv func(string) string

	// Console is where the console exporters write. Default os.Stdout.
	Console io.Writer
}

// Telemetry holds the trace and metric providers of one program. A nil *Telemetry is valid
// and disabled: its spans are no-ops and its Metrics is nil (whose methods do nothing).
type Telemetry struct {
	tracer  trace.Tracer // nil when tracing is disabled
	metrics *Metrics     // nil when metrics are disabled
	tables  *tableCache
	handler http.Handler

	closers      []func(context.Context) error // run in reverse order by Shutdown
	shutdownOnce sync.Once
	shutdownErr  error
}

// Setup builds the providers the environment asks for. With nothing set (the default) it
// returns a disabled Telemetry: no exporter, no goroutine, non-recording spans, and metric
// methods that return at once. Call Shutdown before exiting to flush what was recorded.
func Setup(ctx context.Context, opts Options) (*Telemetry, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	console := opts.Console
	if console == nil {
		console = os.Stdout
	}
	sdkDisabled := strings.EqualFold(strings.TrimSpace(getenv(EnvSDKDisabled)), "true")
	traceNames, err := exporterNames(getenv, EnvTracesExporter, sdkDisabled, ExporterOTLP, ExporterConsole)
	if err != nil {
		return nil, err
	}
	metricNames, err := exporterNames(getenv, EnvMetricsExporter, sdkDisabled, ExporterOTLP, ExporterConsole, ExporterPrometheus)
	if err != nil {
		return nil, err
	}
	traceFile := getenv(EnvTraceFile)
	tracing := len(traceNames) > 0 || traceFile != ""
	metrics := len(metricNames) > 0 || opts.Prometheus
	if !tracing && !metrics {
		if opts.SetGlobal {
			otel.SetTextMapPropagator(propagator)
		}
		return New(nil, nil)
	}

	s := &setup{getenv: getenv, console: console}
	tel, err := s.build(ctx, opts, traceNames, traceFile, metricNames)
	if err != nil {
		return nil, errors.Join(err, s.close(ctx))
	}
	return tel, nil
}

// setup collects what Setup has started so that a failure part way can undo it.
type setup struct {
	getenv  func(string) string
	console io.Writer
	closers []func(context.Context) error
}

func (s *setup) close(ctx context.Context) error {
	var err error
	for i := len(s.closers) - 1; i >= 0; i-- {
		err = errors.Join(err, s.closers[i](ctx))
	}
	s.closers = nil
	return err
}

func (s *setup) build(ctx context.Context, opts Options, traceNames []string, traceFile string, metricNames []string) (*Telemetry, error) {
	res, err := s.resource(ctx, opts.ServiceName)
	if err != nil {
		return nil, err
	}

	var tp *sdktrace.TracerProvider
	if len(traceNames) > 0 || traceFile != "" {
		popts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
		for _, name := range traceNames {
			exp, err := s.spanExporter(ctx, name)
			if err != nil {
				return nil, err
			}
			popts = append(popts, sdktrace.WithBatcher(exp))
		}
		if traceFile != "" {
			exp, err := s.fileExporter(traceFile)
			if err != nil {
				return nil, err
			}
			popts = append(popts, sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(exp)))
		}
		tp = sdktrace.NewTracerProvider(popts...)
		s.closers = append(s.closers, tp.Shutdown)
	}

	var (
		mp      *sdkmetric.MeterProvider
		handler http.Handler
	)
	if len(metricNames) > 0 || opts.Prometheus {
		mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
		prom := opts.Prometheus
		for _, name := range metricNames {
			if name == ExporterPrometheus {
				prom = true
				continue
			}
			r, err := s.metricReader(ctx, name)
			if err != nil {
				return nil, err
			}
			mopts = append(mopts, sdkmetric.WithReader(r))
		}
		if prom {
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			// One scope only: its otel_scope_* labels would repeat on every series.
			r, err := promexporter.New(promexporter.WithRegisterer(reg), promexporter.WithoutScopeInfo())
			if err != nil {
				return nil, fmt.Errorf("tracing: creating the Prometheus exporter: %w", err)
			}
			mopts = append(mopts, sdkmetric.WithReader(r))
			handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
		}
		mp = sdkmetric.NewMeterProvider(mopts...)
		s.closers = append(s.closers, mp.Shutdown)
		if slices.Contains(metricNames, ExporterPrometheus) {
			if err := s.servePrometheus(handler); err != nil {
				return nil, err
			}
		}
	}

	var (
		tpi trace.TracerProvider
		mpi metric.MeterProvider
	)
	if tp != nil {
		tpi = tp
	}
	if mp != nil {
		mpi = mp
	}
	tel, err := New(tpi, mpi)
	if err != nil {
		return nil, err
	}
	if opts.Prometheus {
		tel.handler = handler
	}
	if opts.SetGlobal {
		otel.SetTextMapPropagator(propagator)
		if tp != nil {
			otel.SetTracerProvider(tp)
		}
		if mp != nil {
			otel.SetMeterProvider(mp)
		}
	}
	tel.closers, s.closers = s.closers, nil
	return tel, nil
}

// resource describes the process: service.name, then what the environment and the host say.
func (s *setup) resource(ctx context.Context, serviceName string) (*resource.Resource, error) {
	if serviceName == "" {
		serviceName = DefaultServiceName
	}
	ropts := []resource.Option{
		resource.WithAttributes(semconv.ServiceName(serviceName)),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
		resource.WithFromEnv(), // OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME (process environment)
	}
	if name := s.getenv("OTEL_SERVICE_NAME"); name != "" {
		ropts = append(ropts, resource.WithAttributes(semconv.ServiceName(name)))
	}
	res, err := resource.New(ctx, ropts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: describing the process (check OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	return res, nil
}

// exporterNames reads a comma-separated OTEL_*_EXPORTER variable. Unset, empty and "none"
// give no exporter: telemetry is off unless asked for (the OpenTelemetry default, otlp, would
// make every program try to reach a collector on localhost).
func exporterNames(getenv func(string) string, env string, disabled bool, accepted ...string) ([]string, error) {
	if disabled {
		return nil, nil
	}
	var names []string
	for name := range strings.SplitSeq(getenv(env), ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" || name == ExporterNone {
			continue
		}
		if !slices.Contains(accepted, name) {
			return nil, fmt.Errorf("tracing: %s=%q: %w: exporter %q (accepted: %s, none)",
				env, getenv(env), ErrUnsupported, name, strings.Join(accepted, ", "))
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names, nil
}

func (s *setup) otlpProtocol(signalEnv string) (string, error) {
	env := signalEnv
	proto := strings.TrimSpace(s.getenv(env))
	if proto == "" {
		env = EnvOTLPProtocol
		proto = strings.TrimSpace(s.getenv(env))
	}
	switch proto {
	case "", ProtocolHTTPProtobuf:
		return ProtocolHTTPProtobuf, nil
	case ProtocolGRPC:
		return ProtocolGRPC, nil
	}
	return "", fmt.Errorf("tracing: %s=%q: %w: OTLP protocol (accepted: %s, %s)",
		env, proto, ErrUnsupported, ProtocolGRPC, ProtocolHTTPProtobuf)
}

func (s *setup) spanExporter(ctx context.Context, name string) (sdktrace.SpanExporter, error) {
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch name {
	case ExporterConsole:
		exp, err = stdouttrace.New(stdouttrace.WithWriter(s.console))
	case ExporterOTLP:
		var proto string
		if proto, err = s.otlpProtocol(EnvOTLPTracesProto); err != nil {
			return nil, err
		}
		if proto == ProtocolGRPC {
			exp, err = otlptracegrpc.New(ctx)
		} else {
			exp, err = otlptracehttp.New(ctx)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: creating the %s span exporter: %w", name, err)
	}
	return exp, nil
}

// fileExporter appends spans to path as JSON lines; each span is one write to a file opened
// with O_APPEND, so several processes can share the file.
func (s *setup) fileExporter(path string) (sdktrace.SpanExporter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("tracing: opening %s=%s: %w", EnvTraceFile, path, err)
	}
	s.closers = append(s.closers, func(context.Context) error { return f.Close() })
	exp, err := stdouttrace.New(stdouttrace.WithWriter(f))
	if err != nil {
		return nil, fmt.Errorf("tracing: creating the file span exporter: %w", err)
	}
	return exp, nil
}

func (s *setup) metricReader(ctx context.Context, name string) (sdkmetric.Reader, error) {
	var (
		exp sdkmetric.Exporter
		err error
	)
	switch name {
	case ExporterConsole:
		exp, err = stdoutmetric.New(stdoutmetric.WithWriter(s.console))
	case ExporterOTLP:
		var proto string
		if proto, err = s.otlpProtocol(EnvOTLPMetricProto); err != nil {
			return nil, err
		}
		if proto == ProtocolGRPC {
			exp, err = otlpmetricgrpc.New(ctx)
		} else {
			exp, err = otlpmetrichttp.New(ctx)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: creating the %s metric exporter: %w", name, err)
	}
	// The interval comes from OTEL_METRIC_EXPORT_INTERVAL (default 60s).
	return sdkmetric.NewPeriodicReader(exp), nil
}

// servePrometheus serves /metrics on OTEL_EXPORTER_PROMETHEUS_HOST:PORT, as the OpenTelemetry
// specification says for OTEL_METRICS_EXPORTER=prometheus. The server stops in Shutdown.
func (s *setup) servePrometheus(handler http.Handler) error {
	host := s.getenv(EnvPrometheusHost)
	if host == "" {
		host = "localhost"
	}
	port := s.getenv(EnvPrometheusPort)
	if port == "" {
		port = "9464"
	}
	addr := net.JoinHostPort(host, port)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("tracing: serving Prometheus metrics on %s (%s, %s): %w", addr, EnvPrometheusHost, EnvPrometheusPort, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", handler)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			otel.Handle(fmt.Errorf("tracing: Prometheus server on %s: %w", addr, err))
		}
	}()
	s.closers = append(s.closers, func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		<-done
		return err
	})
	return nil
}

// New wraps providers the caller already has: an application that embeds jetjobs with its
// own OpenTelemetry setup, or a test with recording providers (see package tracingtest). A
// nil provider disables its signal. Shutdown of the result does not shut the providers down.
func New(tp trace.TracerProvider, mp metric.MeterProvider) (*Telemetry, error) {
	t := &Telemetry{tables: newTableCache()}
	if tp != nil {
		t.tracer = tp.Tracer(ScopeName)
	}
	if mp != nil {
		m, err := newMetrics(mp.Meter(ScopeName), t.tables)
		if err != nil {
			return nil, err
		}
		t.metrics = m
	}
	return t, nil
}

// Shutdown flushes the exporters and stops them and the Prometheus server, if any. It is
// safe to call more than once; later calls return the first call's result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.shutdownOnce.Do(func() {
		for i := len(t.closers) - 1; i >= 0; i-- {
			t.shutdownErr = errors.Join(t.shutdownErr, t.closers[i](ctx))
		}
		if t.shutdownErr != nil {
			t.shutdownErr = fmt.Errorf("tracing: flushing telemetry: %w", t.shutdownErr)
		}
	})
	return t.shutdownErr
}

// MetricsHandler serves the metrics in the Prometheus text format, for --metrics-addr; nil
// unless Options.Prometheus was set.
func (t *Telemetry) MetricsHandler() http.Handler {
	if t == nil {
		return nil
	}
	return t.handler
}

// noopTracer is what Tracer returns when tracing is disabled.
var noopTracer = noop.NewTracerProvider().Tracer(ScopeName)

// Tracer is the jetjobs tracer; a no-op tracer when tracing is disabled. A Go handler that
// wants its own spans uses trace.SpanFromContext(ctx).TracerProvider() instead.
func (t *Telemetry) Tracer() trace.Tracer {
	if t == nil || t.tracer == nil {
		return noopTracer
	}
	return t.tracer
}

// Enabled reports whether spans are recorded. Callers use it to skip per-job work that only
// feeds spans, such as one span per job of a batch.
func (t *Telemetry) Enabled() bool { return t != nil && t.tracer != nil }

// Metrics returns the instruments; nil (a valid receiver whose methods do nothing) when
// metrics are disabled.
func (t *Telemetry) Metrics() *Metrics {
	if t == nil {
		return nil
	}
	return t.metrics
}
