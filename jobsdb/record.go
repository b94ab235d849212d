package jobsdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// OutcomeKind is how a reserved job ended.
type OutcomeKind int

// The outcomes of a reserved job.
const (
	OutcomeSuccess OutcomeKind = iota // deleted, or 'success' with keep_completed
	OutcomeError                      // 'error' with message and stack
	OutcomeRetry                      // back to pending, due after RetryAfter
	OutcomeRelease                    // back to pending, due now (interrupted, not failed)
)

func (k OutcomeKind) String() string {
	switch k {
	case OutcomeSuccess:
		return "success"
	case OutcomeError:
		return "error"
	case OutcomeRetry:
		return "retry"
	case OutcomeRelease:
		return "release"
	}
	return fmt.Sprintf("OutcomeKind(%d)", int(k))
}

// Row is one target row to insert with a successful completion; key columns are filled in
// from the job's key when absent.
type Row map[string]any

// Outcome is the result of running one reserved job.
type Outcome struct {
	Lease      Lease
	Kind       OutcomeKind
	Duration   time.Duration
	Message    string        // OutcomeError: truncated to 2047 with "...truncated"
	Stack      string        // OutcomeError: stored in DataJoint's blob encoding
	RetryAfter time.Duration // OutcomeRetry
	Rows       []Row         // OutcomeSuccess: target rows inserted in the same transaction
	// MaybeRecorded says an earlier Record of this outcome failed with ErrAmbiguous: its
	// commit may have landed. A job row that is then no longer reserved by this lease, and
	// not reserved by another one either, is taken as recorded by that attempt (applied,
	// nothing written again). The caller retries with it set right after the failure, while
	// the lease is still valid, so that nobody else can have moved the job meanwhile.
	MaybeRecorded bool
}

// DataJoint's error_message: at most 2047 characters, longer ones cut to end in "...truncated"
// (exactly 2047 long).
const (
	ErrorMessageLength = 2047
	truncatedSuffix    = "...truncated"
)

// TruncateMessage is the error_message stored for msg: invalid UTF-8 replaced, and cut to
// ErrorMessageLength characters (not bytes) ending in "...truncated", as DataJoint does.
func TruncateMessage(msg string) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if utf8.RuneCountInString(msg) <= ErrorMessageLength {
		return msg
	}
	return string([]rune(msg)[:ErrorMessageLength-len(truncatedSuffix)]) + truncatedSuffix
}

// Record writes outcomes in one transaction, each fenced by its lease token. applied[i] is
// false when outcome i's lease was taken over (nothing was written for it).
//
// Everything is checked before anything is written: a bad key, an unknown target column or a
// key column of a row that differs from the job's key is ErrBadKey and writes nothing. A
// deadlock rolls the transaction back and runs it again.
func (j *Jobs) Record(ctx context.Context, outcomes []Outcome) (applied []bool, err error) {
	if len(outcomes) == 0 {
		return []bool{}, nil
	}
	plan, err := j.planRecord(outcomes)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: record %s: %w", j.t.FullName(), err)
	}
	err = j.adopting(ctx, func() error { return j.recordBatch(ctx, plan, &applied) })
	if err != nil {
		return nil, fmt.Errorf("jobsdb: record %s: %w", j.t.FullName(), j.noJobsTable(err))
	}
	return applied, nil
}

// recordBatch runs Record's transaction, again after a deadlock, setting *applied.
func (j *Jobs) recordBatch(ctx context.Context, plan *recordPlan, applied *[]bool) error {
	return retryTransient(ctx, func() error {
		// First optimistically, as if every lease were still held (the common case): the
		// writes are guarded by the tokens anyway, and a changed-row count that falls short
		// means some lease was lost. Then that transaction is rolled back and the batch is
		// recorded again after locking the rows it still holds. A batch that may have been
		// recorded already is never written optimistically.
		for _, optimistic := range []bool{!plan.maybeRecorded, false} {
			ctx, cancel := j.bounded(ctx)
			defer cancel()
			tx, err := j.db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			*applied, err = j.record(ctx, tx, plan, optimistic)
			if err != nil {
				tx.Rollback()
				if optimistic && errors.Is(err, errRecordChanged) {
					continue
				}
				return err
			}
			if err := tx.Commit(); err != nil {
				if IsAmbiguous(err) {
					return fmt.Errorf("%w: commit: %w", ErrAmbiguous, err)
				}
				return err
			}
			return nil
		}
		return nil
	})
}

