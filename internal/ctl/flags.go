package ctl

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/jobsdb"
)

var statusNames = []string{
	string(jobsdb.StatusPending),
	string(jobsdb.StatusReserved),
	string(jobsdb.StatusSuccess),
	string(jobsdb.StatusError),
	string(jobsdb.StatusIgnore),
}

// selection holds the flags that choose jobs: --status, --restrict, --key, --priority.
// A command registers the ones it accepts.
type selection struct {
	statuses []string
	restrict []string
	keys     []string
	priority int
	limit    int
	fs       *pflag.FlagSet
}

func newSelection(fs *pflag.FlagSet) *selection { return &selection{fs: fs} }

func (sel *selection) addStatus(usage string) {
	sel.fs.StringSliceVar(&sel.statuses, "status", nil, usage+" `STATUS`: "+strings.Join(statusNames, ", ")+"; repeat or separate with commas for several")
	annotate(sel.fs, "status", statusNames...)
	describeDefault(sel.fs, "status", "any status")
}

func (sel *selection) addRestrict() {
	sel.fs.StringArrayVar(&sel.restrict, "restrict", nil, "a `SQL` condition on key columns, as DataJoint's string restrictions, e.g. \"subject_id > 10\"; "+
		"repeat to AND several. It runs as written, inside parentheses, with your database privileges: it is for operators, never for untrusted input. "+
		"It must balance its parentheses and close its quotes, and hold no ';', no comment and no '?'")
	describeDefault(sel.fs, "restrict", "none")
}

func (sel *selection) addKey(whole bool) {
	usage := "only jobs whose key columns have these values, `COLUMN=VALUE,...` (some or all key columns). Values are typed by their column and sent as placeholders"
	def := "none"
	if whole {
		usage = "the job's whole key, `COLUMN=VALUE,...` (every key column). Values are typed by their column and sent as placeholders"
		def = "none (required)"
	}
	sel.fs.StringArrayVar(&sel.keys, "key", nil, usage+"; quote a value with \"...\" when it holds a comma, '=' or spaces")
	describeDefault(sel.fs, "key", def)
}

func (sel *selection) addLimit() {
	sel.fs.IntVar(&sel.limit, "limit", 0, "show at most `N` jobs (0: all)")
}

func (sel *selection) addPriority(usage string) {
	sel.fs.IntVar(&sel.priority, "priority", 0, usage)
	describeDefault(sel.fs, "priority", "any priority")
}

// maxPriority is --priority when given.
func (sel *selection) maxPriority() (*int, error) {
	if sel.fs.Lookup("priority") == nil || !sel.fs.Changed("priority") {
		return nil, nil
	}
	if err := checkPriority(sel.priority); err != nil {
		return nil, err
	}
	p := sel.priority
	return &p, nil
}

func checkPriority(p int) error {
	if p < -128 || p > 127 {
		return cli.Usagef("--priority %d is out of range -128..127 (the priority column is a signed tinyint; lower is more urgent)", p)
	}
	return nil
}

// empty reports whether no selecting flag was given (every job is selected).
func (sel *selection) empty() bool {
	return len(sel.statuses) == 0 && len(sel.restrict) == 0 && len(sel.keys) == 0 && !sel.fs.Changed("priority")
}

// statusList parses --status.
func (sel *selection) statusList() ([]jobsdb.Status, error) {
	var out []jobsdb.Status
	for _, s := range sel.statuses {
		s = strings.ToLower(strings.TrimSpace(s))
		if !slices.Contains(statusNames, s) {
			return nil, cli.Usagef("--status %q: want one of %s", s, strings.Join(statusNames, ", "))
		}
		if !slices.Contains(out, jobsdb.Status(s)) {
			out = append(out, jobsdb.Status(s))
		}
	}
	return out, nil
}

// restrictions turns --restrict and a partial --key into jobsdb restrictions (ANDed).
func (sel *selection) restrictions(t *jobsdb.Target) ([]jobsdb.Restriction, error) {
	var out []jobsdb.Restriction
	for _, r := range sel.restrict {
		if strings.TrimSpace(r) == "" {
			return nil, cli.Usagef("--restrict is empty: give a SQL condition such as \"subject_id > 10\"")
		}
		if err := jobsdb.CheckRestriction(r); err != nil {
			return nil, &cli.UsageError{Err: fmt.Errorf("--restrict: %w; nothing was changed", err)}
		}
		out = append(out, jobsdb.Restriction{SQL: r})
	}
	if len(sel.keys) > 0 {
		eq, err := partialKey(t, sel.keys)
		if err != nil {
			return nil, err
		}
		out = append(out, jobsdb.Restriction{Equal: eq})
	}
	return out, nil
}

