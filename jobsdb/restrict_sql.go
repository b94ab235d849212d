package jobsdb

import (
	"errors"
	"fmt"
)

// ErrBadRestriction: a restriction's SQL condition would not stay inside the parentheses it
// is placed in (an unbalanced parenthesis, an unclosed quote), or holds a ';', a comment or a
// placeholder. Nothing ran.
var ErrBadRestriction = errors.New("bad restriction")

// RestrictionError is the ErrBadRestriction of one restriction: what is wrong and where.
// errors.Is(err, ErrBadRestriction) holds for it.
type RestrictionError struct {
	SQL     string // the restriction's SQL, as given
	Offset  int    // byte offset in SQL of the problem
	Problem string // what is wrong, e.g. "')' at byte 12 closes a parenthesis it did not open"
}

func (e *RestrictionError) Error() string {
	return fmt.Sprintf("bad restriction %q: %s", e.SQL, e.Problem)
}

// Unwrap makes errors.Is(err, ErrBadRestriction) true.
func (e *RestrictionError) Unwrap() error { return ErrBadRestriction }

// quoting is how the server reads quotes, which its sql_mode decides.
type quoting struct {
	mode            string // the sql_mode flag that reads quotes this way; "" for the default
	reading         string // how, for messages
	singleBackslash bool   // a backslash escapes the next character inside '…'
	doubleBackslash bool   // a backslash escapes the next character inside "…"
}

// quotings are the ways MySQL and MariaDB read quotes: by default a backslash escapes inside
// both string quotes; with ANSI_QUOTES "…" is an identifier, where it does not; with
// NO_BACKSLASH_ESCAPES it escapes nowhere. Backquoted identifiers never have backslash escapes,
// and doubling a quote escapes it everywhere.
var quotings = []quoting{
	{"", "", true, true},
	{"ANSI_QUOTES", `"…" is an identifier, inside which a backslash escapes nothing`, true, false},
	{"NO_BACKSLASH_ESCAPES", "a backslash escapes nothing", false, false},
}

// CheckRestriction checks that a restriction's SQL condition stays inside the parentheses it
// is placed in, "(" + sql + ")", whatever the server's sql_mode: its parentheses balance and
// never close one they did not open, its string literals ('…', "…") and quoted identifiers
// (`…`) are closed, and it holds no ';', no comment ("--", "#", "/*") and no placeholder ('?')
// outside them. The error is a *RestrictionError. Blank SQL (no restriction) is fine.
//
// It is a lexer, not a parser: a condition it accepts can still be SQL the server rejects, and
// it is still trusted text, run with the database user's privileges. What it guarantees is that
// a typo cannot reach past the parentheses and undo the statement's other conditions.
func CheckRestriction(sql string) error {
	for _, q := range quotings {
		off, problem := scanRestriction(sql, q)
		if problem == "" {
			continue
		}
		if q.mode != "" {
			problem = fmt.Sprintf("with sql_mode %s (%s), %s; escape a quote by doubling it instead ('it''s')", q.mode, q.reading, problem)
		}
		return &RestrictionError{SQL: sql, Offset: off, Problem: problem}
	}
	return nil
}

// scanRestriction lexes sql as the server does under q and returns the offset of the first
// problem and what it is, or "" when there is none.
func scanRestriction(sql string, q quoting) (int, string) {
	var open []int // offsets of the parentheses not closed yet
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		next := byte(0)
		if i+1 < len(sql) {
			next = sql[i+1]
		}
		switch {
		case c == '\'' || c == '"' || c == '`':
			end := closingQuote(sql, i, c == '\'' && q.singleBackslash || c == '"' && q.doubleBackslash)
			if end < 0 {
				what := "the string"
				if c == '`' || c == '"' && q.mode == "ANSI_QUOTES" {
					what = "the quoted identifier"
				}
				return i, fmt.Sprintf("%s opened by %c at byte %d is never closed", what, c, i)
			}
			i = end
		case c == '(':
			open = append(open, i)
		case c == ')':
			if len(open) == 0 {
				return i, fmt.Sprintf("')' at byte %d closes a parenthesis it did not open, "+
					"so the rest would escape the parentheses the restriction is placed in", i)
			}
			open = open[:len(open)-1]
		case c == ';':
			return i, fmt.Sprintf("';' at byte %d would end the statement: a restriction is one condition", i)
		case c == '#', c == '-' && next == '-', c == '/' && next == '*':
			n := 1
			if c != '#' {
				n = 2
			}
			hint := ""
			if c == '-' {
				hint = " (to subtract a negative number, write '- -1')"
			}
			return i, fmt.Sprintf("'%s' at byte %d starts a comment, which would hide the rest of the statement%s", sql[i:i+n], i, hint)
		case c == '?':
			return i, fmt.Sprintf("'?' at byte %d is a placeholder, and a restriction has no values to bind: write the value itself", i)
		}
	}
	if len(open) > 0 {
		i := open[len(open)-1]
		return i, fmt.Sprintf("'(' at byte %d is never closed", i)
	}
	return 0, ""
}

// closingQuote returns the offset of the quote that closes the literal opening at sql[start],
// or -1. A doubled quote stands for itself; with backslash, a backslash escapes the next byte.
func closingQuote(sql string, start int, backslash bool) int {
	quote := sql[start]
	for i := start + 1; i < len(sql); i++ {
		switch sql[i] {
		case '\\':
			if backslash {
				i++
			}
		case quote:
			if i+1 < len(sql) && sql[i+1] == quote {
				i++
				continue
			}
			return i
		}
	}
	return -1
}
