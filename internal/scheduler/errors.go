package scheduler

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// ErrNoTables is returned by Start when Options.Tables is empty.
var ErrNoTables = errors.New("scheduler: no table to schedule")

// TableError reports a table that cannot be scheduled as configured: its name is not
// schema.table or is listed twice (returned by Start), or the table does not exist, has no
// key columns, or has a key source MySQL rejects (found by the table's inspection, after
// which the scheduler stops; see Scheduler.Err). Running again without a change to the
// configuration or the schema cannot help. errors.Is sees the cause (jobsdb.ErrUnknownTable,
// jobsdb.ErrNoKeyColumns, …) through it.
type TableError struct {
	// Table is the name as given in Options.Tables.
	Table string
	// Err says what is wrong, naming the table.
	Err error
}

func (e *TableError) Error() string { return e.Err.Error() }
func (e *TableError) Unwrap() error { return e.Err }

// unschedulable returns the TableError of an error of jobsdb.Inspect that retrying cannot
// change, and nil for any other (MySQL unreachable, a statement timed out: retry those).
func unschedulable(table string, err error) *TableError {
	switch {
	case errors.Is(err, jobsdb.ErrUnknownTable):
		return &TableError{Table: table, Err: err} // it names the table
	case errors.Is(err, jobsdb.ErrNoKeyColumns), errors.Is(err, jobsdb.ErrBadKey),
		jobsdb.Classify(err) == jobsdb.FailureSchema:
		return &TableError{Table: table, Err: fmt.Errorf("table %s: %w", table, err)}
	}
	return nil
}

// checkTables returns a TableError for a name that is not schema.table or is listed twice.
// The tables themselves are looked at by each table's inspection.
func checkTables(tables []Table) error {
	seen := map[string]bool{}
	for _, t := range tables {
		schema, name, ok := strings.Cut(t.Name, ".")
		if !ok || schema == "" || name == "" || strings.Contains(name, ".") {
			return &TableError{Table: t.Name, Err: fmt.Errorf("table %q is not of the form schema.table", t.Name)}
		}
		if seen[t.Name] {
			return &TableError{Table: t.Name, Err: fmt.Errorf("table %s is listed twice", t.Name)}
		}
		seen[t.Name] = true
	}
	return nil
}
