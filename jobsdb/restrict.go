package jobsdb

import "time"

// Restriction narrows an operation to some keys: a trusted SQL condition on key columns (as
// DataJoint's string restrictions), column=value pairs (parameterized, columns checked) and/or
// a list of such pairs any of which may match (AnyOf).
//
// SQL is configuration, not user input: it is placed in the statement as written, in
// parentheses, where the key columns are the only unqualified names meant to be used. It is
// checked first (CheckRestriction): SQL that could reach past its parentheses (an unbalanced
// parenthesis, an unclosed quote, a ';', a comment) is ErrBadRestriction, and no job is read
// or changed. Equal names key columns only (anything else is ErrBadKey) and its values are
// typed by the column and sent as placeholders. The restrictions of a list are ANDed; a zero
// Restriction keeps everything.
//
// AnyOf keeps the keys that match at least one of its maps, each read as Equal is (key
// columns only, some or all of them, values typed by the column and sent as placeholders): it
// restricts an operation to a list of keys, as a notify does. A map naming no column is
// ErrBadKey (it would match every key). A nil AnyOf restricts nothing; an empty, non-nil one
// matches no key.
type Restriction struct {
	SQL   string
	Equal map[string]any
	AnyOf []map[string]any
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
