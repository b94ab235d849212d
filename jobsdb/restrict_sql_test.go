package jobsdb

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestCheckRestriction(t *testing.T) {
	t.Parallel()
	accepted := []string{
		"",
		"   ",
		"subject_id > 10",
		"(subject_id > 1) OR (session_id = 2)",
		"subject_id IN (1, 2, (3))",
		"name = 'a) OR (1=1'",
		`name = "x; y"`,
		"name = 'it''s'",
		`name = "say ""hi"""`,
		"`odd)name` = 1",
		"`a``b` = 1",
		`name LIKE 'a\_%'`,
		`name = 'a\\'`,
		"name = 'a # b -- c /* d */ ?'",
		"`#` = 1",
		"subject_id - -1 > 0",
		"a / b > 1 AND a * b < 2 AND a - b = 0",
		"name = 'ünïcode' AND note <> ''",
		"name = ''",
		"subject_id = 1\nAND session_id = 2",
	}
	for _, sql := range accepted {
		if err := CheckRestriction(sql); err != nil {
			t.Errorf("CheckRestriction(%q) = %v, want nil", sql, err)
		}
	}

	rejected := []struct {
		sql     string
		offset  int
		problem string // must appear in the message
	}{
		{"session_id=6) OR (1=1", 12, "closes a parenthesis"},
		{") OR (", 0, "closes a parenthesis"},
		{"subject_id = 1)", 14, "closes a parenthesis"},
		{"(a = 1)) OR ((b = 2)", 7, "closes a parenthesis"},
		{"(subject_id = 1", 0, "never closed"},
		{"((a = 1) OR (b = 2)", 0, "never closed"},
		{"name = 'abc", 7, "string"},
		{`name = "abc`, 7, "string"},
		{"name = 'abc\\'", 7, "string"},
		{"`abc = 1", 0, "quoted identifier"},
		{"subject_id = 1; DROP TABLE x", 14, "';'"},
		{"subject_id = 1;", 14, "';'"},
		{"subject_id = 1 -- ) OR (1=1", 15, "comment"},
		{"subject_id--1", 10, "comment"},
		{"subject_id = 1 # x", 15, "comment"},
		{"subject_id = 1 /* x */", 15, "comment"},
		{"subject_id = 1 /*! OR 1=1 */", 15, "comment"},
		{"subject_id = ?", 13, "placeholder"},
		// Read differently when the server's sql_mode has NO_BACKSLASH_ESCAPES or ANSI_QUOTES.
		{`name = 'it\'s'`, 13, "NO_BACKSLASH_ESCAPES"},
		{`name = "a\"b"`, 12, "ANSI_QUOTES"},
		{`name = 'a\' ) OR (1=1 OR name = '\''`, 12, "NO_BACKSLASH_ESCAPES"},
	}
	for _, c := range rejected {
		err := CheckRestriction(c.sql)
		if !errors.Is(err, ErrBadRestriction) {
			t.Errorf("CheckRestriction(%q) = %v, want ErrBadRestriction", c.sql, err)
			continue
		}
		var re *RestrictionError
		if !errors.As(err, &re) {
			t.Errorf("CheckRestriction(%q) = %T, want a *RestrictionError", c.sql, err)
			continue
		}
		if re.SQL != c.sql || re.Offset != c.offset {
			t.Errorf("CheckRestriction(%q): SQL %q, offset %d; want offset %d (%v)", c.sql, re.SQL, re.Offset, c.offset, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, strconv.Quote(c.sql)) || !strings.Contains(msg, c.problem) {
			t.Errorf("CheckRestriction(%q): message %q should quote the restriction and say %q", c.sql, msg, c.problem)
		}
	}
}

// TestBadRestrictionRunsNothing proves that a restriction that would escape its parentheses is
// refused by every operation that takes one, before any of them changes a row.
func TestBadRestrictionRunsNothing(t *testing.T) {
	t.Parallel()
	f := setupPipeline(t, 2, 2, 1, Options{})
	f.refresh(t, RefreshOptions{Restrictions: []Restriction{{SQL: "subject_id = 1"}}}) // (1, 1..2, 1)
	f.exec(t, "UPDATE {jobs} SET `status` = 'error', `error_message` = 'boom' WHERE `session_id` = 2")
	const escape = "subject_id = 1) OR (1=1"
	bad := []Restriction{{SQL: escape}}
	snapshot := func() string {
		var sum string
		q := f.expand("SELECT COALESCE(GROUP_CONCAT(CONCAT_WS(':', subject_id, session_id, param_id, status, scheduled_time) ORDER BY subject_id, session_id), '') FROM {jobs}")
		if err := f.sql.QueryRowContext(f.ctx, q).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		return sum
	}
	before := snapshot()
	check := func(t *testing.T, op string, rs []Restriction, err error) {
		t.Helper()
		if !errors.Is(err, ErrBadRestriction) {
			t.Errorf("%s with %q: error %v, want ErrBadRestriction", op, rs[0].SQL, err)
		}
		if after := snapshot(); after != before {
			t.Errorf("%s with %q changed the jobs table:\nbefore %s\nafter  %s", op, rs[0].SQL, before, after)
		}
	}

	t.Run("delete", func(t *testing.T) {
		_, err := f.jobs.Delete(f.ctx, Filter{Statuses: []Status{StatusIgnore}, Restrictions: bad})
		check(t, "Delete", bad, err)
	})
	t.Run("retry errors", func(t *testing.T) {
		rs := []Restriction{{SQL: "subject_id = 2) OR (1=1"}}
		_, err := f.jobs.RetryErrors(f.ctx, Filter{Restrictions: rs})
		check(t, "RetryErrors", rs, err)
	})
	t.Run("refresh", func(t *testing.T) {
		rs := []Restriction{{SQL: "subject_id = 3) OR (1=1"}}
		_, err := f.jobs.Refresh(f.ctx, RefreshOptions{Priority: 5, Restrictions: rs})
		check(t, "Refresh", rs, err)
	})
	t.Run("list", func(t *testing.T) {
		jobs, err := f.jobs.List(f.ctx, Filter{Statuses: []Status{StatusIgnore}, Restrictions: bad})
		check(t, "List", bad, err)
		if len(jobs) != 0 {
			t.Errorf("List with %q returned %d jobs", escape, len(jobs))
		}
	})
	t.Run("fetch pending", func(t *testing.T) {
		jobs, err := f.jobs.FetchPending(f.ctx, 10, intPtr(-128), bad)
		check(t, "FetchPending", bad, err)
		if len(jobs) != 0 {
			t.Errorf("FetchPending with %q returned %d jobs", escape, len(jobs))
		}
	})
}

// sqlModes are the ways MySQL reads quotes: whether a backslash escapes in '…' and in "…".
var sqlModes = []struct {
	name                             string
	backslashSingle, backslashDouble bool
}{
	{"default", true, true},
	{"ANSI_QUOTES", true, false},
	{"NO_BACKSLASH_ESCAPES", false, false},
}

// literalsRE matches MySQL's string literals and quoted identifiers under one sql_mode. It is
// written as regular expressions, independently of the lexer under test.
func literalsRE(backslashSingle, backslashDouble bool) *regexp.Regexp {
	quoted := func(q string, backslash bool) string {
		if backslash {
			return q + `(?:[^` + q + `\\]|\\[\s\S]|` + q + q + `)*` + q
		}
		return q + `(?:[^` + q + `]|` + q + q + `)*` + q
	}
	return regexp.MustCompile(quoted(`'`, backslashSingle) + `|` + quoted(`"`, backslashDouble) + "|" + quoted("`", false))
}

// escapesParentheses reports how the statement text "(" + sql + ")" lets sql reach beyond its
// parentheses under one sql_mode, or "" when it does not.
func escapesParentheses(sql string, re *regexp.Regexp) string {
	wrapped := "(" + sql + ")"
	code := re.ReplaceAllStringFunc(wrapped, func(lit string) string { return strings.Repeat("_", len(lit)) })
	if i := strings.IndexAny(code, "'\"`"); i >= 0 {
		return "an unclosed quote at " + strconv.Itoa(i-1)
	}
	for _, s := range []string{";", "#", "--", "/*", "?"} {
		if i := strings.Index(code, s); i >= 0 {
			return strconv.Quote(s) + " outside literals at " + strconv.Itoa(i-1)
		}
	}
	depth := 0
	for i := 0; i < len(code); i++ {
		switch code[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 && i != len(code)-1 {
				return "the opening parenthesis closed at " + strconv.Itoa(i-1)
			}
		}
	}
	if depth != 0 {
		return "unbalanced parentheses"
	}
	return ""
}

// FuzzCheckRestriction checks that every restriction CheckRestriction accepts stays inside the
// parentheses it is placed in, however the server reads quotes, and that every refusal is an
// ErrBadRestriction that quotes the restriction.
func FuzzCheckRestriction(f *testing.F) {
	for _, s := range []string{
		"subject_id > 10", "session_id=6) OR (1=1", "name = 'a) OR (1=1'", `name = 'it\'s'`, `name = "a\"b"`,
		"`a``b` = 1", "name = 'it''s'", "a = 1 -- x", "a = 1 /* x */", "a = 1; DROP TABLE t", "(a) OR (b)",
		`x = '\' ) OR (1=1 OR x = '\''`, `x = "\\" OR (")")`, "a = ?", "'#' = `#`",
	} {
		f.Add(s)
	}
	res := make([]*regexp.Regexp, len(sqlModes))
	for i, m := range sqlModes {
		res[i] = literalsRE(m.backslashSingle, m.backslashDouble)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		err := CheckRestriction(sql)
		if err != nil {
			if !errors.Is(err, ErrBadRestriction) || !strings.Contains(err.Error(), strconv.Quote(sql)) {
				t.Fatalf("CheckRestriction(%q) = %v: want ErrBadRestriction quoting the restriction", sql, err)
			}
			return
		}
		if strings.TrimSpace(sql) == "" {
			return
		}
		for i, m := range sqlModes {
			if how := escapesParentheses(sql, res[i]); how != "" {
				t.Fatalf("CheckRestriction accepted %q, which escapes its parentheses under sql_mode %s: %s", sql, m.name, how)
			}
		}
		if CheckRestriction("("+sql+")") != nil {
			t.Fatalf("CheckRestriction accepted %q but not (%s)", sql, sql)
		}
		if CheckRestriction(sql+")") == nil {
			t.Fatalf("CheckRestriction accepted %q and also %q", sql, sql+")")
		}
	})
}