// RecordTx is Record inside the caller's transaction (the caller commits).
//
// The caller's own writes for an outcome whose lease turns out lost are the caller's to undo;
// LockLeases tells before anything is written.
func (j *Jobs) RecordTx(ctx context.Context, tx *sql.Tx, outcomes []Outcome) (applied []bool, err error) {
	plan, err := j.planRecord(outcomes)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: record %s: %w", j.t.FullName(), err)
	}
	if applied, err = j.record(ctx, tx, plan, false); err != nil {
		return nil, fmt.Errorf("jobsdb: record %s: %w", j.t.FullName(), j.noJobsTable(err))
	}
	return applied, nil
}

// RecordOne records a single outcome; a lost lease is ErrLeaseLost.
func (j *Jobs) RecordOne(ctx context.Context, o Outcome) error {
	applied, err := j.Record(ctx, []Outcome{o})
	if err != nil {
		return err
	}
	if !applied[0] {
		return fmt.Errorf("jobsdb: record %s %s of %s: %w: the job was recovered, deleted or ignored meanwhile; nothing was written",
			o.Kind, j.t.FullName(), j.t.KeyString(o.Lease.Key), ErrLeaseLost)
	}
	return nil
}

// LockLeases locks, in the caller's transaction, the rows of the leases still held, and
// reports which are (held[i] for leases[i]). A handler writing its own target rows calls it
// first, so that a lost lease is known before anything is written.
func (j *Jobs) LockLeases(ctx context.Context, tx *sql.Tx, leases []Lease) (held []bool, err error) {
	keys, tokens, err := j.leaseKeys(leases)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: lock leases %s: %w", j.t.FullName(), err)
	}
	held = make([]bool, len(leases))
	for _, c := range chunks(len(keys), maxKeysPerStatement) {
		set, err := j.held(ctx, tx, keys[c[0]:c[1]], tokens[c[0]:c[1]], true)
		if err != nil {
			return nil, fmt.Errorf("jobsdb: lock leases %s: %w", j.t.FullName(), j.noJobsTable(err))
		}
		for i := c[0]; i < c[1]; i++ {
			held[i] = set[keyID(keys[i])+tokens[i]]
		}
	}
	return held, nil
}

// recordPlan is a checked batch of outcomes.
type recordPlan struct {
	outcomes []Outcome
	keys     []Key    // canonical lease keys
	tokens   []string // lease tokens
	rows     [][]Row  // per outcome: target rows with key columns filled and checked
	// maybeRecorded is set when some outcome has MaybeRecorded.
	maybeRecorded bool
}

