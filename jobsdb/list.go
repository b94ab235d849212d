package jobsdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
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

// jobColumns are the columns a Job is read from, after the key columns.
const jobColumns = "`status`, `priority`, `created_time`, `scheduled_time`, `reserved_time`, `completed_time`, " +
	"`duration`, `error_message`, `user`, `host`, `pid`, `connection_id`, `version`, `attempts`, " +
	"`lease_expires`, `dispatched_time`"

// dataJointJobColumns reads a jobs table that DataJoint declared and jetjobs has not adopted
// yet: its jetjobs columns read as their defaults, so reading never needs to alter the table.
const dataJointJobColumns = "`status`, `priority`, `created_time`, `scheduled_time`, `reserved_time`, `completed_time`, " +
	"`duration`, `error_message`, `user`, `host`, `pid`, `connection_id`, `version`, 0, " +
	"NULL, NULL"

// errUnknownColumn is MySQL's error for a column the table does not have.
const errUnknownColumn = 1054

// selectJobs is "SELECT <key>, <job columns>[, error_stack] FROM <jobs>".
func (j *Jobs) selectJobs(withStack bool) string {
	q := "SELECT " + j.t.keyList("") + ", " + jobColumns
	if withStack {
		q += ", `error_stack`"
	}
	return q + " FROM " + j.table
}

// orderJobs is the order workers take jobs in, then the key for a stable listing.
func (j *Jobs) orderJobs() string {
	return " ORDER BY `priority`, `scheduled_time`, " + j.t.keyList("")
}

// queryJobs runs a selectJobs query and reads its rows.
func (j *Jobs) queryJobs(ctx context.Context, q string, args []any, withStack bool) ([]Job, error) {
	codecs, err := j.t.keyCodecs()
	if err != nil {
		return nil, err
	}
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	rows, err := j.db.QueryContext(ctx, q, args...)
	if mysqlErrorNumber(err) == errUnknownColumn && strings.Contains(q, jobColumns) {
		// A table DataJoint declared, without jetjobs' columns: read it as it is.
		rows, err = j.db.QueryContext(ctx, strings.Replace(q, jobColumns, dataJointJobColumns, 1), args...)
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
	c, err := j.filterConds(f, "")
	if err != nil {
		return nil, fmt.Errorf("jobsdb: list %s: %w", j.t.FullName(), err)
	}
	q := j.selectJobs(false) + c.where() + j.orderJobs()
	if f.Limit > 0 {
		q += " LIMIT ?"
		c.args = append(c.args, f.Limit)
	}
	jobs, err := j.queryJobs(ctx, q, c.args, false)
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
	jobs, err := j.queryJobs(ctx, j.selectJobs(true)+" WHERE "+j.keyEquals("", ""), k, true)
	if err != nil {
		return Job{}, fmt.Errorf("jobsdb: get %s %s: %w", j.t.FullName(), j.t.KeyString(k), err)
	}
	if len(jobs) == 0 {
		return Job{}, fmt.Errorf("jobsdb: get %s %s: %w", j.t.FullName(), j.t.KeyString(k), ErrNotFound)
	}
	return jobs[0], nil
}
