package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// jetjobs attribute keys, on spans (the first four) and metrics (TableKey, PriorityKey on the
// stream depth, DispatchKey on the worker's dispatch mode).
const (
	TableKey    = attribute.Key("jetjobs.table")    // target table, "schema.table"
	KeyKey      = attribute.Key("jetjobs.key")      // the job's key as canonical JSON
	AttemptKey  = attribute.Key("jetjobs.attempt")  // reservations made so far, 1 for the first
	PriorityKey = attribute.Key("jetjobs.priority") // the job's priority, lower is more urgent
	DispatchKey = attribute.Key("jetjobs.dispatch") // how a worker takes jobs: "nats" or "mysql"
)

// MessagingSystemNATS is messaging.system for NATS (not among semconv's well-known values).
var MessagingSystemNATS = semconv.MessagingSystemKey.String("nats")

// Job says which job a span is about. It is passed by value; nothing in it is copied or
// converted unless tracing is enabled.
type Job struct {
	// Table is the target table, "schema.table" (jetjobs.table; its schema is db.namespace
	// and its jobs table "~~table" db.collection.name). Required.
	Table string
	// Key is the canonical JSON of the key (jetjobs.key). Nil leaves the attribute out.
	Key []byte
	// Priority is the job's priority (jetjobs.priority).
	Priority int
	// Attempt counts reservations, 1 for the first (jetjobs.attempt). 0 (unknown, e.g.
	// before the reservation) leaves the attribute out; add it later with
	// span.SetAttributes(AttemptKey.Int(n)).
	Attempt int
	// Subject is the NATS subject of the job's message (messaging.destination.name, and the
	// messaging span names). Empty leaves the attribute out and names the span after Table.
	Subject string
}

// DBOp names a statement on the jobs table; it is db.operation.name and the first word of
// the span name. Other values may be used.
type DBOp string

// The jobs-table operations of the worker and the scheduler besides recording an outcome,
// whose operation OpRecord names.
const (
	OpReserve   DBOp = "reserve"   // pending → reserved
	OpHeartbeat DBOp = "heartbeat" // lease renewal
	OpRefresh   DBOp = "refresh"   // key source → pending, stale removal
	OpRecover   DBOp = "recover"   // expired leases → pending
)

// OpRecord names the statement that records an outcome of kind: "complete" (reserved →
// success or deleted), "fail" (→ error), "retry" (→ pending after a backoff) or "release"
// (→ pending, interrupted).
func OpRecord(kind jobsdb.OutcomeKind) DBOp {
	switch kind {
	case jobsdb.OutcomeSuccess:
		return "complete"
	case jobsdb.OutcomeError:
		return "fail"
	case jobsdb.OutcomeRetry:
		return "retry"
	case jobsdb.OutcomeRelease:
		return "release"
	}
	return DBOp(kind.String())
}

// disabledSpan is the non-recording, invalid span returned when tracing is disabled.
var disabledSpan = trace.SpanFromContext(context.Background())

// StartPublish starts the scheduler's span for publishing one job's message (SpanKind
// producer, "publish <subject>"). Inject the returned context into the message's header, then
// end the span when the publish is acknowledged. Disabled: returns ctx and a no-op span.
func (t *Telemetry) StartPublish(ctx context.Context, j Job) (context.Context, trace.Span) {
	if !t.Enabled() {
		return ctx, disabledSpan
	}
	ti := t.tables.get(j.Table)
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, MessagingSystemNATS, semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("publish"))
	attrs = messagingDest(attrs, j)
	attrs = jobAttrs(attrs, ti, j)
	return t.tracer.Start(ctx, "publish "+dest(ti, j), trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
}

// StartProcess starts the worker's span for one fetched message (SpanKind consumer, "process
// <subject>"): the root of the job's reserve, run and complete/fail spans in the worker. Pass
// the context returned by Extract so that the publish span is its parent. End it after the
// ack. Disabled: returns ctx (with whatever Extract put there) and a no-op span.
func (t *Telemetry) StartProcess(ctx context.Context, j Job) (context.Context, trace.Span) {
	if !t.Enabled() {
		return ctx, disabledSpan
	}
	ti := t.tables.get(j.Table)
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, MessagingSystemNATS, semconv.MessagingOperationTypeProcess, semconv.MessagingOperationName("process"))
	attrs = messagingDest(attrs, j)
	attrs = jobAttrs(attrs, ti, j)
	return t.tracer.Start(ctx, "process "+dest(ti, j), trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// StartDB starts a span for one job's part in a statement on the jobs table (SpanKind
// client, "<op> schema.~~table", db.system.name=mysql, db.namespace, db.collection.name,
// db.operation.name). When one statement serves a batch, start one span per job from each
// job's process context, guarded by Enabled. Disabled: returns ctx and a no-op span.
func (t *Telemetry) StartDB(ctx context.Context, op DBOp, j Job) (context.Context, trace.Span) {
	if !t.Enabled() {
		return ctx, disabledSpan
	}
	ti := t.tables.get(j.Table)
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = ti.dbAttrs(attrs)
	attrs = append(attrs, semconv.DBOperationName(string(op)))
	attrs = jobAttrs(attrs, ti, j)
	return t.tracer.Start(ctx, string(op)+" "+ti.jobsTable, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// StartRun starts the span of the handler's run ("run schema.table", SpanKind internal). A
// Go handler gets the returned context; an --exec handler gets Traceparent of it (or
// AppendEnv). Disabled: returns ctx and a no-op span.
func (t *Telemetry) StartRun(ctx context.Context, j Job) (context.Context, trace.Span) {
	if !t.Enabled() {
		return ctx, disabledSpan
	}
	ti := t.tables.get(j.Table)
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = jobAttrs(attrs, ti, j)
	return t.tracer.Start(ctx, "run "+ti.name, trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(attrs...))
}

// End ends span, first recording err (if not nil) as an exception event, the span's error
// status and error.type. It costs nothing more than span.End on a non-recording span.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(semconv.ErrorType(err))
	}
	span.End()
}

func dest(ti *tableInfo, j Job) string {
	if j.Subject != "" {
		return j.Subject
	}
	return ti.name
}

func messagingDest(attrs []attribute.KeyValue, j Job) []attribute.KeyValue {
	if j.Subject != "" {
		attrs = append(attrs, semconv.MessagingDestinationName(j.Subject))
	}
	return attrs
}

func jobAttrs(attrs []attribute.KeyValue, ti *tableInfo, j Job) []attribute.KeyValue {
	attrs = append(attrs, TableKey.String(ti.name), PriorityKey.Int(j.Priority))
	if j.Key != nil {
		attrs = append(attrs, KeyKey.String(string(j.Key)))
	}
	if j.Attempt > 0 {
		attrs = append(attrs, AttemptKey.Int(j.Attempt))
	}
	return attrs
}
