package jobsdb

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// This file holds every SQL statement jobsdb runs, each under a name. The other files run
// statements; none writes SQL.
//
// One style throughout:
//
//   - A statement that depends only on the tables is a string built once, by New (per jobs
//     table) or Inspect (per target), with every identifier quoted once (quoteIdent) and
//     every value a placeholder. The statements of information_schema are constants.
//   - A statement that addresses a variable number of keys (an IN list of 1..1,000 keys, see
//     maxKeysPerStatement) is a fixed head and tail around the one part that varies, the list
//     of placeholder tuples, which a small builder writes (byKeys, fenced, valued).
//   - A statement that takes a caller's filter or restrictions is a fixed head (and tail)
//     around the conditions that conds collects. A Restriction's SQL is the only text not
//     written here: trusted configuration, checked by CheckRestriction, placed in parentheses
//     among the conditions of the relation it restricts. A configured key source is placed
//     the same way, as a derived table (Target.KeySource).

// Statements of information_schema (Inspect, Declare). Names are compared again in Go, exactly:
// information_schema may compare them without regard to case.
const (
	currentDatabaseQuery = "SELECT DATABASE()"

	columnsQuery = `SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_COMMENT,
	COALESCE(CHARACTER_SET_NAME, ''), COALESCE(COLLATION_NAME, '')
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?
ORDER BY ORDINAL_POSITION`

	primaryKeyQuery = `SELECT TABLE_NAME, COLUMN_NAME
FROM information_schema.KEY_COLUMN_USAGE
WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'
ORDER BY ORDINAL_POSITION`

	foreignKeysQuery = `SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA,
	REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME
FROM information_schema.KEY_COLUMN_USAGE
WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND REFERENCED_TABLE_NAME IS NOT NULL
ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION`

	uniqueIndexesQuery = `SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0
ORDER BY INDEX_NAME, SEQ_IN_INDEX`
)

// jobColumns are the columns a Job is read from, after the key columns.
const jobColumns = "`status`, `priority`, `created_time`, `scheduled_time`, `reserved_time`, `completed_time`, " +
	"`duration`, `error_message`, `user`, `host`, `pid`, `connection_id`, `version`, `attempts`, " +
	"`lease_expires`, `dispatched_time`"

// dataJointJobColumns read a jobs table that DataJoint declared and jetjobs has not adopted
// yet: its jetjobs columns read as their defaults, so reading never needs to alter the table.
const dataJointJobColumns = "`status`, `priority`, `created_time`, `scheduled_time`, `reserved_time`, `completed_time`, " +
	"`duration`, `error_message`, `user`, `host`, `pid`, `connection_id`, `version`, 0 AS `attempts`, " +
	"NULL AS `lease_expires`, NULL AS `dispatched_time`"

// statusIndex is the name of the (status, priority, scheduled_time) index: DataJoint declares it
// unnamed, and MySQL and MariaDB name it after its first column.
const statusIndex = "`status`"

// The guards shared by several statements.
const (
	isReserved = " AND `status` = 'reserved'"
	isDue      = "`status` = 'pending' AND `scheduled_time` <= NOW(3)"
)

// The SET lists of the transitions back to pending and of a reservation (docs/states.md).
var (
	// reserveSet: pending → reserved. The user defaults to the connection's USER(), as
	// DataJoint's get_user().
	reserveSet = strings.Join([]string{
		"`status` = 'reserved'",
		"`lease_token` = ?",
		"`lease_expires` = NOW(3) + INTERVAL ? MICROSECOND",
		"`attempts` = `attempts` + 1",
		"`reserved_time` = NOW(3)",
		"`completed_time` = NULL",
		"`duration` = NULL",
		"`user` = IF(? = '', USER(), ?)",
		"`host` = ?",
		"`pid` = ?",
		"`connection_id` = CONNECTION_ID()",
		"`version` = ?",
	}, ", ")
	// retryErrorsSet: error → pending, due now, as DataJoint's "delete the error, refresh" would
	// make a new job: message, stack and attempts are cleared, the reservation history (user,
	// host, reserved_time…) stays.
	retryErrorsSet = strings.Join([]string{
		"`status` = 'pending'",
		"`scheduled_time` = NOW(3)",
		"`completed_time` = NULL",
		"`duration` = NULL",
		"`error_message` = ''",
		"`error_stack` = NULL",
		"`attempts` = 0",
		"`lease_token` = ''",
		"`lease_expires` = NULL",
		"`dispatched_time` = NULL",
	}, ", ")
	// rePendSet: success → pending (refresh with keep_completed), as a new job.
	rePendSet = strings.Join([]string{
		"`j`.`status` = 'pending'",
		"`j`.`priority` = ?",
		"`j`.`created_time` = NOW(3)",
		"`j`.`scheduled_time` = NOW(3) + INTERVAL ? MICROSECOND",
		"`j`.`reserved_time` = NULL",
		"`j`.`completed_time` = NULL",
		"`j`.`duration` = NULL",
		"`j`.`error_message` = ''",
		"`j`.`error_stack` = NULL",
		"`j`.`attempts` = 0",
		"`j`.`lease_token` = ''",
		"`j`.`lease_expires` = NULL",
		"`j`.`dispatched_time` = NULL",
	}, ", ")
)

