package jobsdb

import (
	"testing"
	"time"
)

// The statements that pick jobs to publish read ranges of the (status, priority,
// scheduled_time) index, whatever the size of the table: never a scan of the pending jobs.
// (The end-to-end benchmark prints the same plans on a table of 10,000,000 jobs.)
func TestDispatchStatementsUseTheIndex(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 0, Options{})
	f.refresh(t, RefreshOptions{})
	// 30,000 pending jobs: 10,000 due, 20,000 not yet, at two priorities.
	f.exec(t, "INSERT INTO {jobs} (`id`, `status`, `priority`, `scheduled_time`) "+
		"SELECT seq, 'pending', seq % 2, IF(seq % 3 = 0, NOW(3) - INTERVAL 1 MINUTE, NOW(3) + INTERVAL seq SECOND) FROM seq_1_to_30000",
		"ANALYZE TABLE {jobs}")
	filter := DueFilter{Limit: 1000, RedispatchAfter: time.Minute, Busy: []int{1}, LostAfter: time.Second}
	for _, p := range []int{0, 1} {
		c := f.jobs.stmt.dueConds(filter, p)
		lim, args := limit(filter.Limit, c.args)
		q := f.jobs.stmt.selectDue + c.where() + f.jobs.stmt.orderDue + lim
		var id, selectType, table, typ string
		var possible, key, keyLen, ref, rows, extra *string
		if err := f.sql.QueryRowContext(f.ctx, "EXPLAIN "+q, args...).Scan(&id, &selectType, &table, &typ, &possible, &key, &keyLen, &ref, &rows, &extra); err != nil {
			t.Fatal(err)
		}
		if key == nil || *key != "status" || typ != "range" {
			t.Errorf("priority %d: plan type %s key %v, want a range of the status index\n%s", p, typ, deref(key), q)
		}
	}
	for _, q := range []string{f.jobs.stmt.nextPriority, f.jobs.stmt.nextDueOf} {
		var extra *string
		var cols [10]any
		for i := range cols {
			cols[i] = new(any)
		}
		cols[9] = &extra
		if err := f.sql.QueryRowContext(f.ctx, "EXPLAIN "+q, 0).Scan(cols[:]...); err != nil {
			t.Fatal(err)
		}
		if extra == nil || *extra != "Select tables optimized away" {
			t.Errorf("plan of %s: %v, want one index seek", q, deref(extra))
		}
	}
	due, err := f.jobs.DueForDispatch(f.ctx, filter)
	if err != nil || len(due) != 1000 || due[0].Priority != 0 {
		t.Fatalf("due: %d jobs, first priority %v, %v", len(due), due, err)
	}
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

// Continuing after a job reads from there on: the index entries before it are not read.
func TestDueForDispatchAfterAJob(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 20000, Options{})
	f.refresh(t, RefreshOptions{}) // 20,000 jobs, all due at the same time
	f.exec(t, "ANALYZE TABLE {jobs}")
	first, err := f.jobs.DueForDispatch(f.ctx, DueFilter{Limit: 15000})
	if err != nil || len(first) != 15000 {
		t.Fatalf("due: %d jobs, %v", len(first), err)
	}
	last := first[len(first)-1]
	next, err := f.jobs.DueForDispatch(f.ctx, DueFilter{Limit: 10, After: &last})
	if err != nil || len(next) != 10 || next[0].Key[0] != int64(15001) {
		t.Fatalf("after job %v: %d jobs from %v, %v; want 10 from 15001", last.Key, len(next), next, err)
	}

	conn, err := f.sql.Conn(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := f.jobs.stmt.dueConds(DueFilter{After: &last}, last.Priority)
	lim, args := limit(10, c.args)
	q := f.jobs.stmt.selectDue + c.where() + f.jobs.stmt.orderDue + lim
	if _, err := conn.ExecContext(f.ctx, "FLUSH STATUS"); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.QueryContext(f.ctx, q, args...)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
	}
	rows.Close()
	var name string
	var read int
	if err := conn.QueryRowContext(f.ctx, "SHOW SESSION STATUS LIKE 'Handler_read_next'").Scan(&name, &read); err != nil {
		t.Fatal(err)
	}
	if read > 100 {
		t.Errorf("reading 10 jobs after the 15,000th read %d index entries: the statement scans instead of seeking\n%s", read, q)
	}
}
