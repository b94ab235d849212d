package jobsdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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
	// SkipRecover leaves expired leases alone (RecoverExpired is not run): for the small
	// restricted refreshes of events, which only add the keys they were told about.
	SkipRecover bool
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
//   - orphans: RecoverExpired(OrphanTimeout), unless SkipRecover.
//
// The add, re-pend and stale statements read at READ COMMITTED, so a refresh over a million
// keys takes no shared locks on the target and parents that would stall workers' inserts.
func (j *Jobs) Refresh(ctx context.Context, opts RefreshOptions) (RefreshResult, error) {
	if opts.Priority < PriorityMin || opts.Priority > PriorityMax {
		return RefreshResult{}, fmt.Errorf("jobsdb: refresh %s: priority %d is out of range %d..%d", j.t.FullName(), opts.Priority, PriorityMin, PriorityMax)
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
	delay := micros(opts.Delay)
	if res.Added, err = j.refreshStep(ctx, "add", j.stmt.add, "ks", opts, opts.Priority, delay); err != nil {
		return res, err
	}
	if j.opts.KeepCompleted {
		if res.RePended, err = j.refreshStep(ctx, "re-pend", j.stmt.rePend, "j", opts, opts.Priority, delay); err != nil {
			return res, err
		}
	}
	if opts.StaleTimeout > 0 {
		if res.Removed, err = j.refreshStep(ctx, "remove stale", j.stmt.stale, "j", opts, micros(opts.StaleTimeout)); err != nil {
			return res, err
		}
	}
	if opts.SkipRecover {
		return res, nil
	}
	if res.Orphaned, err = j.RecoverExpired(ctx, opts.OrphanTimeout); err != nil {
		return res, fmt.Errorf("jobsdb: refresh %s: %w", j.t.FullName(), err)
	}
	return res, nil
}

// refreshStep runs one statement of a refresh: stmt with the restrictions over the relation
// alias, after the arguments before them.
func (j *Jobs) refreshStep(ctx context.Context, step string, stmt restricted, alias string, opts RefreshOptions, before ...any) (int64, error) {
	c := &conds{}
	if err := j.t.addRestrictions(c, alias, opts.Restrictions); err != nil {
		return 0, fmt.Errorf("jobsdb: refresh %s: %w", j.t.FullName(), err)
	}
	n, err := j.execReadCommitted(ctx, stmt.sql(c), append(before, c.args...))
	if err != nil {
		return 0, fmt.Errorf("jobsdb: refresh %s: %s: %w", j.t.FullName(), step, j.noJobsTable(err))
	}
	return n, nil
}

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
			if isBinlogRefusesReadCommitted(err) && isolation != sql.LevelDefault {
				// The binary log is statement-based: run at the session's isolation level.
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
