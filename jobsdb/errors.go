package jobsdb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Status is a job's state. The state machine is in DESIGN.md (States and transitions).
type Status string

// The statuses, as the values of DataJoint's status enum.
const (
	StatusPending  Status = "pending"
	StatusReserved Status = "reserved"
	StatusSuccess  Status = "success"
	StatusError    Status = "error"
	StatusIgnore   Status = "ignore"
)

// Statuses lists every status in the order of DataJoint's enum.
var Statuses = []Status{StatusPending, StatusReserved, StatusSuccess, StatusError, StatusIgnore}

// Valid reports whether s is one of the five statuses.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// Sentinel errors, tested with errors.Is.
var (
	// ErrUnknownTable: the target table does not exist.
	ErrUnknownTable = errors.New("unknown table")
	// ErrNoKeyColumns: the target's primary key has no FK-derived column and no key source is configured.
	ErrNoKeyColumns = errors.New("no FK-derived primary key columns")
	// ErrBadKey: a key (or key restriction, or target row) has missing, extra or mistyped columns.
	ErrBadKey = errors.New("bad key")
	// ErrLeaseLost: a write by a lease holder found the lease taken over; nothing changed.
	ErrLeaseLost = errors.New("lease lost")
	// ErrNotFound: no job row for the key.
	ErrNotFound = errors.New("job not found")
	// ErrNoJobsTable: the jobs table does not exist yet (run refresh, or Declare).
	ErrNoJobsTable = errors.New("jobs table does not exist")
)

// KeyError is the ErrBadKey of one table: which column is wrong and how. errors.Is(err,
// ErrBadKey) holds for it.
type KeyError struct {
	Table   string // "schema.table" of the target
	Column  string // the offending column; "" when the key as a whole is wrong
	Problem string // what is wrong, e.g. "want an integer in -128..127, got 300"
}

func (e *KeyError) Error() string {
	if e.Column == "" {
		return fmt.Sprintf("bad key for %s: %s", e.Table, e.Problem)
	}
	return fmt.Sprintf("bad key for %s: column %s: %s", e.Table, e.Column, e.Problem)
}

// Unwrap makes errors.Is(err, ErrBadKey) true.
func (e *KeyError) Unwrap() error { return ErrBadKey }

func (t *Target) badKey(column, format string, args ...any) error {
	return &KeyError{Table: t.FullName(), Column: column, Problem: fmt.Sprintf(format, args...)}
}

// MySQL error numbers jobsdb reacts to.
const (
	errDupFieldName    = 1060 // ALTER TABLE ADD of a column that exists (a racing Declare)
	errNoSuchTable     = 1146
	errLockWaitTimeout = 1205
	errLockDeadlock    = 1213
)

func mysqlErrorNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// isTransient reports a deadlock or lock wait timeout: the statement (or transaction) was
// rolled back and may be run again.
func isTransient(err error) bool {
	var te *transientError
	if errors.As(err, &te) {
		return true
	}
	n := mysqlErrorNumber(err)
	return n == errLockDeadlock || n == errLockWaitTimeout
}

// transientRetries is how many times a statement or transaction rolled back by a deadlock or
// lock wait timeout is run again before the error is returned.
const transientRetries = 5

// retryTransient runs fn until it succeeds, fails with a non-transient error, or has been
// retried transientRetries times, backing off 2, 4, 8… ms between attempts.
func retryTransient(ctx context.Context, fn func() error) error {
	backoff := 2 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || !isTransient(err) || attempt == transientRetries {
			return err
		}
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return err
		case <-timer.C:
		}
		backoff *= 2
	}
}

// noJobsTable turns MySQL's "table doesn't exist" about the jobs table into ErrNoJobsTable.
func (j *Jobs) noJobsTable(err error) error {
	if err == nil {
		return nil
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == errNoSuchTable && strings.Contains(me.Message, j.t.JobsName) {
		j.declared.Store(false)
		return fmt.Errorf("%w: %s.%s (run refresh or declare it): %v", ErrNoJobsTable, j.t.Schema, j.t.JobsName, err)
	}
	return err
}
