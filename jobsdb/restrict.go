package jobsdb

import "time"

// Restriction narrows an operation to some keys: a trusted SQL condition on key columns (as
// DataJoint's string restrictions) and/or column=value pairs (parameterized, columns checked).
//
// SQL is configuration, not user input: it is placed in the statement as written, in
// parentheses, where the key columns are the only unqualified names meant to be used. It is
// checked first (CheckRestriction): SQL that could reach past its parentheses (an unbalanced
// parenthesis, an unclosed quote, a ';', a comment) is ErrBadRestriction, and no job is read
// or changed. Equal names key columns only (anything else is ErrBadKey) and its values are
// typed by the column and sent as placeholders. The restrictions of a list are ANDed; a zero
// Restriction keeps everything.
type Restriction struct {
	SQL   string
	Equal map[string]any
}

// Filter selects jobs for Delete, RetryErrors and List.
type Filter struct {
	Statuses     []Status // empty: any status
	Restrictions []Restriction
	MaxPriority  *int // only priority <= *MaxPriority
	DueOnly      bool // only scheduled_time <= now
	// ErrorMessage, when not nil, selects the jobs whose error_message equals it (as the
	// column's collation compares: one group of ErrorGroups).
	ErrorMessage *string
	Limit        int // List only; 0 = no limit
}

// micros is d in whole microseconds, the unit of every interval jobsdb sends.
func micros(d time.Duration) int64 { return d.Microseconds() }
