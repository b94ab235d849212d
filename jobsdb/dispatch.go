package jobsdb

import (
	"context"
	"fmt"
	"time"
)

// DueForDispatch returns up to limit due pending jobs that need a publish: never published
// since they became pending (dispatched_time NULL), or published longer ago than
// redispatchAfter (their message may be lost). Ordered by priority, scheduled_time.
//
// redispatchAfter <= 0 never republishes; limit 0 is no limit.
func (j *Jobs) DueForDispatch(ctx context.Context, limit int, redispatchAfter time.Duration) ([]Job, error) {
	c := &conds{}
	c.add("`status` = 'pending'")
	c.add("`scheduled_time` <= NOW(3)")
	if redispatchAfter > 0 {
		c.add("(`dispatched_time` IS NULL OR `dispatched_time` < NOW(3) - INTERVAL ? MICROSECOND)", micros(redispatchAfter))
	} else {
		c.add("`dispatched_time` IS NULL")
	}
	q := j.selectJobs(false) + c.where() + j.orderJobs()
	if limit > 0 {
		q += " LIMIT ?"
		c.args = append(c.args, limit)
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
	if err := j.db.QueryRowContext(ctx, q).Scan(&next); err != nil {
		return time.Time{}, false, fmt.Errorf("jobsdb: next due %s: %w", j.t.FullName(), j.noJobsTable(err))
	}
	return next.Time, next.Valid, nil
}
