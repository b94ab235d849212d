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
}

// DueForDispatch returns due pending jobs that need a publish: never published since they
// became pending (dispatched_time NULL), or published and presumed lost (see DueFilter).
// Ordered by priority, scheduled_time.
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
		want := 0
		if f.Limit > 0 {
			want = f.Limit - len(jobs)
			if want <= 0 {
				break
			}
		}
		c := dueConds(f, p)
		lim, args := limit(want, c.args)
		some, err := j.queryJobs(ctx, j.stmt.selectJobs, c.where()+j.stmt.orderDue+lim, args, false)
		if err != nil {
			return nil, fmt.Errorf("jobsdb: due for dispatch %s: %w", j.t.FullName(), err)
		}
		jobs = append(jobs, some...)
	}
	return jobs, nil
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

// MarkDispatched sets dispatched_time = now for the keys that are still pending.
//
// One UPDATE per 1,000 keys. A key that was reserved (or deleted) since it was published is
// left alone: the worker that got the message already took it.
func (j *Jobs) MarkDispatched(ctx context.Context, keys []Key) error {
	keys, err := j.t.checkKeys(keys)
	if err != nil {
		return fmt.Errorf("jobsdb: mark dispatched: %w", err)
	}
	for _, c := range chunks(len(keys), maxKeysPerStatement) {
		chunk := keys[c[0]:c[1]]
		if _, err := j.execAdopting(ctx, j.stmt.markDispatched.sql(len(chunk)), keyArgs(chunk)...); err != nil {
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