// statements are the SQL of one jobs table and its target, built once by New.
type statements struct {
	table  string // `schema`.`~~name`
	target string // `schema`.`name`

	// Declare and Drop.
	createTable string // CREATE TABLE IF NOT EXISTS, DataJoint's DDL plus jetjobs' columns
	addColumns  string // ALTER TABLE … ADD COLUMN, followed by the columns' DDL (addColumnsSQL)
	drop        string

	// Reserve and Heartbeat (a holder's writes are fenced by key and lease token).
	reserve    byKeys // pending, due rows of the keys → reserved with a fresh token
	readLeases byKeys // the rows of the keys reserved with one token
	heartbeat  fenced // lease_expires renewed
	held       fenced // the leases still held
	heldLocked fenced // the same, locking the rows (LockLeases, Record)
	holders    byKeys // the token of each reserved row of the keys, locking the rows

	// Record: one statement per kind of outcome and 1,000 keys (errors: one per key).
	complete      fenced // reserved → deleted
	keepCompleted valued // reserved → success, with each job's duration
	fail          fenced // reserved → error, with message, stack and duration (one key)
	retry         valued // reserved → pending, due after each job's delay
	release       fenced // reserved → pending, due as it was, the attempt given back
	insertTail    string // ON DUPLICATE KEY UPDATE of insertTargetSQL: a row already there stays

	// Refresh: the restrictions go between head and tail.
	add    restricted // (none) → pending
	rePend restricted // success → pending (keep_completed, target row gone)
	stale  restricted // pending → deleted (stale)

	// Scheduler and jobsctl.
	recoverExpired string // reserved → pending (orphan)
	claim          string // the due pending jobs of one priority, locked, skipping locked rows (Claim)
	dueOf          string // how many due pending jobs one priority has, up to a limit, without locking
	markDispatched byKeys
	nextPriority   string // the next priority (after the argument) that has pending jobs
	nextDueOf      string // the earliest not-yet-due scheduled_time of one priority
	ignore         string // any → ignore (inserts the row when there is none)
	deleteJobs     string // any → deleted, followed by a filter's WHERE
	retryErrors    string // error → pending, followed by a filter's WHERE
	progress       string

	// Reading jobs: a head, then the filter, then orderJobs.
	selectJobs jobsSelect // without error_stack
	seekJobs   jobsSelect // selectJobs, reading the status index from a position (Page)
	selectDue  string     // what a publish needs: key, priority, scheduled_time
	selectJob  jobsSelect // with error_stack, WHERE the key (Get)
	orderJobs  string
	orderDue   string // within one priority
	dueAfter   string // within one priority, after a (scheduled_time, key): dueAfterArgs
	pageAfter  string // after a (priority, scheduled_time, key) in orderJobs: lexicalArgs
	// errorGroups counts error jobs per message, followed by a filter's AND, then errorGroupsTail.
	errorGroups     string
	errorGroupsTail string
}

// jobsSelect is a SELECT of jobs in two spellings: for an adopted jobs table, and for one that
// DataJoint declared and jetjobs has not adopted (its jetjobs columns read as their defaults).
type jobsSelect struct{ jetjobs, dataJoint string }

