package jobsdb

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// DueFilter says which due pending jobs need a publish (DueForDispatch).
type DueFilter struct {
	// Limit is the most jobs returned; 0 is no limit.
	Limit int
	// RedispatchAfter: a job published longer ago than this is published again, in case its
	// message was lost. 0 never republishes on age alone.
	RedispatchAfter time.Duration
	// Busy, when not nil, lists the priorities whose messages the stream still holds (waiting
	// or delivered and unacknowledged). A job of any other priority that was published more
	// than LostAfter ago has lost its message (the stream was deleted, purged or emptied by a
	// restart, or the message was acked after the job went back to pending), and is published
	// again. Nil: nothing is known of the stream; only RedispatchAfter applies.
	Busy      []int
	LostAfter time.Duration
	// After, when not nil, returns only jobs after this one in dispatch order (priority,
	// scheduled_time, key): a publisher that went through the due jobs up to it continues
	// from there without reading them again. Jobs that became due before it meanwhile (a
	// released or recovered job keeps its scheduled_time) are found by a pass without After.
	After *Job
}

// DueForDispatch returns due pending jobs that need a publish: never published since they
// became pending (dispatched_time NULL), or published and presumed lost (see DueFilter).
// Ordered by priority, scheduled_time. Only what a publish needs is read: each Job has its
// Key, Priority, ScheduledTime and Status (pending), and nothing else.
//
// It reads one priority at a time, each a range of the (status, priority, scheduled_time)
// index, so that jobs not yet due are never read: with all priorities at once, MariaDB would
// read every not-yet-due job of an urgent priority before the due jobs of the next.
func (j *Jobs) DueForDispatch(ctx context.Context, f DueFilter) ([]Job, error) {
	priorities, err := j.pendingPriorities(ctx)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: due for dispatch %s: %w", j.t.FullName(), err)
	}
	var jobs []Job
	for _, p := range priorities {
		if f.After != nil && p < f.After.Priority {
			continue
		}
		want := 0
		if f.Limit > 0 {
			want = f.Limit - len(jobs)
			if want <= 0 {
				break
			}
		}
		c := j.stmt.dueConds(f, p)
		lim, args := limit(want, c.args)
		if jobs, err = j.queryDue(ctx, jobs, c.where()+j.stmt.orderDue+lim, args); err != nil {
			return nil, fmt.Errorf("jobsdb: due for dispatch %s: %w", j.t.FullName(), err)
		}
	}
	return jobs, nil
}

// queryDue appends the due jobs the statement's rest (WHERE, ORDER BY, LIMIT) selects.
func (j *Jobs) queryDue(ctx context.Context, jobs []Job, rest string, args []any) ([]Job, error) {
	codecs, err := j.t.keyCodecs()
	if err != nil {
		return nil, err
	}
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	rows, err := j.db.QueryContext(ctx, j.stmt.selectDue+rest, args...)
	if err != nil {
		return nil, j.noJobsTable(err)
	}
	defer rows.Close()
	for rows.Next() {
		job := Job{Key: make(Key, len(codecs)), Status: StatusPending}
		var scheduled nullTime
		if err := rows.Scan(append(keyScanners(codecs, job.Key), &job.Priority, &scheduled)...); err != nil {
			return nil, err
		}
		job.ScheduledTime = scheduled.Time
		jobs = append(jobs, job)
	}
	return jobs, rows.Err()
}

// pendingPriorities lists the priorities that have pending jobs, most urgent first: one index
// seek per priority.
func (j *Jobs) pendingPriorities(ctx context.Context) ([]int, error) {
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	var priorities []int
	for after := PriorityMin - 1; ; {
		var p sql.NullInt64
		if err := j.db.QueryRowContext(ctx, j.stmt.nextPriority, after).Scan(&p); err != nil {
			return nil, j.noJobsTable(err)
		}
		if !p.Valid {
			return priorities, nil
		}
		priorities = append(priorities, int(p.Int64))
		after = int(p.Int64)
	}
}

