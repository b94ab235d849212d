package worker

import (
	"context"
	"database/sql"
	"errors"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// Job is one reserved job, as a handler sees it.
type Job struct {
	// Table is the target table, "schema.table".
	Table string
	// Key maps the key columns to their values (numbers, strings; binary as base64 strings).
	Key map[string]any
	// KeyJSON is the key as a canonical JSON object, columns in key order.
	KeyJSON []byte
	// Attempt is 1 for the first reservation of the job, 2 for its first retry, …
	Attempt int
	// Priority of the job; lower is more urgent.
	Priority int

	leaseToken string // for the exec handler's environment
}

// Result is what a successful handler hands back for the completion.
type Result struct {
	// Rows are inserted into the target table in the transaction that records the job's
	// completion; key columns missing from a row are filled in from the job's key.
	Rows []jobsdb.Row
	// Write, when set, runs inside the completion transaction after the job's lease was
	// checked: whatever it writes commits together with the completion, or not at all.
	// Jobs with a Write callback are recorded one transaction each instead of in batches.
	Write func(ctx context.Context, tx *sql.Tx) error
}

// Handler computes one job. The context is cancelled when the job's lease is lost, when its
// timeout passes, or when the worker stops and the grace period is over. Returning nil
// completes the job; an error wrapped by Retryable is retried with backoff while attempts
// remain; any other error records the job as failed.
type Handler func(ctx context.Context, job *Job) (Result, error)

// RetryableError marks a failure worth retrying (a flaky network, a busy resource).
type RetryableError struct{ Err error }

func (e *RetryableError) Error() string { return e.Err.Error() }
func (e *RetryableError) Unwrap() error { return e.Err }

// Retryable wraps err so that the worker retries the job with exponential backoff, up to the
// configured jobs.max_attempts; after the last attempt the job is recorded as failed.
func Retryable(err error) error { return &RetryableError{Err: err} }

// IsRetryable reports whether err asks for a retry.
func IsRetryable(err error) bool {
	var r *RetryableError
	return errors.As(err, &r)
}
