package jobsdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// RefreshOptions are DataJoint's refresh() arguments.
type RefreshOptions struct {
	Restrictions []Restriction
	Delay        time.Duration // scheduled_time = now + Delay (may be negative)
	// Priority of the added (and re-pended) jobs, -128..127. It is taken as given: callers
	// pass the configured jobs.default_priority (PriorityDefault) when the user gives none.
	Priority      int
	StaleTimeout  time.Duration // 0 disables stale removal
	OrphanTimeout time.Duration // 0 disables recovery of lease-less (DataJoint) reservations
}

// RefreshResult is DataJoint's refresh() dictionary.
type RefreshResult struct {
	Added    int64 `json:"added"`
	Removed  int64 `json:"removed"`
	Orphaned int64 `json:"orphaned"`
	RePended int64 `json:"re_pended"`
}

// Refresh declares the jobs table if needed and brings it in step with the key source.
//
// Each step is one set-based statement (DataJoint runs one per key):
//
//   - add: keys of the restricted key source that are neither in the target nor in the jobs
//     table (any status) become pending, due at now + Delay;
//   - re-pend (KeepCompleted only): success rows of keys in the restricted key source whose
//     target row is gone become pending again, as new jobs (this refresh's priority and delay,
//     created now, attempts 0);
//   - stale (StaleTimeout > 0): pending jobs created more than StaleTimeout ago whose key left
//     the unrestricted key source, or is already in the target, are deleted. Only jobs inside
//     the restrictions are candidates, and never reserved, error, ignore or success rows;
//   - orphans: RecoverExpired(OrphanTimeout).
//
// The add, re-pend and stale statements read at READ COMMITTED, so a refresh over a million
// keys takes no shared locks on the target and parents that would stall workers' inserts.
func (j *Jobs) Refresh(ctx context.Context, opts RefreshOptions) (RefreshResult, error) {
	if opts.Priority < -128 || opts.Priority > 127 {
		return RefreshResult{}, fmt.Errorf("jobsdb: refresh %s: priority %d is out of range -128..127", j.t.FullName(), opts.Priority)
	}
	// Check the restrictions before anything is declared or written.
	if err := j.t.addRestrictions(&conds{}, "", opts.Restrictions); err != nil {
		return RefreshResult{}, fmt.Errorf("jobsdb: refresh %s: %w", j.t.FullName(), err)
	}
	res, err := j.refresh(ctx, opts)
	if errors.Is(err, ErrNoJobsTable) {
		// Dropped by someone else since this handle declared it: declare again, once.
		res, err = j.refresh(ctx, opts)
	}
	return res, err
}

func (j *Jobs) refresh(ctx context.Context, opts RefreshOptions) (RefreshResult, error) {
	var res RefreshResult
	if err := j.ensureDeclared(ctx); err != nil {
		return res, err
	}
	var err error
	if res.Added, err = j.refreshStep(ctx, "add", j.addSQL, opts); err != nil {
		return res, err
	}
	if j.opts.KeepCompleted {
		if res.RePended, err = j.refreshStep(ctx, "re-pend", j.rePendSQL, opts); err != nil {
			return res, err
		}
	}
	if opts.StaleTimeout > 0 {
		if res.Removed, err = j.refreshStep(ctx, "remove stale", j.staleSQL, opts); err != nil {
			return res, err
		}
	}
	if res.Orphaned, err = j.RecoverExpired(ctx, opts.OrphanTimeout); err != nil {
		return res, fmt.Errorf("jobsdb: refresh %s: %w", j.t.FullName(), err)
	}
	return res, nil
}

func (j *Jobs) refreshStep(ctx context.Context, step string, build func(RefreshOptions) (string, []any, error), opts RefreshOptions) (int64, error) {
	q, args, err := build(opts)
	if err != nil {
		return 0, fmt.Errorf("jobsdb: refresh %s: %w", j.t.FullName(), err)
	}
	n, err := j.execReadCommitted(ctx, q, args)
	if err != nil {
		return 0, fmt.Errorf("jobsdb: refresh %s: %s: %w", j.t.FullName(), step, j.noJobsTable(err))
	}
	return n, nil
}

// errBinlogStatementFormat: READ COMMITTED cannot write INSERT … SELECT to a statement-based
// binary log; the statement then runs at the session's isolation level.
const errBinlogStatementFormat = 1665

// execReadCommitted runs one statement in its own READ COMMITTED transaction, retrying
// deadlocks, and returns the rows it affected.
func (j *Jobs) execReadCommitted(ctx context.Context, q string, args []any) (int64, error) {
	var n int64
	isolation := sql.LevelReadCommitted
	err := retryTransient(ctx, func() error {
		ctx, cancel := context.WithTimeout(ctx, j.opts.RefreshTimeout)
		defer cancel()
		tx, err := j.db.BeginTx(ctx, &sql.TxOptions{Isolation: isolation})
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			tx.Rollback()
			if mysqlErrorNumber(err) == errBinlogStatementFormat && isolation != sql.LevelDefault {
				isolation = sql.LevelDefault
				return &transientError{err}
			}
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	})
	if te, ok := err.(*transientError); ok {
		err = te.err
	}
	return n, err
}