// MarkDispatched records that the keys were published: it sets dispatched_time to the time
// they were read for publishing, readAgo ago (measured by the caller from before its
// DueForDispatch), for the keys still pending and not reserved since then.
//
// One UPDATE per 1,000 keys. A key reserved since it was read is left alone: the worker that
// got the message took it, and if it gave the job back (a release, a retry, a recovery), the
// message is gone and the job needs a new one, which its dispatched_time (NULL) asks for. So
// a publisher may mark its jobs late, when most of them are reserved already and cost the
// UPDATE nothing but a lookup.
func (j *Jobs) MarkDispatched(ctx context.Context, keys []Key, readAgo time.Duration) error {
	keys, err := j.t.checkKeys(keys)
	if err != nil {
		return fmt.Errorf("jobsdb: mark dispatched: %w", err)
	}
	ago := micros(max(readAgo, 0))
	for _, c := range chunks(len(keys), maxKeysPerStatement) {
		chunk := keys[c[0]:c[1]]
		if _, err := j.execAdopting(ctx, j.stmt.markDispatched.sql(len(chunk)), append(keyArgs(chunk, ago), ago)...); err != nil {
			return fmt.Errorf("jobsdb: mark dispatched %s: %w", j.t.FullName(), err)
		}
	}
	return nil
}

// NextDue returns the earliest scheduled_time of pending jobs that are not yet due: one index
// seek per priority with pending jobs.
func (j *Jobs) NextDue(ctx context.Context) (t time.Time, ok bool, err error) {
	priorities, err := j.pendingPriorities(ctx)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("jobsdb: next due %s: %w", j.t.FullName(), err)
	}
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	var earliest nullTime
	for _, p := range priorities {
		var next nullTime
		if err := j.db.QueryRowContext(ctx, j.stmt.nextDueOf, p).Scan(&next); err != nil {
			return time.Time{}, false, fmt.Errorf("jobsdb: next due %s: %w", j.t.FullName(), j.noJobsTable(err))
		}
		if next.Valid && (!earliest.Valid || next.Time.Before(earliest.Time)) {
			earliest = next
		}
	}
	return earliest.Time, earliest.Valid, nil
}

// ExplainDueForDispatch returns MySQL's plan of the statements DueForDispatch and NextDue run
// (for the most urgent pending priority), one line each: "type key rows extra". Benchmarks
// print it to show the statements stay on the index however large the table.
func (j *Jobs) ExplainDueForDispatch(ctx context.Context) ([]string, error) {
	priorities, err := j.pendingPriorities(ctx)
	if err != nil || len(priorities) == 0 {
		return nil, err
	}
	p := priorities[0]
	c := j.stmt.dueConds(DueFilter{Limit: maxKeysPerStatement, RedispatchAfter: time.Minute, Busy: []int{}}, p)
	lim, args := limit(maxKeysPerStatement, c.args)
	statements := []struct {
		name string
		sql  string
		args []any
	}{
		{"due", j.stmt.selectDue + c.where() + j.stmt.orderDue + lim, args},
		{"next priority", j.stmt.nextPriority, []any{PriorityMin - 1}},
		{"next due", j.stmt.nextDueOf, []any{p}},
	}
	var lines []string
	for _, s := range statements {
		rows, err := j.db.QueryContext(ctx, "EXPLAIN "+s.sql, s.args...)
		if err != nil {
			return nil, fmt.Errorf("jobsdb: explain %s: %w", s.name, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return nil, err
			}
			field := func(name string) string {
				for i, c := range cols {
					if c == name && vals[i].Valid {
						return vals[i].String
					}
				}
				return "-"
			}
			lines = append(lines, fmt.Sprintf("%s: type=%s key=%s rows=%s extra=%s", s.name, field("type"), field("key"), field("rows"), field("Extra")))
		}
		rows.Close()
	}
	return lines, nil
}
