package tracing

import (
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// tableInfo is what spans and measurements need about one target table, computed once.
type tableInfo struct {
	name       string // "schema.table"
	namespace  string // db.namespace: the schema
	collection string // db.collection.name: the jobs table, "~~table"
	jobsTable  string // "schema.~~table", the target of DB span names

	set     attribute.Set // {jetjobs.table}
	addOpts []metric.AddOption
	recOpts []metric.RecordOption
	obsOpts []metric.ObserveOption
}

func newTableInfo(name string) *tableInfo {
	ti := &tableInfo{name: name}
	schema, table, ok := strings.Cut(name, ".")
	if !ok {
		schema, table = "", name
	}
	ti.namespace = schema
	// The jobs table of DataJoint: "~~" and the table name without leading underscores.
	ti.collection = "~~" + strings.TrimLeft(table, "_")
	ti.jobsTable = ti.collection
	if schema != "" {
		ti.jobsTable = schema + "." + ti.collection
	}
	ti.set = attribute.NewSet(TableKey.String(name))
	opt := metric.WithAttributeSet(ti.set)
	ti.addOpts = []metric.AddOption{opt}
	ti.recOpts = []metric.RecordOption{opt}
	ti.obsOpts = []metric.ObserveOption{opt}
	return ti
}

// dbAttrs appends the database attributes of the table to attrs.
func (ti *tableInfo) dbAttrs(attrs []attribute.KeyValue) []attribute.KeyValue {
	attrs = append(attrs, semconv.DBSystemNameMySQL)
	if ti.namespace != "" {
		attrs = append(attrs, semconv.DBNamespace(ti.namespace))
	}
	return append(attrs, semconv.DBCollectionName(ti.collection))
}

// tableCache maps table names to their tableInfo. Reads are a lock-free map lookup with no
// allocation; a new table copies the map (tables are few and configured up front).
type tableCache struct {
	m  atomic.Pointer[map[string]*tableInfo]
	mu sync.Mutex // serialises writers
}

func newTableCache() *tableCache {
	c := &tableCache{}
	m := map[string]*tableInfo{}
	c.m.Store(&m)
	return c
}

func (c *tableCache) get(name string) *tableInfo {
	if ti, ok := (*c.m.Load())[name]; ok {
		return ti
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.m.Load()
	if ti, ok := old[name]; ok {
		return ti
	}
	ti := newTableInfo(name)
	m := make(map[string]*tableInfo, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[name] = ti
	c.m.Store(&m)
	return ti
}