// newStatements builds the statements of t's jobs table.
func newStatements(t *Target) *statements {
	s := &statements{
		table:  qualified(t.Schema, t.JobsName),
		target: qualified(t.Schema, t.Name),
	}
	keys := t.keyList("")
	tuple := placeholders(len(t.KeyColumns))
	inKeys := keyTuple(t, "") + " IN ("

	s.createTable = createTableSQL(t, s.table)
	s.addColumns = "ALTER TABLE " + s.table + " ADD COLUMN "
	s.drop = "DROP TABLE IF EXISTS " + s.table

	s.reserve = byKeys{
		head:  "UPDATE " + s.table + " SET " + reserveSet + " WHERE " + inKeys,
		tuple: tuple,
		tail:  ") AND " + isDue,
	}
	s.readLeases = byKeys{
		head:  "SELECT " + keys + ", `attempts`, `priority`, `scheduled_time`, `reserved_time` FROM " + s.table + " WHERE " + inKeys,
		tuple: tuple,
		tail:  ") AND `lease_token` = ?" + isReserved,
	}
	s.holders = byKeys{
		head:  "SELECT " + keys + ", `lease_token` FROM " + s.table + " WHERE " + inKeys,
		tuple: tuple,
		tail:  ")" + isReserved + " FOR UPDATE",
	}
	fence := func(head, tail string) fenced {
		return fenced{
			oneToken: byKeys{head: head + " WHERE " + inKeys, tuple: tuple, tail: ") AND `lease_token` = ?" + isReserved + tail},
			perToken: byKeys{
				head:  head + " WHERE (" + keys + ", `lease_token`) IN (",
				tuple: placeholders(len(t.KeyColumns) + 1),
				tail:  ")" + isReserved + tail,
			},
		}
	}
	s.heartbeat = fence("UPDATE "+s.table+" SET `lease_expires` = NOW(3) + INTERVAL ? MICROSECOND", "")
	s.held = fence("SELECT "+keys+", `lease_token` FROM "+s.table, "")
	s.heldLocked = fence("SELECT "+keys+", `lease_token` FROM "+s.table, " FOR UPDATE")

	// perJob sets a value of each job's own between head and rest (valued).
	when := " WHEN " + keyTuple(t, "") + " = " + tuple + " THEN ?"
	perJob := func(head, rest string) valued { return valued{head: head, when: when, rest: fence(rest, "")} }
	s.complete = fence("DELETE FROM "+s.table, "")
	s.keepCompleted = perJob("UPDATE "+s.table+" SET `status` = 'success', `completed_time` = NOW(3), `duration` = ",
		", `lease_token` = '', `lease_expires` = NULL")
	s.fail = fence("UPDATE "+s.table+" SET `status` = 'error', `error_message` = ?, `error_stack` = ?, "+
		"`completed_time` = NOW(3), `duration` = ?, `lease_token` = '', `lease_expires` = NULL", "")
	s.retry = perJob("UPDATE "+s.table+" SET `status` = 'pending', `scheduled_time` = NOW(3) + INTERVAL (",
		") MICROSECOND, `completed_time` = NULL, `lease_token` = '', `lease_expires` = NULL, `dispatched_time` = NULL")
	s.release = fence("UPDATE "+s.table+" SET `status` = 'pending', `attempts` = IF(`attempts` > 0, `attempts` - 1, 0), "+
		"`lease_token` = '', `lease_expires` = NULL, `dispatched_time` = NULL", "")
	if len(t.PrimaryKey) > 0 {
		first := quoteIdent(t.PrimaryKey[0])
		s.insertTail = " ON DUPLICATE KEY UPDATE " + first + " = " + first
	}

	// add: the restricted key source minus the target minus the jobs table. NULL keys
	// (possible from a configured key source, or a parent's nullable unique key) are skipped
	// rather than coerced by INSERT IGNORE.
	notNull := make([]string, len(t.KeyColumns))
	for i, c := range t.KeyColumns {
		notNull[i] = "`ks`." + quoteIdent(c.Name) + " IS NOT NULL"
	}
	s.add = restricted{
		head: "INSERT IGNORE INTO " + s.table + " (" + keys + ", `status`, `priority`, `scheduled_time`)" +
			" SELECT " + t.keyList("ks") + ", 'pending', ?, NOW(3) + INTERVAL ? MICROSECOND" +
			" FROM (" + t.KeySource + ") AS `ks` WHERE " + strings.Join(notNull, " AND "),
		tail: " AND NOT EXISTS (SELECT 1 FROM " + s.target + " AS `t` WHERE " + keyEquals(t, "t", "ks") + ")" +
			" AND NOT EXISTS (SELECT 1 FROM " + s.table + " AS `j` WHERE " + keyEquals(t, "j", "ks") + ")",
	}
	// re-pend: success rows whose target row is gone and whose key is in the restricted key
	// source (DataJoint deletes and reinserts them; an UPDATE is atomic).
	s.rePend = restricted{
		head: "UPDATE " + s.table + " AS `j` SET " + rePendSet + " WHERE `j`.`status` = 'success'",
		tail: " AND NOT EXISTS (SELECT 1 FROM " + s.target + " AS `t` WHERE " + keyEquals(t, "t", "j") + ")" +
			" AND EXISTS (SELECT 1 FROM (" + t.KeySource + ") AS `ks` WHERE " + keyEquals(t, "ks", "j") + ")",
	}
	// stale: pending jobs inside the restrictions, created more than the stale timeout ago,
	// whose key is no longer in the unrestricted key source or is already in the target. A
	// single-table DELETE over the stale keys, materialized in a derived table: MariaDB
	// rejects a multi-table DELETE through an alias when the connection has no default
	// database (error 1046), and MySQL forbids reading the target table in a plain subquery.
	s.stale = restricted{
		head: "DELETE FROM " + s.table + " WHERE " + keyTuple(t, "") + " IN (SELECT * FROM (" +
			"SELECT " + t.keyList("j") + " FROM " + s.table + " AS `j`" +
			" WHERE `j`.`status` = 'pending' AND `j`.`created_time` < NOW(3) - INTERVAL ? MICROSECOND",
		tail: " AND (NOT EXISTS (SELECT 1 FROM (" + t.KeySource + ") AS `ks` WHERE " + keyEquals(t, "ks", "j") + ")" +
			" OR EXISTS (SELECT 1 FROM " + s.target + " AS `t` WHERE " + keyEquals(t, "t", "j") + "))" +
			") AS `stale`)",
	}

	// Leases past lease_expires, and reservations without a lease (made by DataJoint) reserved
	// longer ago than the orphan timeout (its microseconds are the two arguments). One UPDATE
	// through the status index; priority, attempts, created_time and the history stay.
	s.recoverExpired = "UPDATE " + s.table + " SET `status` = 'pending', `lease_token` = '', `lease_expires` = NULL, `dispatched_time` = NULL" +
		" WHERE `status` = 'reserved' AND (`lease_expires` < NOW(3)" +
		" OR (`lease_expires` IS NULL AND ? > 0 AND `reserved_time` < NOW(3) - INTERVAL ? MICROSECOND))"
	s.markDispatched = byKeys{
		head:  "UPDATE " + s.table + " SET `dispatched_time` = NOW(3) - INTERVAL ? MICROSECOND WHERE " + inKeys,
		tuple: tuple,
		tail:  ") AND `status` = 'pending' AND (`reserved_time` IS NULL OR `reserved_time` < NOW(3) - INTERVAL ? MICROSECOND)",
	}
	// Both read one entry of the (status, priority, scheduled_time) index: MariaDB has no skip
	// scan, so a MIN over every priority at once would read every pending row.
	s.nextPriority = "SELECT MIN(`priority`) FROM " + s.table + " WHERE `status` = 'pending' AND `priority` > ?"
	// Claim: one priority at a time, a range of the same index (see DueForDispatch).
	s.claim = "SELECT " + keys + " FROM " + s.table +
		" WHERE `status` = 'pending' AND `priority` = ? AND `scheduled_time` <= NOW(3)" +
		" ORDER BY `scheduled_time`, " + keys + " LIMIT ? FOR UPDATE SKIP LOCKED"
	s.dueOf = "SELECT COUNT(*) FROM (SELECT 1 FROM " + s.table +
		" WHERE `status` = 'pending' AND `priority` = ? AND `scheduled_time` <= NOW(3) LIMIT ?) AS `due`"
	s.nextDueOf = "SELECT MIN(`scheduled_time`) FROM " + s.table +
		" WHERE `status` = 'pending' AND `priority` = ? AND `scheduled_time` > NOW(3)"
	s.ignore = "INSERT INTO " + s.table + " (" + keys + ", `status`, `priority`) VALUES (" +
		strings.TrimSuffix(strings.Repeat("?, ", len(t.KeyColumns)), ", ") + ", 'ignore', ?)" +
		" ON DUPLICATE KEY UPDATE `status` = 'ignore', `lease_token` = '', `lease_expires` = NULL"
	s.deleteJobs = "DELETE FROM " + s.table
	s.retryErrors = "UPDATE " + s.table + " SET " + retryErrorsSet
	s.progress = "SELECT `status`, COUNT(*) FROM " + s.table + " GROUP BY `status`"

	s.selectJobs = jobsSelect{
		jetjobs:   "SELECT " + keys + ", " + jobColumns + " FROM " + s.table,
		dataJoint: "SELECT " + keys + ", " + dataJointJobColumns + " FROM " + s.table,
	}
	s.seekJobs = jobsSelect{
		jetjobs:   s.selectJobs.jetjobs + " FORCE INDEX (" + statusIndex + ")",
		dataJoint: s.selectJobs.dataJoint + " FORCE INDEX (" + statusIndex + ")",
	}
	s.selectDue = "SELECT " + keys + ", `priority`, `scheduled_time` FROM " + s.table
	s.selectJob = jobsSelect{
		jetjobs:   "SELECT " + keys + ", " + jobColumns + ", `error_stack` FROM " + s.table + " WHERE " + keyEquals(t, "", ""),
		dataJoint: "SELECT " + keys + ", " + dataJointJobColumns + ", `error_stack` FROM " + s.table + " WHERE " + keyEquals(t, "", ""),
	}
	// The order workers take jobs in, then the key for a stable listing.
	s.orderJobs = " ORDER BY `priority`, `scheduled_time`, " + keys
	s.orderDue = " ORDER BY `scheduled_time`, " + keys
	s.dueAfter = afterCondition(t)
	pageCols := []string{"`priority`", "`scheduled_time`"}
	for _, c := range t.KeyColumns {
		pageCols = append(pageCols, quoteIdent(c.Name))
	}
	s.pageAfter = lexicallyAfter(pageCols)
	s.errorGroups = "SELECT `error_message`, COUNT(*), MAX(`completed_time`) FROM " + s.table + " WHERE `status` = 'error'"
	s.errorGroupsTail = " GROUP BY `error_message` ORDER BY COUNT(*) DESC, `error_message` LIMIT ?"
	return s
}

