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
	// ErrAmbiguous: the connection to MySQL broke after a write was sent and it could not be
	// read back: the write may or may not have taken effect. A reservation made that way is
	// recovered when its lease expires; an outcome is recorded again with MaybeRecorded.
	ErrAmbiguous = errors.New("outcome unknown: the connection to MySQL broke after the statement was sent")
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
	errDupFieldName = 1060 // ALTER TABLE ADD of a column that exists (a racing Declare)
	errNoSuchTable  = 1146
)

func mysqlErrorNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// transientRetries is how many times a statement or transaction that failed transiently (a
// deadlock, a lock wait timeout, an interrupted statement: see Classify) is run again at once
// before the error is returned to the caller, whose own backoff takes over.
const transientRetries = 5

// retryTransient runs fn until it succeeds, fails with a non-transient error, or has been
// retried transientRetries times, backing off 2, 4, 8… ms between attempts.
func retryTransient(ctx context.Context, fn func() error) error {
	backoff := 2 * time.Millisecond
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil || Classify(err) != FailureTransient || attempt == transientRetries {
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

// Pacing of retrySettling.
const (
	settleRetryInitial = 5 * time.Millisecond
	settleRetryMax     = time.Second
)

// retrySettling runs fn until it succeeds, fails permanently, or ctx ends, backing off from
// settleRetryInitial to settleRetryMax between attempts that failed transiently or
// ambiguously (see Classify). It is for statements that are safe to run again and whose
// outcome the caller must know, such as a reservation; *ambiguous is set when an attempt may
// have taken effect. The error after ctx ended wraps ErrAmbiguous when one did.
func retrySettling(ctx context.Context, ambiguous *bool, fn func() error) error {
	wait := settleRetryInitial
	for {
		err := fn()
		switch Classify(err) {
		case FailureNone:
			return nil
		case FailureAmbiguous:
			*ambiguous = true
		case FailureTransient:
		default:
			return err
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			if *ambiguous {
				return fmt.Errorf("%w: %w", ErrAmbiguous, err)
			}
			return err
		case <-timer.C:
		}
		wait = min(2*wait, settleRetryMax)
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