func (j *Jobs) planRecord(outcomes []Outcome) (*recordPlan, error) {
	leases := make([]Lease, len(outcomes))
	for i, o := range outcomes {
		leases[i] = o.Lease
	}
	keys, tokens, err := j.leaseKeys(leases)
	if err != nil {
		return nil, err
	}
	p := &recordPlan{outcomes: outcomes, keys: keys, tokens: tokens, rows: make([][]Row, len(outcomes))}
	metadata := j.t.hasJobMetadata()
	now := time.Now()
	seen := make(map[string]bool, len(outcomes))
	for i, o := range outcomes {
		id := keyID(keys[i])
		if seen[id] {
			return nil, fmt.Errorf("two outcomes for %s in one batch", j.t.KeyString(keys[i]))
		}
		seen[id] = true
		p.maybeRecorded = p.maybeRecorded || o.MaybeRecorded
		switch o.Kind {
		case OutcomeSuccess:
			primaryKeys := make(map[string]bool, len(o.Rows))
			for _, r := range o.Rows {
				row, err := j.t.targetRow(keys[i], r)
				if err != nil {
					return nil, err
				}
				pk := j.t.rowPrimaryKey(row)
				if primaryKeys[pk] {
					return nil, j.t.badKey("", "two target rows for %s have the same primary key (%s): each row must be a row of its own",
						j.t.KeyString(keys[i]), pk)
				}
				primaryKeys[pk] = true
				if metadata {
					j.addJobMetadata(row, now, o.Duration)
				}
				p.rows[i] = append(p.rows[i], row)
			}
		case OutcomeError, OutcomeRetry, OutcomeRelease:
			if len(o.Rows) > 0 {
				return nil, fmt.Errorf("outcome %s of %s has target rows; only a success inserts rows", o.Kind, j.t.KeyString(keys[i]))
			}
		default:
			return nil, fmt.Errorf("outcome of %s: unknown kind %v", j.t.KeyString(keys[i]), o.Kind)
		}
	}
	return p, nil
}

// DataJoint's hidden job metadata columns, which a target declared with
// config.jobs.add_job_metadata has (datajoint-python declare.py, autopopulate.py _populate1).
const (
	jobStartTimeColumn = "_job_start_time"
	jobDurationColumn  = "_job_duration"
	jobVersionColumn   = "_job_version"
)

// hasJobMetadata reports whether the target has DataJoint's hidden job metadata columns.
func (t *Target) hasJobMetadata() bool {
	for _, name := range []string{jobStartTimeColumn, jobDurationColumn, jobVersionColumn} {
		if _, ok := t.column(name); !ok {
			return false
		}
	}
	return true
}

// addJobMetadata fills DataJoint's job metadata of a target row, as DataJoint's populate
// does after make(): when the computation started (local wall-clock time, as DataJoint's
// client writes it; here the outcome's recording time less its duration), how long it took in
// seconds, and the version (jobs.version_method). Values the row sets itself are kept.
func (j *Jobs) addJobMetadata(row Row, recorded time.Time, duration time.Duration) {
	for name, v := range map[string]any{
		jobStartTimeColumn: recorded.Add(-duration),
		jobDurationColumn:  duration.Seconds(),
		jobVersionColumn:   j.opts.Identity.Version,
	} {
		if _, ok := row[name]; !ok {
			row[name] = v
		}
	}
}

// CheckRows checks target rows for the job of key as Record would: every column a target
// column, key columns equal to the job's (filled in when absent).
func (t *Target) CheckRows(key Key, rows []Row) error {
	k, err := t.CheckKey(key)
	if err != nil {
		return err
	}
	for _, r := range rows {
		if _, err := t.targetRow(k, r); err != nil {
			return err
		}
	}
	return nil
}

// targetRow checks one target row of the job of key (canonical) and returns it with the key
// columns filled in and typed, and nested JSON values (maps, slices) as JSON text.
func (t *Target) targetRow(key Key, r Row) (Row, error) {
	codecs, err := t.keyCodecs()
	if err != nil {
		return nil, err
	}
	out := make(Row, len(r)+len(key))
	for name, v := range r {
		if _, ok := t.column(name); !ok {
			return nil, t.badKey(name, "not a column of the target (row for %s)", t.KeyString(key))
		}
		switch v.(type) {
		case map[string]any, []any:
			b, err := json.Marshal(v)
			if err != nil {
				return nil, t.badKey(name, "value does not encode as JSON: %v", err)
			}
			v = string(b)
		case json.Number:
			v = string(v.(json.Number))
		}
		out[name] = v
	}
	for i, c := range codecs {
		v, ok := r[c.name]
		if !ok {
			out[c.name] = key[i]
			continue
		}
		cv, err := c.fromGo(v)
		if err != nil {
			return nil, t.badKey(c.name, "%v (row for %s)", err, t.KeyString(key))
		}
		if keyID(Key{cv}) != keyID(Key{key[i]}) {
			return nil, t.badKey(c.name, "row for %s has the value %v", t.KeyString(key), c.jsonValue(cv))
		}
		out[c.name] = cv
	}
	return out, nil
}

