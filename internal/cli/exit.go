package cli

import (
	"errors"
	"fmt"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// Exit codes of every program.
const (
	ExitOK     = 0 // success
	ExitFailed = 1 // the operation failed (or, for the worker, a job failed without --suppress-errors)
	ExitUsage  = 2 // bad usage or configuration
)

// UsageError marks an error caused by the command line or configuration (exit code 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// IsUsage reports whether err is caused by the command line, the configuration, or a table
// or database that does not fit them, which running again without a change cannot fix.
func IsUsage(err error) bool {
	var usage *UsageError
	return errors.As(err, &usage) ||
		errors.Is(err, config.ErrInvalid) ||
		errors.Is(err, jobsdb.ErrUnknownTable) ||
		errors.Is(err, jobsdb.ErrNoKeyColumns) ||
		errors.Is(err, jobsdb.ErrBadRestriction) ||
		errors.Is(err, queue.ErrInvalidName) ||
		errors.Is(err, queue.ErrNotLoopback) ||
		jobsdb.Classify(err) == jobsdb.FailureSchema
}

// ExitCode maps an error to the program's exit code.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case IsUsage(err):
		return ExitUsage
	default:
		return ExitFailed
	}
}