// addColumnsSQL is the ALTER TABLE adding the columns given by their DDL: ADD only, never a
// DROP or a MODIFY.
func (s *statements) addColumnsSQL(columnsDDL []string) string {
	return s.addColumns + strings.Join(columnsDDL, ", ADD COLUMN ")
}

// retryErrorsSQL is retryErrors over a filter's conditions c, to which it adds its guard: only
// error rows move, whatever else the filter says.
func (s *statements) retryErrorsSQL(c *conds) string {
	c.add("`status` = 'error'")
	return s.retryErrors + c.where()
}

// createTableSQL is the CREATE TABLE IF NOT EXISTS of the jobs table: the key columns with the
// target's column types, DataJoint's columns, jetjobs' columns (ddl.go), the primary key and
// DataJoint's index, and the comment 'Job queue for `schema`.`target`'.
func createTableSQL(t *Target, table string) string {
	var lines []string
	for _, c := range t.KeyColumns {
		line := quoteIdent(c.Name) + " " + c.ColumnType
		if isStringType(c.DataType) && c.Charset != "" && (c.Charset != "utf8mb4" || c.Collation != "utf8mb4_general_ci") {
			// Keep the target's character set and collation, so the key compares as in the target.
			line += " CHARACTER SET " + c.Charset + " COLLATE " + c.Collation
		}
		line += " NOT NULL"
		// DataJoint declares a key column with its DataJoint type (original_type), which it keeps
		// in the comment; other key columns have no comment.
		if typ := dataJointTypeComment.FindString(c.Comment); typ != "" {
			line += " COMMENT " + quoteString(typ)
		}
		lines = append(lines, line)
	}
	lines = append(lines, dataJointColumnsDDL...)
	for _, c := range jetjobsColumns {
		lines = append(lines, c.ddl)
	}
	lines = append(lines, "PRIMARY KEY ("+t.keyList("")+")", jobsIndexDDL)
	comment := "Job queue for " + quoteIdent(t.Schema) + "." + quoteIdent(t.Name)
	return "CREATE TABLE IF NOT EXISTS " + table + " (\n  " + strings.Join(lines, ",\n  ") + "\n) " +
		jobsTableOptions + " COMMENT=" + quoteString(comment)
}