// filter builds the jobsdb filter of the selection.
func (sel *selection) filter(t *jobsdb.Target) (jobsdb.Filter, error) {
	var f jobsdb.Filter
	var err error
	if f.Statuses, err = sel.statusList(); err != nil {
		return f, err
	}
	if f.Restrictions, err = sel.restrictions(t); err != nil {
		return f, err
	}
	if f.MaxPriority, err = sel.maxPriority(); err != nil {
		return f, err
	}
	if sel.limit < 0 {
		return f, cli.Usagef("--limit %d: want 0 (all) or more", sel.limit)
	}
	f.Limit = sel.limit
	return f, nil
}

// restrictError turns a database's rejection of a --restrict condition (syntax error, unknown
// column), or jobsdb's, into a usage error that names the flag.
func restrictError(err error, restrict []string) error {
	if errors.Is(err, jobsdb.ErrBadRestriction) {
		return &cli.UsageError{Err: fmt.Errorf("--restrict: %w", err)}
	}
	var me *mysql.MySQLError
	if len(restrict) > 0 && errors.As(err, &me) && (me.Number == 1064 || me.Number == 1054 || me.Number == 1052) {
		return &cli.UsageError{Err: fmt.Errorf("--restrict %s: the database rejected the condition: %w", quoteList(restrict), err)}
	}
	return err
}

func quoteList(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, " ")
}

// keyPair is one COLUMN=VALUE of --key.
type keyPair struct{ col, val string }

// parseKeyFlags parses every --key value into column/value pairs. Pairs are separated by
// commas; a comma that is not followed by "name=" belongs to the value; a value in double
// quotes is unquoted as a Go string (so keys printed by list can be pasted back).
func parseKeyFlags(values []string) ([]keyPair, error) {
	var pairs []keyPair
	seen := map[string]bool{}
	for _, v := range values {
		ps, err := parseKeyText(v)
		if err != nil {
			return nil, cli.Usagef("--key %q: %v", v, err)
		}
		for _, p := range ps {
			if seen[p.col] {
				return nil, cli.Usagef("--key: column %q is given twice", p.col)
			}
			seen[p.col] = true
			pairs = append(pairs, p)
		}
	}
	return pairs, nil
}

func parseKeyText(s string) ([]keyPair, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("empty: want COLUMN=VALUE,...")
	}
	var pairs []keyPair
	for s != "" {
		name, rest, ok := strings.Cut(s, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("%q is not COLUMN=VALUE", s)
		}
		if !isIdent(name) {
			return nil, fmt.Errorf("%q is not a column name", name)
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, fmt.Errorf("value of %s: unterminated or malformed quoted string", name)
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
			if rest != "" && rest[0] != ',' {
				return nil, fmt.Errorf("value of %s: want a comma after the quoted value, got %q", name, rest)
			}
			rest = strings.TrimPrefix(rest, ",")
		} else {
			i := pairComma(rest)
			val = rest[:i]
			rest = rest[min(i+1, len(rest)):]
		}
		pairs = append(pairs, keyPair{name, val})
		s = rest
	}
	return pairs, nil
}

// pairComma returns the index of the first comma in s that starts the next COLUMN=VALUE pair,
// or len(s).
func pairComma(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] != ',' {
			continue
		}
		name, _, ok := strings.Cut(s[i+1:], "=")
		if ok && isIdent(strings.TrimSpace(name)) {
			return i
		}
	}
	return len(s)
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '$' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// describeKey lists t's key columns with their types, for messages.
func describeKey(t *jobsdb.Target) string {
	parts := make([]string, len(t.KeyColumns))
	for i, c := range t.KeyColumns {
		parts[i] = c.Name + " (" + c.ColumnType + ")"
	}
	return strings.Join(parts, ", ")
}

// checkColumns makes sure every pair names a key column of t.
func checkColumns(t *jobsdb.Target, pairs []keyPair) error {
	for _, p := range pairs {
		if slices.ContainsFunc(t.KeyColumns, func(c jobsdb.Column) bool { return c.Name == p.col }) {
			continue
		}
		hint := ""
		switch p.col {
		case "status":
			hint = " (select statuses with --status)"
		case "priority":
			hint = " (select priorities with --priority)"
		}
		return cli.Usagef("--key: %q is not a key column of %s%s; its key columns are %s", p.col, t.FullName(), hint, describeKey(t))
	}
	return nil
}