// transientError makes retryTransient run a statement again for a reason of jobsdb's own.
type transientError struct{ err error }

func (e *transientError) Error() string { return e.err.Error() }

// addSQL: INSERT IGNORE … SELECT the restricted key source minus the target minus the jobs
// table. NULL keys (possible from a configured key source, or a parent's nullable unique key)
// are skipped rather than coerced by INSERT IGNORE.
func (j *Jobs) addSQL(opts RefreshOptions) (string, []any, error) {
	c := &conds{}
	for _, col := range j.t.KeyColumns {
		c.add("`ks`." + quoteIdent(col.Name) + " IS NOT NULL")
	}
	if err := j.t.addRestrictions(c, "ks", opts.Restrictions); err != nil {
		return "", nil, err
	}
	c.add("NOT EXISTS (SELECT 1 FROM " + j.target + " AS `t` WHERE " + j.keyEquals("t", "ks") + ")")
	c.add("NOT EXISTS (SELECT 1 FROM " + j.table + " AS `j` WHERE " + j.keyEquals("j", "ks") + ")")
	q := "INSERT IGNORE INTO " + j.table + " (" + j.t.keyList("") + ", `status`, `priority`, `scheduled_time`)" +
		" SELECT " + j.t.keyList("ks") + ", 'pending', ?, NOW(3) + INTERVAL ? MICROSECOND" +
		" FROM (" + j.t.KeySource + ") AS `ks`" + c.where()
	args := append([]any{opts.Priority, micros(opts.Delay)}, c.args...)
	return q, args, nil
}

// rePendSQL: success rows whose target row is gone and whose key is in the restricted key
// source become pending new jobs (DataJoint deletes and reinserts them; an UPDATE is atomic).
func (j *Jobs) rePendSQL(opts RefreshOptions) (string, []any, error) {
	c := &conds{}
	c.add("`j`.`status` = 'success'")
	if err := j.t.addRestrictions(c, "j", opts.Restrictions); err != nil {
		return "", nil, err
	}
	c.add("NOT EXISTS (SELECT 1 FROM " + j.target + " AS `t` WHERE " + j.keyEquals("t", "j") + ")")
	c.add("EXISTS (SELECT 1 FROM (" + j.t.KeySource + ") AS `ks` WHERE " + j.keyEquals("ks", "j") + ")")
	q := "UPDATE " + j.table + " AS `j` SET " + strings.Join([]string{
		"`j`.`status` = 'pending'",
		"`j`.`priority` = ?",
		"`j`.`created_time` = NOW(3)",
		"`j`.`scheduled_time` = NOW(3) + INTERVAL ? MICROSECOND",
		"`j`.`reserved_time` = NULL",
		"`j`.`completed_time` = NULL",
		"`j`.`duration` = NULL",
		"`j`.`error_message` = ''",
		"`j`.`error_stack` = NULL",
		"`j`.`attempts` = 0",
		"`j`.`lease_token` = ''",
		"`j`.`lease_expires` = NULL",
		"`j`.`dispatched_time` = NULL",
	}, ", ") + c.where()
	args := append([]any{opts.Priority, micros(opts.Delay)}, c.args...)
	return q, args, nil
}

// staleSQL: pending jobs inside the restrictions, created more than StaleTimeout ago, whose key
// is no longer in the unrestricted key source or is already in the target.
func (j *Jobs) staleSQL(opts RefreshOptions) (string, []any, error) {
	c := &conds{}
	c.add("`j`.`status` = 'pending'")
	c.add("`j`.`created_time` < NOW(3) - INTERVAL ? MICROSECOND", micros(opts.StaleTimeout))
	if err := j.t.addRestrictions(c, "j", opts.Restrictions); err != nil {
		return "", nil, err
	}
	c.add("(NOT EXISTS (SELECT 1 FROM (" + j.t.KeySource + ") AS `ks` WHERE " + j.keyEquals("ks", "j") + ")" +
		" OR EXISTS (SELECT 1 FROM " + j.target + " AS `t` WHERE " + j.keyEquals("t", "j") + "))")
	// A single-table DELETE over the stale keys, materialized in a derived table: MariaDB
	// rejects a multi-table DELETE through an alias when the connection has no default
	// database (error 1046), and MySQL forbids reading the target table in a plain subquery.
	stale := "SELECT " + j.t.keyList("j") + " FROM " + j.table + " AS `j`" + c.where()
	return "DELETE FROM " + j.table + " WHERE " + j.keyTuple("") + " IN (SELECT * FROM (" + stale + ") AS `stale`)", c.args, nil
}
