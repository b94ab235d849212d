package jobsdb

import (
	"fmt"
	"strings"
	"time"
)

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

// conds collects the conditions of a WHERE clause and their arguments, in order.
type conds struct {
	sql  []string
	args []any
}

func (c *conds) add(cond string, args ...any) {
	c.sql = append(c.sql, cond)
	c.args = append(c.args, args...)
}

// where is " WHERE a AND b", or "" when there is no condition.
func (c *conds) where() string {
	if len(c.sql) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(c.sql, " AND ")
}

// addRestrictions adds rs over the key columns of the relation named alias ("" for the one
// table of the statement).
func (t *Target) addRestrictions(c *conds, alias string, rs []Restriction) error {
	prefix := ""
	if alias != "" {
		prefix = quoteIdent(alias) + "."
	}
	for _, r := range rs {
		if strings.TrimSpace(r.SQL) != "" {
			if err := CheckRestriction(r.SQL); err != nil {
				return err
			}
			c.add("(" + r.SQL + ")")
		}
		cols, vals, err := t.equalMap(r.Equal)
		if err != nil {
			return err
		}
		for k, i := range cols {
			c.add(prefix+quoteIdent(t.KeyColumns[i].Name)+" = ?", vals[k])
		}
	}
	return nil
}

// Filter selects jobs for Delete, RetryErrors and List.
type Filter struct {
	Statuses     []Status // empty: any status
	Restrictions []Restriction
	MaxPriority  *int // only priority <= *MaxPriority
	DueOnly      bool // only scheduled_time <= now
	Limit        int  // List only; 0 = no limit
}

// filterConds builds the filter's conditions over the jobs table (alias "" for unqualified).
func (j *Jobs) filterConds(f Filter, alias string) (*conds, error) {
	prefix := ""
	if alias != "" {
		prefix = quoteIdent(alias) + "."
	}
	c := &conds{}
	if len(f.Statuses) > 0 {
		args := make([]any, len(f.Statuses))
		for i, s := range f.Statuses {
			if !s.Valid() {
				return nil, fmt.Errorf("unknown status %q (want one of %v)", s, Statuses)
			}
			args[i] = string(s)
		}
		c.add(prefix+"`status` IN "+inList(len(args)), args...)
	}
	if f.MaxPriority != nil {
		c.add(prefix+"`priority` <= ?", *f.MaxPriority)
	}
	if f.DueOnly {
		c.add(prefix + "`scheduled_time` <= NOW(3)")
	}
	if err := j.t.addRestrictions(c, alias, f.Restrictions); err != nil {
		return nil, err
	}
	return c, nil
}

// inList is "(?, ?, …)" for n values.
func inList(n int) string {
	return "(" + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + ")"
}

// micros is d in whole microseconds, the unit of every interval jobsdb sends.
func micros(d time.Duration) int64 { return d.Microseconds() }
