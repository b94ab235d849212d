package tracing

import (
	"context"
	"testing"
)

func TestSetupNoneStartsNothing(t *testing.T) {
	t.Parallel()
	tel, err := Setup(context.Background(), Options{Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	if tel.tracer != nil || tel.metrics != nil || tel.handler != nil || len(tel.closers) != 0 {
		t.Errorf("disabled Setup built something: tracer %v metrics %v handler %v closers %d",
			tel.tracer != nil, tel.metrics != nil, tel.handler != nil, len(tel.closers))
	}
}

func TestTableNames(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ table, namespace, collection, jobs string }{
		{"lab.session", "lab", "~~session", "lab.~~session"},
		{"lab.__filtered", "lab", "~~filtered", "lab.~~filtered"},
		{"_imported", "", "~~imported", "~~imported"},
	} {
		ti := newTableCache().get(c.table)
		if ti.namespace != c.namespace || ti.collection != c.collection || ti.jobsTable != c.jobs {
			t.Errorf("%s: %q %q %q, want %q %q %q (DataJoint's jobs table is ~~ and the name without leading underscores)",
				c.table, ti.namespace, ti.collection, ti.jobsTable, c.namespace, c.collection, c.jobs)
		}
	}
}

func TestTableCacheReturnsOneInfoPerTable(t *testing.T) {
	t.Parallel()
	c := newTableCache()
	a, b := c.get("s.a"), c.get("s.b")
	if c.get("s.a") != a || c.get("s.b") != b || a == b {
		t.Error("the cache does not keep one info per table")
	}
}