// wholeKey parses --key as a job's complete key (show, ignore).
func wholeKey(t *jobsdb.Target, values []string) (jobsdb.Key, error) {
	if len(values) == 0 {
		return nil, cli.Usagef("--key is required: name the job by its whole key, e.g. --key %s", exampleKey(t))
	}
	pairs, err := parseKeyFlags(values)
	if err != nil {
		return nil, err
	}
	if err := checkColumns(t, pairs); err != nil {
		return nil, err
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		m[p.col] = p.val
	}
	var missing []string
	for _, c := range t.KeyColumns {
		if _, ok := m[c.Name]; !ok {
			missing = append(missing, c.Name)
		}
	}
	if len(missing) > 0 {
		return nil, cli.Usagef("--key: missing key column(s) %s of %s; a job is named by its whole key: %s", strings.Join(missing, ", "), t.FullName(), describeKey(t))
	}
	k, err := t.KeyFromStrings(m)
	if err != nil {
		return nil, &cli.UsageError{Err: fmt.Errorf("--key %s: %w (key columns of %s: %s)", quoteList(values), err, t.FullName(), describeKey(t))}
	}
	return k, nil
}

// partialKey parses --key as a restriction on some key columns (list, errors, retry, delete,
// refresh): every value is typed by its column, as in a whole key.
func partialKey(t *jobsdb.Target, values []string) (map[string]any, error) {
	pairs, err := parseKeyFlags(values)
	if err != nil {
		return nil, err
	}
	if err := checkColumns(t, pairs); err != nil {
		return nil, err
	}
	// Type the values with the target's own rules: a copy of the target whose key is just the
	// given columns, in key order.
	sub := *t
	sub.KeyColumns = nil
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		m[p.col] = p.val
	}
	for _, c := range t.KeyColumns {
		if _, ok := m[c.Name]; ok {
			sub.KeyColumns = append(sub.KeyColumns, c)
		}
	}
	k, err := sub.KeyFromStrings(m)
	if err != nil {
		return nil, &cli.UsageError{Err: fmt.Errorf("--key %s: %w (key columns of %s: %s)", quoteList(values), err, t.FullName(), describeKey(t))}
	}
	eq := make(map[string]any, len(k))
	for i, c := range sub.KeyColumns {
		eq[c.Name] = k[i]
	}
	return eq, nil
}

func exampleKey(t *jobsdb.Target) string {
	parts := make([]string, len(t.KeyColumns))
	for i, c := range t.KeyColumns {
		parts[i] = c.Name + "=…"
	}
	return strings.Join(parts, ",")
}

// keyCellOf renders a job's key for output.
func keyCellOf(t *jobsdb.Target, k jobsdb.Key) (keyCell, error) {
	raw, err := t.KeyJSON(k)
	if err != nil {
		return keyCell{}, fmt.Errorf("encode key of %s: %w", t.FullName(), err)
	}
	m := t.KeyMap(k)
	parts := make([]string, len(t.KeyColumns))
	for i, c := range t.KeyColumns {
		parts[i] = c.Name + "=" + keyValueText(m[c.Name])
	}
	return keyCell{text: strings.Join(parts, ","), json: raw}, nil
}

// keyValueText writes one key value so that --key reads it back: strings holding a separator,
// a quote, spaces or control characters are double-quoted.
func keyValueText(v any) string {
	switch x := v.(type) {
	case string:
		if x == "" || strings.ContainsAny(x, ",=\"' \t\n\\") || strings.ContainsFunc(x, isUnsafe) {
			return strconv.Quote(x)
		}
		return x
	case []byte:
		return keyValueText(string(x))
	case time.Time:
		return x.Format("2006-01-02 15:04:05.999999")
	default:
		return fmt.Sprint(x)
	}
}

// secondsValue is a flag holding a number of seconds ≥ 0 (fractions allowed).
type secondsValue struct{ d *time.Duration }

func (v secondsValue) String() string {
	if v.d == nil {
		return "0"
	}
	return strconv.FormatFloat(v.d.Seconds(), 'f', -1, 64)
}

func (v secondsValue) Set(s string) error {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) {
		return fmt.Errorf("want a number of seconds, e.g. 3600")
	}
	if f < 0 {
		return fmt.Errorf("must be ≥ 0 (a number of seconds)")
	}
	if f > 1e10 {
		return fmt.Errorf("%s seconds is out of range", s)
	}
	*v.d = time.Duration(f * float64(time.Second))
	return nil
}

func (v secondsValue) Type() string { return "seconds" }

func secondsVar(fs *pflag.FlagSet, d *time.Duration, name, usage string) {
	fs.Var(secondsValue{d: d}, name, usage)
}
