package jobsdb

import (
	"context"
	"fmt"
	"strings"
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
func (j *Jobs) DueForDispatch(ctx context.Context, f DueFilter) ([]Job, error) {
	c := &conds{}
	c.add("`status` = 'pending'")
	c.add("`scheduled_time` <= NOW(3)")
	publishedBefore := "`dispatched_time` < NOW(3) - INTERVAL ? MICROSECOND"
	need := []string{"`dispatched_time` IS NULL"}
	var args []any
	if f.RedispatchAfter > 0 {
		need = append(need, publishedBefore)
		args = append(args, micros(f.RedispatchAfter))
	}
	switch {
	case f.Busy == nil:
	case len(f.Busy) == 0:
		need = append(need, publishedBefore)
		args = append(args, micros(f.LostAfter))
	default:
		need = append(need, "(`priority` NOT IN "+inList(len(f.Busy))+" AND "+publishedBefore+")")
		for _, p := range f.Busy {
			args = append(args, p)
		}
		args = append(args, micros(f.LostAfter))
	}
	c.add("("+strings.Join(need, " OR ")+")", args...)
	q := j.selectJobs(false) + c.where() + j.orderJobs()
	if f.Limit > 0 {
		q += " LIMIT ?"
		c.args = append(c.args, f.Limit)
	}
	jobs, err := j.queryJobs(ctx, q, c.args, false)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: due for dispatch %s: %w", j.t.FullName(), err)
	}
	return jobs, nil
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
		in, args := j.inKeys("", keys[c[0]:c[1]], nil)
		q := "UPDATE " + j.table + " SET `dispatched_time` = NOW(3) WHERE " + in + " AND `status` = 'pending'"
		if _, err := j.exec(ctx, q, args...); err != nil {
			return fmt.Errorf("jobsdb: mark dispatched %s: %w", j.t.FullName(), err)
		}
	}
	return nil
}

// NextDue returns the earliest scheduled_time of pending jobs that are not yet due.
func (j *Jobs) NextDue(ctx context.Context) (t time.Time, ok bool, err error) {
	var next nullTime
	q := "SELECT MIN(`scheduled_time`) FROM " + j.table + " WHERE `status` = 'pending' AND `scheduled_time` > NOW(3)"
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	if err := j.db.QueryRowContext(ctx, q).Scan(&next); err != nil {
		return time.Time{}, false, fmt.Errorf("jobsdb: next due %s: %w", j.t.FullName(), j.noJobsTable(err))
	}
	return next.Time, next.Valid, nil
}
