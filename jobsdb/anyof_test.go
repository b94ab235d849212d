package jobsdb

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// A refresh restricted to a list of keys (AnyOf, as the scheduler's refreshes for events run
// it) adds exactly the listed keys that are new, partial keys standing for every key they
// match, and reads only their range of the parents' primary keys.
func TestRefreshAnyOf(t *testing.T) {
	t.Parallel()
	f := setupPipeline(t, 50, 20, 2, Options{})
	f.exec(t, "ANALYZE TABLE subject, session, paramset")

	keys := []map[string]any{
		{"subject_id": 3, "session_id": 4, "param_id": 1}, // one job
		{"subject_id": 7, "session_id": 2},                // both params
		{"subject_id": "9", "session_id": "1"},            // strings in the column's text form
		{"subject_id": 3, "session_id": 4, "param_id": 1}, // again
		{"subject_id": 999},                               // not in the key source
	}
	res := f.refresh(t, RefreshOptions{Restrictions: []Restriction{{AnyOf: keys}}, SkipRecover: true})
	if res.Added != 5 {
		t.Errorf("added %d jobs, want 5", res.Added)
	}
	jobs, err := f.jobs.List(f.ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, j := range jobs {
		got = append(got, f.target.KeyString(j.Key))
	}
	slices.Sort(got)
	want := []string{
		`{"subject_id":3,"session_id":4,"param_id":1}`,
		`{"subject_id":7,"session_id":2,"param_id":1}`,
		`{"subject_id":7,"session_id":2,"param_id":2}`,
		`{"subject_id":9,"session_id":1,"param_id":1}`,
		`{"subject_id":9,"session_id":1,"param_id":2}`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("jobs %v, want %v", got, want)
	}
	// Added again: nothing new.
	if res := f.refresh(t, RefreshOptions{Restrictions: []Restriction{{AnyOf: keys}}}); res.Added != 0 {
		t.Errorf("the same keys again added %d", res.Added)
	}
	// An empty list matches nothing (not everything).
	if res := f.refresh(t, RefreshOptions{Restrictions: []Restriction{{AnyOf: []map[string]any{}}}}); res.Added != 0 {
		t.Errorf("an empty list added %d jobs", res.Added)
	}

	// The plan: a range of session's primary key, not a scan of the key source.
	c := &conds{}
	if err := f.target.addRestrictions(c, "ks", []Restriction{{AnyOf: keys}}); err != nil {
		t.Fatal(err)
	}
	q := "SELECT `ks`.`subject_id` FROM (" + f.target.KeySource + ") AS `ks` WHERE TRUE" + c.and()
	rows, err := f.sql.QueryContext(f.ctx, "EXPLAIN "+q, c.args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	found := false
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := map[string]string{}
		for i, c := range cols {
			if b, ok := vals[i].([]byte); ok {
				row[c] = string(b)
			}
		}
		if row["table"] == "p1" {
			found = true
			if row["type"] != "range" {
				t.Errorf("session is read by %s, want a range of its primary key\n%s", row["type"], q)
			}
		}
	}
	if !found {
		t.Errorf("no plan row reads session (p1)\n%s", q)
	}

	bad := []struct {
		keys []map[string]any
		says string
	}{
		{[]map[string]any{{}}, "names no column"},
		{[]map[string]any{{"result": 1}}, "not a key column"},
		{[]map[string]any{{"subject_id": "1 OR 1=1"}}, "subject_id"},
		{[]map[string]any{{"subject_id": 1}, {"subject_id": nil}}, "null"},
	}
	for _, b := range bad {
		_, err := f.jobs.Refresh(f.ctx, RefreshOptions{Priority: PriorityDefault, Restrictions: []Restriction{{AnyOf: b.keys}}})
		if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), b.says) {
			t.Errorf("keys %v: %v, want ErrBadKey saying %q", b.keys, err, b.says)
		}
	}
	if n := len(jobs); n != 5 {
		t.Fatalf("jobs changed")
	}
}

// Inspect reads the primary parents, with the columns they give the target.
func TestInspectParents(t *testing.T) {
	t.Parallel()
	f := setupPipeline(t, 1, 1, 1, Options{})
	want := []Parent{
		{Schema: f.db.Name, Table: "session", Columns: []string{"subject_id", "session_id"}, Refs: []string{"subject_id", "session_id"}},
		{Schema: f.db.Name, Table: "paramset", Columns: []string{"param_id"}, Refs: []string{"id"}},
	}
	got := f.target.Parents
	if len(got) != len(want) {
		t.Fatalf("parents %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].FullName() != want[i].FullName() || !slices.Equal(got[i].Columns, want[i].Columns) || !slices.Equal(got[i].Refs, want[i].Refs) {
			t.Errorf("parent %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	v, err := f.target.KeyValues(map[string]any{"subject_id": "3", "param_id": 2})
	if err != nil || v["subject_id"] != int64(3) || v["param_id"] != int64(2) || len(v) != 2 {
		t.Errorf("KeyValues: %v, %v", v, err)
	}
}
