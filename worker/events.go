package worker

import "github.com/jetjobs/jetjobs/jobsdb"

// Event reports one settled job, to Options.OnFinish.
type Event struct {
	Table string
	Key   map[string]any
	// Outcome is how the job ended: succeeded, failed, retried or released.
	Outcome jobsdb.OutcomeKind
	// Recorded is false when the outcome was not written: the job's lease had been taken
	// over (another holder owns the job), or MySQL stayed unreachable until the worker gave
	// up (the lease then expires and the scheduler recovers the job).
	Recorded bool
	// Error is the recorded error message, for a failed job.
	Error string
}

// Summary is populate()'s return value: the jobs that succeeded and the errors recorded.
type Summary struct {
	SuccessCount int          `json:"success_count"`
	ErrorList    []ErrorEntry `json:"error_list"`
}

// ErrorEntry is one failed job.
type ErrorEntry struct {
	Table string         `json:"table"`
	Key   map[string]any `json:"key"`
	Error string         `json:"error"`
}
