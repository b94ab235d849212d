package jobsdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/mysqltest"
)

func TestMain(m *testing.M) { mysqltest.Main(m) }

// testTimeout bounds every test's database work, so a stuck lock fails the test instead of
// hanging the run.
const testTimeout = 2 * time.Minute

// testContext is a context cancelled at the end of the test or after testTimeout.
func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// fixture is a test database with a target table and its jobs handle.
type fixture struct {
	ctx    context.Context
	db     *mysqltest.DB
	sql    *sql.DB // opened with Open
	target *Target
	jobs   *Jobs
}

// simpleDDL is the smallest pipeline: item → __result, keyed by id.
var simpleDDL = []string{
	"CREATE TABLE item (id int NOT NULL, PRIMARY KEY (id))",
	"CREATE TABLE __result (id int NOT NULL, value int NOT NULL DEFAULT 0, note varchar(100) NULL, " +
		"PRIMARY KEY (id), FOREIGN KEY (id) REFERENCES item (id))",
}

// pipelineDDL has two primary parents, one through a renamed foreign key (param_id → paramset.id).
var pipelineDDL = []string{
	"CREATE TABLE subject (subject_id int NOT NULL, PRIMARY KEY (subject_id))",
	"CREATE TABLE session (subject_id int NOT NULL, session_id int NOT NULL, PRIMARY KEY (subject_id, session_id), " +
		"FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
	"CREATE TABLE paramset (id int NOT NULL, label varchar(20) NOT NULL DEFAULT '', PRIMARY KEY (id))",
	"CREATE TABLE __analysis (subject_id int NOT NULL, session_id int NOT NULL, param_id int NOT NULL, result float NOT NULL DEFAULT 0, " +
		"PRIMARY KEY (subject_id, session_id, param_id), " +
		"FOREIGN KEY (subject_id, session_id) REFERENCES session (subject_id, session_id), " +
		"FOREIGN KEY (param_id) REFERENCES paramset (id))",
}

// openDB opens the test database with Open, closed at the end of the test.
func openDB(t testing.TB, db *mysqltest.DB) *sql.DB {
	t.Helper()
	pool, err := Open(testContext(t), db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	return pool
}

// setup creates a database, runs ddl, and inspects table.
func setup(t testing.TB, table string, opts Options, ddl ...string) *fixture {
	t.Helper()
	db := mysqltest.New(t)
	db.Exec(t, ddl...)
	f := &fixture{ctx: testContext(t), db: db, sql: openDB(t, db)}
	target, err := Inspect(f.ctx, f.sql, db.Name+"."+table, "")
	if err != nil {
		t.Fatal(err)
	}
	f.target = target
	f.jobs = New(f.sql, target, opts)
	return f
}

// setupSimple is the item → __result pipeline with items 1..n.
func setupSimple(t testing.TB, n int, opts Options) *fixture {
	t.Helper()
	ddl := append([]string{}, simpleDDL...)
	if n > 0 {
		ddl = append(ddl, fmt.Sprintf("INSERT INTO item (id) SELECT seq FROM seq_1_to_%d", n))
	}
	return setup(t, "__result", opts, ddl...)
}

// setupPipeline is the two-parent pipeline with subjects × sessions sessions per subject and
// params paramsets.
func setupPipeline(t testing.TB, subjects, sessions, params int, opts Options) *fixture {
	t.Helper()
	ddl := append([]string{}, pipelineDDL...)
	ddl = append(ddl,
		fmt.Sprintf("INSERT INTO subject SELECT seq FROM seq_1_to_%d", subjects),
		fmt.Sprintf("INSERT INTO session SELECT s.seq, n.seq FROM seq_1_to_%d s JOIN seq_1_to_%d n", subjects, sessions),
		fmt.Sprintf("INSERT INTO paramset (id) SELECT seq FROM seq_1_to_%d", params),
	)
	return setup(t, "__analysis", opts, ddl...)
}

// refresh adds every key as a job due now.
func (f *fixture) refresh(t testing.TB, opts RefreshOptions) RefreshResult {
	t.Helper()
	if opts.Delay == 0 {
		opts.Delay = -time.Second
	}
	if opts.Priority == 0 {
		opts.Priority = PriorityDefault
	}
	res, err := f.jobs.Refresh(f.ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// reserve reserves keys and fails the test on error.
func (f *fixture) reserve(t testing.TB, keys ...Key) []Lease {
	t.Helper()
	leases, err := f.jobs.Reserve(f.ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	return leases
}

// record records outcomes and fails the test on error.
func (f *fixture) record(t testing.TB, outcomes ...Outcome) []bool {
	t.Helper()
	applied, err := f.jobs.Record(f.ctx, outcomes)
	if err != nil {
		t.Fatal(err)
	}
	return applied
}

// get reads a job and fails the test on error.
func (f *fixture) get(t testing.TB, key Key) Job {
	t.Helper()
	job, err := f.jobs.Get(f.ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// exec runs statements in the test database, with the names {jobs} and {target} replaced by the
// quoted jobs and target tables.
func (f *fixture) exec(t testing.TB, statements ...string) {
	t.Helper()
	for _, s := range statements {
		if _, err := f.sql.ExecContext(f.ctx, f.expand(s)); err != nil {
			t.Fatalf("%s: %v", f.expand(s), err)
		}
	}
}

func (f *fixture) expand(s string) string {
	return strings.NewReplacer("{jobs}", f.jobs.stmt.table, "{target}", f.jobs.stmt.target).Replace(s)
}

// count returns SELECT COUNT(*) FROM {jobs} WHERE cond.
func (f *fixture) count(t testing.TB, table, cond string, args ...any) int {
	t.Helper()
	var n int
	q := f.expand("SELECT COUNT(*) FROM " + table + " WHERE " + cond)
	if err := f.sql.QueryRowContext(f.ctx, q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// truth evaluates a boolean SQL expression about the job of key, e.g. "`lease_expires` > NOW(3)".
func (f *fixture) truth(t testing.TB, key Key, expr string) bool {
	t.Helper()
	var ok sql.NullBool
	q := "SELECT " + f.expand(expr) + " FROM " + f.jobs.stmt.table + " WHERE " + keyEquals(f.target, "", "")
	if err := f.sql.QueryRowContext(f.ctx, q, key...).Scan(&ok); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return ok.Valid && ok.Bool
}

func ids(ns ...int) []Key {
	keys := make([]Key, len(ns))
	for i, n := range ns {
		keys[i] = Key{int64(n)}
	}
	return keys
}

func idRange(lo, hi int) []Key {
	var keys []Key
	for n := lo; n <= hi; n++ {
		keys = append(keys, Key{int64(n)})
	}
	return keys
}

func success(l Lease, rows ...Row) Outcome {
	return Outcome{Lease: l, Kind: OutcomeSuccess, Duration: 1500 * time.Millisecond, Rows: rows}
}

func wantErrIs(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

func intPtr(n int) *int { return &n }