// configuredKeySource wraps a configured key source as a derived table yielding the key
// columns by name: SELECT `ks`.`a`, … FROM (<configured>) AS ks.
func configuredKeySource(t *Target, configured string) string {
	return "SELECT " + t.keyList("ks") + " FROM (" + configured + ") AS ks"
}

// keySourceProbe runs the key source without reading a row: a key source that does not
// produce the key columns, or that the user cannot read, fails at once.
func keySourceProbe(t *Target) string {
	return "SELECT " + t.keyList("ks") + " FROM (" + t.KeySource + ") AS ks LIMIT 0"
}

// derivedKeySource is DataJoint's default key source: the join of the primary parents, each
// projected on its referenced columns and renamed onto the target's key columns, joined on the
// key columns they share:
//
//	SELECT p1.`subject_id` AS `subject_id`, p2.`id` AS `param_id`
//	FROM `s`.`session` AS p1 JOIN `s`.`paramset` AS p2 ON TRUE
//
// DISTINCT is added only when a parent's referenced columns do not cover one of its unique
// indexes; otherwise the join cannot repeat a key and DISTINCT would only cost a temporary
// table.
func derivedKeySource(t *Target, parents []parent) string {
	provider := map[string]string{} // key column → the first parent column giving it
	var from strings.Builder
	distinct := false
	for i, p := range parents {
		alias := quoteIdent(fmt.Sprintf("p%d", i+1))
		var on []string
		for k, col := range p.columns {
			ref := alias + "." + quoteIdent(p.refs[k])
			if prev, ok := provider[col]; ok {
				on = append(on, ref+" = "+prev)
			} else {
				provider[col] = ref
			}
		}
		table := qualified(p.schema, p.table) + " AS " + alias
		switch {
		case i == 0:
			from.WriteString(table)
		case len(on) == 0:
			from.WriteString(" CROSS JOIN " + table)
		default:
			from.WriteString(" JOIN " + table + " ON " + strings.Join(on, " AND "))
		}
		distinct = distinct || !p.unique
	}
	selects := make([]string, len(t.KeyColumns))
	for i, c := range t.KeyColumns {
		selects[i] = provider[c.Name] + " AS " + quoteIdent(c.Name)
	}
	q := "SELECT "
	if distinct {
		q += "DISTINCT "
	}
	return q + strings.Join(selects, ", ") + " FROM " + from.String()
}

