// Package tracing is jetjobs' observability: OpenTelemetry traces that follow a job from the
// scheduler's publish through NATS to the worker's reserve, run and outcome, and metrics
// about jobs, refreshes, the jobs tables and the streams. The scheduler and the worker build
// one Telemetry with Setup and call its helpers; they never touch the OpenTelemetry SDK.
//
// # Setup and export
//
// Setup reads the standard OpenTelemetry variables (through Options.Getenv, default
// os.Getenv):
//
//	OTEL_TRACES_EXPORTER    otlp | console | none           default none (unset = none)
//	OTEL_METRICS_EXPORTER   otlp | console | prometheus | none   default none (unset = none)
//	                        both take a comma-separated list; "none" entries are ignored
//	OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL
//	                        grpc | http/protobuf             default http/protobuf
//	OTEL_EXPORTER_PROMETHEUS_HOST, _PORT   OTEL_METRICS_EXPORTER=prometheus serves /metrics
//	                        there                            default localhost:9464
//	OTEL_SDK_DISABLED=true  every OTEL_*_EXPORTER counts as none
//	OTEL_SERVICE_NAME       overrides Options.ServiceName (default "jetjobs")
//	JETJOBS_TRACE_FILE      also append every ended span to this file as one JSON line
//	                        (turns tracing on; for tests and debugging, see tracingtest)
//
// Unlike the OpenTelemetry default (otlp), an unset variable means none: a program started
// without configuration exports nothing and tries to reach no collector. The SDK and the
// exporters read their own variables (OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _INSECURE,
// OTEL_TRACES_SAMPLER (default parentbased_always_on), OTEL_BSP_*,
// OTEL_METRIC_EXPORT_INTERVAL (default 60s), OTEL_RESOURCE_ATTRIBUTES) from the process
// environment. Options.Prometheus (a program's --metrics-addr) adds a Prometheus reader on a
// registry of its own (plus the Go runtime and process collectors), served by
// MetricsHandler, in addition to any OTEL_METRICS_EXPORTER reader. Shutdown flushes and stops
// everything Setup started; give it a deadline.
//
// # Invariants
//
//   - Disabled costs nothing measurable. With tracing off, the Start helpers return the
//     context unchanged and a shared non-recording span, without allocating; with metrics off,
//     Telemetry.Metrics is nil and every method of a nil *Metrics returns at once. A nil
//     *Telemetry is valid and fully disabled. BenchmarkPerJob measures it.
//   - The per-job metric methods never allocate: each table's attribute set and measurement
//     options are built once and cached.
//   - Propagation does not depend on tracing being on: Extract and Traceparent pass a
//     publisher's context on to handlers even when this process records nothing.
//
// # Traces
//
// The span tree of one job, with the attributes of OpenTelemetry's messaging and database
// semantic conventions (semconv v1.43.0) and jetjobs.table, jetjobs.key, jetjobs.priority,
// jetjobs.attempt:
//
//	publish <subject>       producer  scheduler  StartPublish, then Inject into the header
//	└ process <subject>     consumer  worker     Extract from the header, then StartProcess
//	  ├ reserve s.~~table   client               StartDB(OpReserve)
//	  ├ run s.table         internal             StartRun: a Go handler gets its context,
//	  │                                          an --exec handler TRACEPARENT (AppendEnv)
//	  └ complete|fail s.~~table  client          StartDB(OpRecord(kind)), End(span, err)
//
// messaging.system=nats, messaging.operation.type send|process, messaging.destination.name
// (the subject), db.system.name=mysql, db.namespace (the schema), db.collection.name (the
// DataJoint jobs table "~~name"), db.operation.name (the DBOp). The W3C trace context and
// baggage travel in the NATS header as "traceparent", "tracestate" and "baggage". When one
// statement serves a batch, guard the per-job spans with Enabled.
//
// # Metrics
//
// Counters by jetjobs.table:
//
//	jetjobs.jobs.{published,reserved,completed,failed,retried,released,recovered}
//	jetjobs.refresh.{added,removed}
//
// Histograms in seconds:
// jetjobs.job.duration, jetjobs.job.dispatch_lag, jetjobs.refresh.duration. Observable
// gauges from callbacks (ObserveQueue, ObserveStream): jetjobs.queue.pending,
// jetjobs.queue.reserved, jetjobs.stream.depth (by table and jetjobs.priority). Prometheus
// names replace dots with underscores and add _total or _seconds
// (jetjobs_jobs_reserved_total, jetjobs_job_duration_seconds).
package tracing
