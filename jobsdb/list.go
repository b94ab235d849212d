package jobsdb

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Job is one row of the jobs table.
type Job struct {
	Key            Key
	Status         Status
	Priority       int
	CreatedTime    time.Time
	ScheduledTime  time.Time
	ReservedTime   *time.Time
	CompletedTime  *time.Time
	Duration       *float64 // seconds
	ErrorMessage   string
	ErrorStack     string // decoded; filled by Get only
	User           string
	Host           string
	PID            int
	ConnectionID   int64
	Version        string
	Attempts       int
	LeaseExpires   *time.Time
	DispatchedTime *time.Time
}

// queryJobs runs the SELECT of jobs sel followed by rest (conditions, order, limit) and reads
// its rows; withStack says sel reads error_stack too.
func (j *Jobs) queryJobs(ctx context.Context, sel jobsSelect, rest string, args []any, withStack bool) ([]Job, error) {
	codecs, err := j.t.keyCodecs()
	if err != nil {
		return nil, err
	}
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	rows, err := j.db.QueryContext(ctx, sel.jetjobs+rest, args...)
	if isUnknownColumn(err, jetjobsColumnNames()) {
		// A table DataJoint declared, without jetjobs' columns: read it as it is.
		rows, err = j.db.QueryContext(ctx, sel.dataJoint+rest, args...)
	}
	if err != nil {
		return nil, j.noJobsTable(err)
	}
	defer rows.Close()
	var jobs []Job
	for rows.Next() {
		job := Job{Key: make(Key, len(codecs))}
		var status string
		var created, scheduled, reserved, completed, expires, dispatched nullTime
		var duration sql.NullFloat64
		var stack []byte
		dst := append(keyScanners(codecs, job.Key), &status, &job.Priority, &created, &scheduled, &reserved, &completed,
			&duration, &job.ErrorMessage, &job.User, &job.Host, &job.PID, &job.ConnectionID, &job.Version, &job.Attempts,
			&expires, &dispatched)
		if withStack {
			dst = append(dst, &stack)
		}
		if err := rows.Scan(dst...); err != nil {
			return nil, err
		}
		job.Status = Status(status)
		job.CreatedTime, job.ScheduledTime = created.Time, scheduled.Time
		job.ReservedTime, job.CompletedTime = reserved.ptr(), completed.ptr()
		job.LeaseExpires, job.DispatchedTime = expires.ptr(), dispatched.ptr()
		if duration.Valid {
			d := duration.Float64
			job.Duration = &d
		}
		if withStack && stack != nil {
			if job.ErrorStack, err = DecodeStack(stack); err != nil {
				return nil, fmt.Errorf("job %s: %w", j.t.KeyString(job.Key), err)
			}
		}
		jobs = append(jobs, job)
	}
	return jobs, rows.Err()
}

// List returns jobs matching f ordered by priority, then scheduled_time, then key.
func (j *Jobs) List(ctx context.Context, f Filter) ([]Job, error) {
	c, err := j.t.filterConds(f)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: list %s: %w", j.t.FullName(), err)
	}
	lim, args := limit(f.Limit, c.args)
	jobs, err := j.queryJobs(ctx, j.stmt.selectJobs, c.where()+j.stmt.orderJobs+lim, args, false)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: list %s: %w", j.t.FullName(), err)
	}
	return jobs, nil
}

// FetchPending returns due pending jobs in the order workers take them.
//
// That is DataJoint's candidate query: status pending, scheduled_time <= now, priority <=
// maxPriority when given, inside the restrictions, ordered by priority then scheduled_time
// (served by the (status, priority, scheduled_time) index); limit 0 is no limit.
func (j *Jobs) FetchPending(ctx context.Context, limit int, maxPriority *int, restrictions []Restriction) ([]Job, error) {
	return j.List(ctx, Filter{
		Statuses:     []Status{StatusPending},
		DueOnly:      true,
		MaxPriority:  maxPriority,
		Restrictions: restrictions,
		Limit:        limit,
	})
}

// Get reads one job with its decoded error stack; ErrNotFound when there is no row.
func (j *Jobs) Get(ctx context.Context, key Key) (Job, error) {
	k, err := j.t.CheckKey(key)
	if err != nil {
		return Job{}, fmt.Errorf("jobsdb: get: %w", err)
	}
	jobs, err := j.queryJobs(ctx, j.stmt.selectJob, "", k, true)
	if err != nil {
		return Job{}, fmt.Errorf("jobsdb: get %s %s: %w", j.t.FullName(), j.t.KeyString(k), err)
	}
	if len(jobs) == 0 {
		return Job{}, fmt.Errorf("jobsdb: get %s %s: %w", j.t.FullName(), j.t.KeyString(k), ErrNotFound)
	}
	return jobs[0], nil
}