// Builders of the statements whose text depends on how many keys they address.

// byKeys is a statement over a list of keys: head, then one tuple of placeholders per key,
// comma-separated, then tail. A row-constructor IN list is a range scan of the primary key.
type byKeys struct{ head, tuple, tail string }

// sql is the statement for n keys.
func (s byKeys) sql(n int) string {
	var b strings.Builder
	b.Grow(len(s.head) + n*(len(s.tuple)+2) + len(s.tail))
	b.WriteString(s.head)
	writeList(&b, s.tuple, n)
	b.WriteString(s.tail)
	return b.String()
}

// keyArgs is args followed by the values of keys, in order: the arguments of a byKeys
// statement after its head's.
func keyArgs(keys []Key, args ...any) []any {
	for _, k := range keys {
		args = append(args, k...)
	}
	return args
}

// writeList writes n copies of item separated by ", ".
func writeList(b *strings.Builder, item string, n int) {
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(item)
	}
}

// fenced is a lease holder's statement: it addresses rows by primary key and lease token,
// still reserved. When every lease comes from one reservation statement they share a token,
// and the cheaper oneToken form is used: "(`a`) IN (…) AND `lease_token` = ?"; otherwise
// perToken: "(`a`, `lease_token`) IN ((?, ?), …)". Never by token alone: lease_token has no
// index, so that would scan the table.
type fenced struct{ oneToken, perToken byKeys }

// sql returns the statement for keys and their tokens, with their arguments appended to args.
func (s fenced) sql(keys []Key, tokens []string, args []any) (string, []any) {
	if sameToken(tokens) {
		for _, k := range keys {
			args = append(args, k...)
		}
		return s.oneToken.sql(len(keys)), append(args, tokens[0])
	}
	for i, k := range keys {
		args = append(append(args, k...), tokens[i])
	}
	return s.perToken.sql(len(keys)), args
}

func sameToken(tokens []string) bool {
	for _, tok := range tokens {
		if tok != tokens[0] {
			return false
		}
	}
	return true
}

// valued is a fenced write that sets one value per job: head, the value, then rest. The value
// is one placeholder when every job has the same, else "CASE WHEN (`a`, `b`) = (?, ?) THEN ? …
// END" (when is one WHEN).
type valued struct {
	head, when string
	rest       fenced
}

// sql returns the statement giving keys[i] the value values[i], fenced by tokens.
func (s valued) sql(keys []Key, tokens []string, values []any) (string, []any) {
	var b strings.Builder
	b.WriteString(s.head)
	var args []any
	same := true
	for _, v := range values {
		same = same && v == values[0]
	}
	if same {
		b.WriteString("?")
		args = append(args, values[0])
	} else {
		b.WriteString("CASE")
		for i, k := range keys {
			b.WriteString(s.when)
			args = append(append(args, k...), values[i])
		}
		b.WriteString(" END")
	}
	rest, args := s.rest.sql(keys, tokens, args)
	return b.String() + rest, args
}