// rowPrimaryKey describes a checked target row's primary key values, for finding duplicates.
func (t *Target) rowPrimaryKey(row Row) string {
	parts := make([]string, len(t.PrimaryKey))
	for i, c := range t.PrimaryKey {
		parts[i] = fmt.Sprintf("%s=%v", c, row[c])
	}
	return strings.Join(parts, ", ")
}

// record runs a checked batch in tx: it locks the rows still held, inserts the target rows
// of the held successes, then moves each kind's held rows in one statement per 1,000 keys
// (errors: one per row, their messages differ).
// record writes the plan in tx. Unless optimistic, it first locks the rows whose leases are
// still held and writes only those; optimistic assumes every lease held, and a write that then
// changes fewer rows than expected fails with errRecordChanged.
func (j *Jobs) record(ctx context.Context, tx *sql.Tx, p *recordPlan, optimistic bool) ([]bool, error) {
	applied := make([]bool, len(p.outcomes))
	// done marks outcomes an earlier, ambiguous attempt recorded: applied, not written again.
	done := make([]bool, len(p.outcomes))
	if optimistic {
		for i := range applied {
			applied[i] = true
		}
	} else {
		for _, c := range chunks(len(p.keys), maxKeysPerStatement) {
			holders, err := j.holders(ctx, tx, p.keys[c[0]:c[1]])
			if err != nil {
				return nil, err
			}
			for i := c[0]; i < c[1]; i++ {
				holder, reserved := holders[keyID(p.keys[i])]
				applied[i] = reserved && holder == p.tokens[i]
				if !reserved && p.outcomes[i].MaybeRecorded {
					applied[i], done[i] = true, true
				}
			}
		}
	}
	byKind := map[OutcomeKind][]int{}
	var rows []Row
	for i, o := range p.outcomes {
		if !applied[i] || done[i] {
			continue
		}
		byKind[o.Kind] = append(byKind[o.Kind], i)
		if o.Kind == OutcomeSuccess {
			rows = append(rows, p.rows[i]...)
		}
	}
	if err := j.insertTargetRows(ctx, tx, rows); err != nil {
		return nil, err
	}
	steps := []struct {
		kind OutcomeKind
		run  func(context.Context, *sql.Tx, *recordPlan, []int) error
	}{
		{OutcomeSuccess, j.recordSuccess},
		{OutcomeError, j.recordError},
		{OutcomeRetry, j.recordRetry},
		{OutcomeRelease, j.recordRelease},
	}
	for _, s := range steps {
		idx := byKind[s.kind]
		for _, c := range chunks(len(idx), maxKeysPerStatement) {
			if err := s.run(ctx, tx, p, idx[c[0]:c[1]]); err != nil {
				return nil, fmt.Errorf("%s: %w", s.kind, err)
			}
		}
	}
	return applied, nil
}

// leasesOf returns the keys and tokens of the outcomes idx.
func (p *recordPlan) leasesOf(idx []int) ([]Key, []string) {
	keys := make([]Key, len(idx))
	tokens := make([]string, len(idx))
	for n, i := range idx {
		keys[n], tokens[n] = p.keys[i], p.tokens[i]
	}
	return keys, tokens
}

// exec runs one statement of a batch that must change exactly want rows: the rows are locked,
// so anything else means the table changed under the lock, and the transaction is abandoned.
func exec(ctx context.Context, tx *sql.Tx, want int, q string, args []any) error {
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n != int64(want) {
		return fmt.Errorf("%w: changed %d rows of %d locked ones", errRecordChanged, n, want)
	}
	return nil
}

