package tracing

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// propagator carries W3C trace context (traceparent, tracestate) and W3C baggage.
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Propagator is the W3C trace context and baggage propagator used by Inject and Extract
// (and installed globally by Options.SetGlobal).
func Propagator() propagation.TextMapPropagator { return propagator }

// Inject writes the trace context and baggage of ctx into h, under the lowercase W3C names
// "traceparent", "tracestate" and "baggage", replacing a MIME-canonical copy ("Traceparent"). It
// returns h, or a new header when h is nil and there is something to write; when ctx holds
// no span context and no baggage it returns h untouched (nil stays nil), at no cost.
func Inject(ctx context.Context, h nats.Header) nats.Header {
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return h
	}
	if h == nil {
		h = nats.Header{}
	}
	propagator.Inject(ctx, headerCarrier(h))
	return h
}

// Extract returns ctx with the remote span context and baggage found in h, ready to be the
// parent of StartProcess. NATS headers are case-sensitive: the names are found in lower case
// (as Inject writes them) or MIME-canonical case ("Traceparent"). A malformed traceparent is
// ignored, as the W3C specification says. It works whether tracing is enabled or not, so a
// worker with tracing off still passes the scheduler's context on to its handlers. Without
// trace headers it costs four map lookups and returns ctx itself.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if !headerCarrier(h).hasContext() {
		return ctx
	}
	return propagator.Extract(ctx, headerCarrier(h))
}

// Traceparent is the W3C traceparent of the span in ctx ("00-<trace id>-<span id>-<flags>"),
// for the TRACEPARENT environment variable of an --exec handler; "" when ctx holds no valid,
// sampled span context.
func Traceparent(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsSampled() {
		return ""
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c["traceparent"]
}

// AppendEnv appends TRACEPARENT, TRACESTATE and BAGGAGE ("NAME=value", each only when it has
// a value) for the context in ctx to env and returns it: the environment-variable carrier of
// the OpenTelemetry specification, for --exec handlers. TRACEPARENT follows Traceparent.
func AppendEnv(ctx context.Context, env []string) []string {
	sc := trace.SpanContextFromContext(ctx)
	sampled := sc.IsValid() && sc.IsSampled()
	if !sampled && baggage.FromContext(ctx).Len() == 0 {
		return env
	}
	c := propagation.MapCarrier{}
	if sampled {
		propagation.TraceContext{}.Inject(ctx, c)
	}
	propagation.Baggage{}.Inject(ctx, c)
	for _, name := range [...]string{"traceparent", "tracestate", "baggage"} {
		if v := c[name]; v != "" {
			env = append(env, strings.ToUpper(name)+"="+v)
		}
	}
	return env
}

// headerCarrier adapts nats.Header (a case-sensitive map) to propagation.TextMapCarrier.
// The propagators ask for lowercase names; a header may also spell them the MIME-canonical
// way ("Traceparent", as older NATS clients and HTTP-minded publishers write them). Both
// spellings are looked up directly, without iterating over the header.
type headerCarrier nats.Header

var _ propagation.TextMapCarrier = headerCarrier(nil)

// canonical returns the MIME-canonical spelling of a propagation header name, and false for
// a name the propagators do not use (matched by a case-insensitive scan instead).
func canonical(key string) (string, bool) {
	switch key {
	case "traceparent":
		return "Traceparent", true
	case "tracestate":
		return "Tracestate", true
	case "baggage":
		return "Baggage", true
	}
	return "", false
}

// Get returns the first value of key in either accepted spelling.
func (h headerCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	if c, known := canonical(key); known {
		if v := h[c]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set replaces key, and its canonical spelling, with value.
func (h headerCarrier) Set(key, value string) {
	if c, known := canonical(key); known {
		delete(h, c)
	}
	h[key] = []string{value}
}

// Keys lists the header names.
func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// hasContext reports whether h carries a traceparent or baggage header in either accepted
// spelling: the cheap test that lets Extract skip the propagators for untraced messages.
func (h headerCarrier) hasContext() bool {
	return h.Get("traceparent") != "" || h.Get("baggage") != ""
}