// insertTargetSQL is the multi-row INSERT of n target rows of the given columns into the
// target; a row whose primary key is already there is left as it is (insertTail).
func (s *statements) insertTargetSQL(columns []string, n int) string {
	quoted := make([]string, len(columns))
	for i, c := range columns {
		quoted[i] = quoteIdent(c)
	}
	var b strings.Builder
	b.WriteString("INSERT INTO " + s.target + " (" + strings.Join(quoted, ", ") + ") VALUES ")
	writeList(&b, inList(len(columns)), n)
	b.WriteString(s.insertTail)
	return b.String()
}

// Builders of conditions: a caller's filter and restrictions.

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

// and is " AND a AND b", or "" when there is no condition: more conditions for a WHERE clause
// that has some.
func (c *conds) and() string {
	if len(c.sql) == 0 {
		return ""
	}
	return " AND " + strings.Join(c.sql, " AND ")
}

// restricted is a statement whose WHERE clause holds a caller's restrictions among its fixed
// conditions: head (ending in a condition), the restrictions, tail.
type restricted struct{ head, tail string }

// sql is the statement with the restrictions' conditions c.
func (s restricted) sql(c *conds) string { return s.head + c.and() + s.tail }

// addRestrictions adds rs over the key columns of the relation named alias ("" for the one
// table of the statement): a restriction's SQL as written, in parentheses (checked by
// CheckRestriction), and its Equal pairs as "alias.`col` = ?".
func (t *Target) addRestrictions(c *conds, alias string, rs []Restriction) error {
	prefix := aliasPrefix(alias)
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
		if r.AnyOf != nil {
			if err := t.addAnyOf(c, prefix, r.AnyOf); err != nil {
				return err
			}
		}
	}
	return nil
}

// addAnyOf adds the condition that a key matches one of maps: the maps are grouped by the
// columns they name, each group is one IN list over those columns (a range of any index that
// starts with them), and the groups are ORed:
//
//	(`a` IN (?, ?) OR (`a`, `b`) IN ((?, ?), (?, ?)))
//
// No maps: FALSE.
func (t *Target) addAnyOf(c *conds, prefix string, maps []map[string]any) error {
	if len(maps) == 0 {
		c.add("FALSE")
		return nil
	}
	type group struct {
		cols []int
		vals []any
		n    int
	}
	var groups []*group
	byCols := map[string]*group{}
	for _, m := range maps {
		if len(m) == 0 {
			return t.badKey("", "a key of the list names no column (name some key columns: %s)", t.keyNames())
		}
		cols, vals, err := t.equalMap(m)
		if err != nil {
			return err
		}
		id := fmt.Sprint(cols)
		g := byCols[id]
		if g == nil {
			g = &group{cols: cols}
			byCols[id] = g
			groups = append(groups, g)
		}
		g.vals = append(g.vals, vals...)
		g.n++
	}
	var terms []string
	var args []any
	for _, g := range groups {
		names := make([]string, len(g.cols))
		for k, i := range g.cols {
			names[k] = prefix + quoteIdent(t.KeyColumns[i].Name)
		}
		var b strings.Builder
		if len(names) == 1 {
			b.WriteString(names[0])
		} else {
			b.WriteString("(" + strings.Join(names, ", ") + ")")
		}
		b.WriteString(" IN (")
		writeList(&b, placeholders(len(names)), g.n)
		b.WriteString(")")
		terms = append(terms, b.String())
		args = append(args, g.vals...)
	}
	c.add("("+strings.Join(terms, " OR ")+")", args...)
	return nil
}

// filterConds builds the filter's conditions over the jobs table.
func (t *Target) filterConds(f Filter) (*conds, error) {
	c := &conds{}
	if len(f.Statuses) > 0 {
		args := make([]any, len(f.Statuses))
		for i, s := range f.Statuses {
			if !s.Valid() {
				return nil, fmt.Errorf("unknown status %q (want one of %v)", s, Statuses)
			}
			args[i] = string(s)
		}
		c.add("`status` IN "+inList(len(args)), args...)
	}
	if f.MaxPriority != nil {
		c.add("`priority` <= ?", *f.MaxPriority)
	}
	if f.DueOnly {
		c.add("`scheduled_time` <= NOW(3)")
	}
	if f.ErrorMessage != nil {
		c.add("`error_message` = ?", *f.ErrorMessage)
	}
	if err := t.addRestrictions(c, "", f.Restrictions); err != nil {
		return nil, err
	}
	return c, nil
}