// recordSuccess: reserved → deleted, or 'success' with completed_time and duration.
func (j *Jobs) recordSuccess(ctx context.Context, tx *sql.Tx, p *recordPlan, idx []int) error {
	keys, tokens := p.leasesOf(idx)
	if !j.opts.KeepCompleted {
		q, args := j.stmt.complete.sql(keys, tokens, nil)
		return exec(ctx, tx, len(idx), q, args)
	}
	durations := make([]any, len(idx))
	for n, i := range idx {
		durations[n] = p.outcomes[i].Duration.Seconds()
	}
	q, args := j.stmt.keepCompleted.sql(keys, tokens, durations)
	return exec(ctx, tx, len(idx), q, args)
}

// recordError: reserved → error, one statement per job (each has its own message and stack).
func (j *Jobs) recordError(ctx context.Context, tx *sql.Tx, p *recordPlan, idx []int) error {
	for _, i := range idx {
		o := p.outcomes[i]
		var stack any
		if o.Stack != "" {
			stack = EncodeStack(o.Stack)
		}
		q, args := j.stmt.fail.sql(p.keys[i:i+1], p.tokens[i:i+1], []any{TruncateMessage(o.Message), stack, o.Duration.Seconds()})
		if err := exec(ctx, tx, 1, q, args); err != nil {
			return err
		}
	}
	return nil
}

// recordRetry: reserved → pending, due after each outcome's RetryAfter.
func (j *Jobs) recordRetry(ctx context.Context, tx *sql.Tx, p *recordPlan, idx []int) error {
	keys, tokens := p.leasesOf(idx)
	delays := make([]any, len(idx))
	for n, i := range idx {
		delays[n] = micros(max(p.outcomes[i].RetryAfter, 0))
	}
	q, args := j.stmt.retry.sql(keys, tokens, delays)
	return exec(ctx, tx, len(idx), q, args)
}

// recordRelease: reserved → pending, due as it was; the interrupted attempt is given back.
func (j *Jobs) recordRelease(ctx context.Context, tx *sql.Tx, p *recordPlan, idx []int) error {
	keys, tokens := p.leasesOf(idx)
	q, args := j.stmt.release.sql(keys, tokens, nil)
	return exec(ctx, tx, len(idx), q, args)
}

// maxInsertArgs bounds the values of one INSERT (a prepared statement takes 65,535).
const maxInsertArgs = 60000

// insertTargetRows inserts rows into the target: one multi-row INSERT per set of columns. A
// row whose primary key is already there is left as it is (someone else finished the key).
func (j *Jobs) insertTargetRows(ctx context.Context, tx *sql.Tx, rows []Row) error {
	groups := map[string][]Row{}
	var order []string
	for _, r := range rows {
		cols := make([]string, 0, len(r))
		for name := range r {
			cols = append(cols, name)
		}
		sort.Strings(cols)
		sig := strings.Join(cols, "\x00")
		if _, ok := groups[sig]; !ok {
			order = append(order, sig)
		}
		groups[sig] = append(groups[sig], r)
	}
	for _, sig := range order {
		cols := strings.Split(sig, "\x00")
		group := groups[sig]
		perStatement := max(1, min(maxKeysPerStatement, maxInsertArgs/len(cols)))
		for _, c := range chunks(len(group), perStatement) {
			args := make([]any, 0, (c[1]-c[0])*len(cols))
			for _, r := range group[c[0]:c[1]] {
				for _, col := range cols {
					args = append(args, r[col])
				}
			}
			if _, err := tx.ExecContext(ctx, j.stmt.insertTargetSQL(cols, c[1]-c[0]), args...); err != nil {
				return fmt.Errorf("insert into %s: %w", j.t.FullName(), err)
			}
		}
	}
	return nil
}

// errRecordChanged: a statement of Record changed another number of rows than it had locked.
var errRecordChanged = errors.New("rows changed under lock")
