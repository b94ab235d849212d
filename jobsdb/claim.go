package jobsdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
)

// Claim reserves up to n due pending jobs, in the order workers take them (priority, then
// scheduled_time), and returns their leases: the way a worker takes work from the jobs table
// alone, without a message naming the keys (dispatch=mysql). maxPriority, when not nil, takes
// only jobs with priority <= *maxPriority. n is capped at 1,000 (one statement's keys).
//
// One READ COMMITTED transaction: per priority that has pending jobs, most urgent first, a
//
//	SELECT key … WHERE status='pending' AND priority=? AND scheduled_time<=NOW(3)
//	ORDER BY scheduled_time, key LIMIT ? FOR UPDATE SKIP LOCKED
//
// (a range of the (status, priority, scheduled_time) index, as DueForDispatch reads it: jobs
// not yet due are never read), until n keys are locked; then the guarded reservation Reserve
// runs (the same UPDATE, by key, status pending and due, with one fresh lease token), and the
// leases are read back by key and token. Workers claiming at once skip each other's locked
// rows instead of waiting for them, so they get disjoint batches; at READ COMMITTED the
// locking reads take no gap locks, so a refresh inserting new jobs never waits for a claim.
// Deadlocks and lock wait timeouts (1213, 1205) roll the transaction back and run it again.
// A commit whose outcome is unknown (the connection broke) is settled by reading the keys
// back by the token; when that fails too the error wraps ErrAmbiguous, and the jobs, if they
// were reserved, return to pending when their lease expires.
//
// A jobs table declared by DataJoint is adopted first (its jetjobs columns added), as by
// Reserve; DataJoint's own workers can keep reserving jobs from it at the same time: both
// reserve with a guarded UPDATE of a pending row.
func (j *Jobs) Claim(ctx context.Context, n int, maxPriority *int) ([]Lease, error) {
	if n <= 0 {
		return nil, nil
	}
	n = min(n, maxKeysPerStatement)
	var leases []Lease
	err := j.adopting(ctx, func() (err error) {
		leases, err = j.claim(ctx, n, maxPriority)
		return err
	})
	if mysqlErrorNumber(err) == errParse {
		// The one statement of jobsdb's that older servers do not parse.
		err = fmt.Errorf("%w; claims need SELECT … FOR UPDATE SKIP LOCKED: MariaDB 10.6 or MySQL 8.0 and later (or dispatch nats)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("jobsdb: claim %s: %w", j.t.FullName(), j.noJobsTable(err))
	}
	return leases, nil
}

// claimIsolation is the isolation level of claims: READ COMMITTED, until a server with a
// statement-based binary log refused it once (it cannot log the reservation at that level);
// then the session's default.
type claimIsolation struct{ fallback atomic.Bool }

func (c *claimIsolation) level() sql.IsolationLevel {
	if c.fallback.Load() {
		return sql.LevelDefault
	}
	return sql.LevelReadCommitted
}

func (j *Jobs) claim(ctx context.Context, n int, maxPriority *int) ([]Lease, error) {
	token := newToken()
	var keys []Key
	var leases []Lease
	err := retryTransient(ctx, func() error {
		var err error
		keys, leases, err = j.claimTx(ctx, n, maxPriority, token)
		if isBinlogRefusesReadCommitted(err) && !j.claimIsolation.fallback.Load() {
			j.claimIsolation.fallback.Store(true)
			return &transientError{err}
		}
		return err
	})
	if te, ok := err.(*transientError); ok {
		err = te.err
	}
	if err == nil || !errors.Is(err, ErrAmbiguous) || len(keys) == 0 {
		return leases, err
	}
	// The commit may have landed: the rows reserved with the token are ours.
	ambiguous := true
	rerr := retrySettling(ctx, &ambiguous, func() error {
		ctx, cancel := j.bounded(ctx)
		defer cancel()
		var err error
		leases, err = j.readLeases(ctx, j.db, keys, token)
		return err
	})
	if rerr != nil {
		return nil, err
	}
	return leases, nil
}

// claimTx is one attempt of Claim's transaction. It returns the keys it locked (for reading
// back after an ambiguous commit) and the leases won.
func (j *Jobs) claimTx(ctx context.Context, n int, maxPriority *int, token string) ([]Key, []Lease, error) {
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	tx, err := j.db.BeginTx(ctx, &sql.TxOptions{Isolation: j.claimIsolation.level()})
	if err != nil {
		return nil, nil, err
	}
	defer tx.Rollback()
	keys, err := j.lockDue(ctx, tx, n, maxPriority)
	if err != nil || len(keys) == 0 {
		return nil, nil, err
	}
	id := j.opts.Identity
	args := keyArgs(keys, token, micros(j.opts.LeaseDuration), id.User, id.User, id.Host, id.PID, id.Version)
	if _, err := tx.ExecContext(ctx, j.stmt.reserve.sql(len(keys)), args...); err != nil {
		return nil, nil, err
	}
	// The rows are locked by this transaction, so the guard held for every one of them; the
	// read-back gives the attempts and times the reservation wrote.
	leases, err := j.readLeases(ctx, tx, keys, token)
	if err != nil {
		return nil, nil, err
	}
	if err := tx.Commit(); err != nil {
		if IsAmbiguous(err) {
			return keys, nil, fmt.Errorf("%w: commit: %w", ErrAmbiguous, err)
		}
		return nil, nil, err
	}
	return keys, leases, nil
}

// lockDue locks, in tx, up to n due pending jobs in the order workers take them, skipping
// rows other transactions hold, and returns their keys.
//
// Priorities stay strict: when a priority yields fewer rows than asked for, a non-locking read
// tells whether it has due jobs that were skipped (locked by another claim, or for a moment by
// a refresh reading the jobs table); then no less urgent job is taken by this claim.
func (j *Jobs) lockDue(ctx context.Context, tx *sql.Tx, n int, maxPriority *int) ([]Key, error) {
	codecs, err := j.t.keyCodecs()
	if err != nil {
		return nil, err
	}
	var keys []Key
	for after := PriorityMin - 1; len(keys) < n; {
		var p sql.NullInt64
		if err := tx.QueryRowContext(ctx, j.stmt.nextPriority, after).Scan(&p); err != nil {
			return nil, err
		}
		if !p.Valid || maxPriority != nil && int(p.Int64) > *maxPriority {
			break
		}
		after = int(p.Int64)
		want, had := n-len(keys), len(keys)
		rows, err := tx.QueryContext(ctx, j.stmt.claim, after, want)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			k := make(Key, len(codecs))
			if err := rows.Scan(keyScanners(codecs, k)...); err != nil {
				rows.Close()
				return nil, err
			}
			keys = append(keys, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if got := len(keys) - had; got < want {
			var due int
			if err := tx.QueryRowContext(ctx, j.stmt.dueOf, after, got+1).Scan(&due); err != nil {
				return nil, err
			}
			if due > got {
				break // this priority's other due jobs are locked: none of the next
			}
		}
	}
	return keys, nil
}