// afterCondition is "(scheduled_time, key…) > (?, ?…)" spelled out lexicographically:
// "`scheduled_time` > ? OR (`scheduled_time` = ? AND `a` > ?) OR (… AND `a` = ? AND `b` > ?)".
// MariaDB seeks a range of the status index for this form, where it would scan for the row
// constructor.
func afterCondition(t *Target) string {
	cols := []string{"`scheduled_time`"}
	for _, c := range t.KeyColumns {
		cols = append(cols, quoteIdent(c.Name))
	}
	return lexicallyAfter(cols)
}

// lexicallyAfter is "(cols…) > (?, ?…)" spelled out term by term (see afterCondition).
func lexicallyAfter(cols []string) string {
	terms := make([]string, len(cols))
	for i := range cols {
		var parts []string
		for _, eq := range cols[:i] {
			parts = append(parts, eq+" = ?")
		}
		parts = append(parts, cols[i]+" > ?")
		terms[i] = "(" + strings.Join(parts, " AND ") + ")"
	}
	return "(" + strings.Join(terms, " OR ") + ")"
}

// afterArgs are the arguments of afterCondition for the position (scheduled, key).
func afterArgs(scheduled time.Time, key Key) []any {
	return lexicalArgs(append([]any{scheduled}, key...))
}

// lexicalArgs are the arguments of lexicallyAfter for the position values.
func lexicalArgs(values []any) []any {
	var args []any
	for i := range values {
		args = append(args, values[:i+1]...)
	}
	return args
}

// dueConds are the conditions of DueForDispatch within one priority: due pending jobs never
// published since they became pending, or published and presumed lost (see DueFilter). Each
// is a range of the (status, priority, scheduled_time) index.
func (s *statements) dueConds(f DueFilter, priority int) *conds {
	c := &conds{}
	c.add("`status` = 'pending' AND `priority` = ? AND `scheduled_time` <= NOW(3)", priority)
	if f.After != nil && f.After.Priority == priority {
		c.add(s.dueAfter, afterArgs(f.After.ScheduledTime, f.After.Key)...)
	}
	republishAfter := f.RedispatchAfter
	if f.Busy != nil && !slices.Contains(f.Busy, priority) {
		republishAfter = f.LostAfter // its messages are gone from the stream
	}
	if republishAfter > 0 {
		c.add("(`dispatched_time` IS NULL OR `dispatched_time` < NOW(3) - INTERVAL ? MICROSECOND)", micros(republishAfter))
	} else {
		c.add("`dispatched_time` IS NULL")
	}
	return c
}

// limit is " LIMIT ?" with n appended to args, or nothing when n is 0 (no limit).
func limit(n int, args []any) (string, []any) {
	if n <= 0 {
		return "", args
	}
	return " LIMIT ?", append(args, n)
}

// Fragments.

// keyList is "alias.`a`, alias.`b`" over the key columns ("`a`, `b`" without an alias).
func (t *Target) keyList(alias string) string {
	prefix := aliasPrefix(alias)
	parts := make([]string, len(t.KeyColumns))
	for i, c := range t.KeyColumns {
		parts[i] = prefix + quoteIdent(c.Name)
	}
	return strings.Join(parts, ", ")
}

// keyTuple is "(alias.`a`, alias.`b`)", or "alias.`a`" for a one-column key.
func keyTuple(t *Target, alias string) string {
	if len(t.KeyColumns) == 1 {
		return t.keyList(alias)
	}
	return "(" + t.keyList(alias) + ")"
}

// keyEquals is "alias.`a` = ? AND alias.`b` = ?", or the correlation "alias.`a` = other.`a`
// AND …" of a subquery when other is given.
func keyEquals(t *Target, alias, other string) string {
	parts := make([]string, len(t.KeyColumns))
	for i, c := range t.KeyColumns {
		left := aliasPrefix(alias) + quoteIdent(c.Name)
		if other == "" {
			parts[i] = left + " = ?"
		} else {
			parts[i] = left + " = " + aliasPrefix(other) + quoteIdent(c.Name)
		}
	}
	return strings.Join(parts, " AND ")
}

// aliasPrefix is "`alias`." to qualify a column, or "" for no alias.
func aliasPrefix(alias string) string {
	if alias == "" {
		return ""
	}
	return quoteIdent(alias) + "."
}

// inList is "(?, ?, …)" for n values.
func inList(n int) string {
	return "(" + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + ")"
}

// placeholders is "(?, ?)" for n values, or "?" for one.
func placeholders(n int) string {
	if n == 1 {
		return "?"
	}
	return inList(n)
}
