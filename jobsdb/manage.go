package jobsdb

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// recoverExpiredSQL returns expired reservations to pending (DESIGN.md: reserved → pending
// (orphan)): leases past lease_expires, and reservations without a lease (made by DataJoint)
// reserved longer ago than the orphan timeout. One UPDATE through the status index; priority,
// attempts, created_time and the reservation history stay.
const recoverExpiredSQL = "UPDATE %s SET `status` = 'pending', `lease_token` = '', `lease_expires` = NULL, `dispatched_time` = NULL" +
	" WHERE `status` = 'reserved' AND (`lease_expires` < NOW(3)" +
	" OR (`lease_expires` IS NULL AND ? > 0 AND `reserved_time` < NOW(3) - INTERVAL ? MICROSECOND))"

// RecoverExpired returns expired reservations to pending by UPDATE (priority, attempts and
// history kept): leases past lease_expires, and lease-less (DataJoint) reservations older
// than orphanTimeout when it is > 0.
func (j *Jobs) RecoverExpired(ctx context.Context, orphanTimeout time.Duration) (int64, error) {
	us := micros(orphanTimeout)
	n, err := j.exec(ctx, fmt.Sprintf(recoverExpiredSQL, j.table), us, us)
	if err != nil {
		return 0, fmt.Errorf("jobsdb: recover expired %s: %w", j.t.FullName(), err)
	}
	return n, nil
}

// exec runs one autocommitted statement, retrying deadlocks, and returns the rows affected.
func (j *Jobs) exec(ctx context.Context, q string, args ...any) (int64, error) {
	var n int64
	err := retryTransient(ctx, func() error {
		ctx, cancel := j.bounded(ctx)
		defer cancel()
		res, err := j.db.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, j.noJobsTable(err)
}

// Ignore marks key as ignore, inserting a row if there is none (DataJoint semantics).
//
// One INSERT … ON DUPLICATE KEY UPDATE: a new row gets Options.DefaultPriority; an existing one
// (any status) becomes ignore, and a reservation's lease is cleared, so the running worker's
// completion changes nothing (DataJoint would let it overwrite the ignore). The jobs table is
// declared when missing.
func (j *Jobs) Ignore(ctx context.Context, key Key) error {
	k, err := j.t.CheckKey(key)
	if err != nil {
		return fmt.Errorf("jobsdb: ignore: %w", err)
	}
	if err := j.ensureDeclared(ctx); err != nil {
		return err
	}
	q := "INSERT INTO " + j.table + " (" + j.t.keyList("") + ", `status`, `priority`) VALUES (" +
		strings.TrimSuffix(strings.Repeat("?, ", len(k)), ", ") + ", 'ignore', ?)" +
		" ON DUPLICATE KEY UPDATE `status` = 'ignore', `lease_token` = '', `lease_expires` = NULL"
	if _, err := j.exec(ctx, q, append(append([]any{}, k...), j.opts.DefaultPriority)...); err != nil {
		return fmt.Errorf("jobsdb: ignore %s %s: %w", j.t.FullName(), j.t.KeyString(k), err)
	}
	return nil
}

// Delete deletes the jobs matching f and returns how many.
//
// Any status may be deleted, as DataJoint's jobs.delete(): a reservation deleted under a
// running worker fences it (its completion then changes nothing). A zero Filter deletes every
// job. f.Limit is ignored.
func (j *Jobs) Delete(ctx context.Context, f Filter) (int64, error) {
	c, err := j.filterConds(f, "")
	if err != nil {
		return 0, fmt.Errorf("jobsdb: delete %s: %w", j.t.FullName(), err)
	}
	n, err := j.exec(ctx, "DELETE FROM "+j.table+c.where(), c.args...)
	if err != nil {
		return 0, fmt.Errorf("jobsdb: delete %s: %w", j.t.FullName(), err)
	}
	return n, nil
}

// retryErrorsSet makes an error job a pending job due now, as DataJoint's "delete the error,
// refresh" would make a new one: message, stack and attempts are cleared, the reservation
// history (user, host, reserved_time…) stays.
var retryErrorsSet = strings.Join([]string{
	"`status` = 'pending'",
	"`scheduled_time` = NOW(3)",
	"`completed_time` = NULL",
	"`duration` = NULL",
	"`error_message` = ''",
	"`error_stack` = NULL",
	"`attempts` = 0",
	"`lease_token` = ''",
	"`lease_expires` = NULL",
	"`dispatched_time` = NULL",
}, ", ")

// RetryErrors moves error jobs matching f back to pending, due now.
//
// Only error rows move, whatever f.Statuses says besides. Their error_message and error_stack
// are cleared and attempts reset: a retried job starts afresh.
func (j *Jobs) RetryErrors(ctx context.Context, f Filter) (int64, error) {
	c, err := j.filterConds(f, "")
	if err != nil {
		return 0, fmt.Errorf("jobsdb: retry errors %s: %w", j.t.FullName(), err)
	}
	c.add("`status` = 'error'")
	n, err := j.exec(ctx, "UPDATE "+j.table+" SET "+retryErrorsSet+c.where(), c.args...)
	if err != nil {
		return 0, fmt.Errorf("jobsdb: retry errors %s: %w", j.t.FullName(), err)
	}
	return n, nil
}

// Drop drops the jobs table. Dropping a table that does not exist is not an error.
func (j *Jobs) Drop(ctx context.Context) error {
	j.declared.Store(false)
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	if _, err := j.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+j.table); err != nil {
		return fmt.Errorf("jobsdb: drop %s: %w", j.t.JobsFullName(), err)
	}
	return nil
}

// Progress is DataJoint's progress() dictionary.
type Progress struct {
	Pending  int64 `json:"pending"`
	Reserved int64 `json:"reserved"`
	Success  int64 `json:"success"`
	Error    int64 `json:"error"`
	Ignore   int64 `json:"ignore"`
	Total    int64 `json:"total"`
}

// Progress counts jobs per status (all zero when the jobs table does not exist).
func (j *Jobs) Progress(ctx context.Context) (Progress, error) {
	var p Progress
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	rows, err := j.db.QueryContext(ctx, "SELECT `status`, COUNT(*) FROM "+j.table+" GROUP BY `status`")
	if mysqlErrorNumber(err) == errNoSuchTable {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("jobsdb: progress %s: %w", j.t.FullName(), err)
	}
	defer rows.Close()
	for rows.Next() {
		var status string
		var n int64
		if err := rows.Scan(&status, &n); err != nil {
			return p, fmt.Errorf("jobsdb: progress %s: %w", j.t.FullName(), err)
		}
		switch Status(status) {
		case StatusPending:
			p.Pending = n
		case StatusReserved:
			p.Reserved = n
		case StatusSuccess:
			p.Success = n
		case StatusError:
			p.Error = n
		case StatusIgnore:
			p.Ignore = n
		}
		p.Total += n
	}
	if err := rows.Err(); err != nil {
		return p, fmt.Errorf("jobsdb: progress %s: %w", j.t.FullName(), err)
	}
	return p, nil
}
