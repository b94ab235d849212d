package jobsdb

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/jetjobs/jetjobs/internal/mysqltest"
)

// dataJointBundle is a jobs table as DataJoint declared it (no jetjobs columns) with one
// pending and one error row, and a handle that records what it adopts.
type dataJointBundle struct {
	db      *mysqltest.DB
	ref     map[string]string
	adopted [][]string // the columns of each call of Options.Adopted
}

// setupDataJointJobs returns the handle under test and its bundle; opts.Adopted is set.
func setupDataJointJobs(t *testing.T, opts Options) (*Jobs, *dataJointBundle) {
	t.Helper()
	b := &dataJointBundle{ref: referenceDDL(t)}
	var jobs *Jobs
	b.db, jobs = setupDataJointPipeline(t, b.ref)
	b.db.Exec(t, strings.ReplaceAll(b.ref["~~analysis"], "`djpeer`", "`"+b.db.Name+"`"),
		"INSERT INTO `~~analysis` (subject_id, session_id, status, priority) VALUES (0, 0, 'pending', 5)",
		"INSERT INTO `~~analysis` (subject_id, session_id, status, priority, error_message) VALUES (0, 1, 'error', 5, 'ValueError: x')")
	opts.Adopted = func(columns []string) { b.adopted = append(b.adopted, columns) }
	return New(jobs.db, jobs.t, opts), b
}

// hasJetjobsColumns reports whether the jobs table has been adopted.
func (b *dataJointBundle) hasJetjobsColumns(t *testing.T) bool {
	t.Helper()
	return strings.Contains(showCreate(t, b.db, "~~analysis"), "`lease_token`")
}

func TestWritesAdoptDataJointTable(t *testing.T) {
	t.Parallel()
	all := jetjobsColumnNames()

	t.Run("reads leave the table as DataJoint declared it", func(t *testing.T) {
		t.Parallel()
		jobs, b := setupDataJointJobs(t, Options{})
		ctx := testContext(t)
		if listed, err := jobs.List(ctx, Filter{}); err != nil || len(listed) != 2 {
			t.Fatalf("list: %d jobs, %v", len(listed), err)
		}
		if _, err := jobs.Get(ctx, Key{int64(0), int64(1)}); err != nil {
			t.Fatal(err)
		}
		if p, err := jobs.Progress(ctx); err != nil || p.Total != 2 {
			t.Fatalf("progress %+v, %v", p, err)
		}
		if b.hasJetjobsColumns(t) || len(b.adopted) != 0 {
			t.Fatalf("reading adopted the table (adopted %v)", b.adopted)
		}
	})

	for _, c := range []struct {
		name  string
		write func(ctx context.Context, jobs *Jobs) (int64, error) // how many jobs it changed
		want  int64
	}{
		{"retry errors", func(ctx context.Context, jobs *Jobs) (int64, error) {
			return jobs.RetryErrors(ctx, Filter{})
		}, 1},
		{"reserve", func(ctx context.Context, jobs *Jobs) (int64, error) {
			leases, err := jobs.Reserve(ctx, []Key{{int64(0), int64(0)}})
			return int64(len(leases)), err
		}, 1},
		{"recover expired", func(ctx context.Context, jobs *Jobs) (int64, error) {
			return jobs.RecoverExpired(ctx, 0)
		}, 0},
		{"mark dispatched", func(ctx context.Context, jobs *Jobs) (int64, error) {
			return 0, jobs.MarkDispatched(ctx, []Key{{int64(0), int64(0)}}, 0)
		}, 0},
	} {
		t.Run(c.name+" adopts the table once, adding jetjobs' columns, and says so", func(t *testing.T) {
			t.Parallel()
			jobs, b := setupDataJointJobs(t, Options{})
			ctx := testContext(t)
			if n, err := c.write(ctx, jobs); err != nil || n != c.want {
				t.Fatalf("changed %d jobs, %v; want %d", n, err, c.want)
			}
			if !b.hasJetjobsColumns(t) || !reflect.DeepEqual(b.adopted, [][]string{all}) {
				t.Fatalf("adopted %v, want one adoption adding %v", b.adopted, all)
			}
			checkJobsDDL(t, showCreate(t, b.db, "~~analysis"), b.ref["~~analysis"], b.db.Name)
			if p, err := jobs.Progress(ctx); err != nil || p.Total != 2 {
				t.Fatalf("progress %+v, %v: DataJoint's rows must stay", p, err)
			}
			if _, err := c.write(ctx, jobs); err != nil {
				t.Fatal(err)
			}
			if len(b.adopted) != 1 {
				t.Fatalf("adopted %v: a second write must not adopt again", b.adopted)
			}
		})
	}

	t.Run("declare adopts without calling Adopted", func(t *testing.T) {
		t.Parallel()
		jobs, b := setupDataJointJobs(t, Options{})
		if err := jobs.Declare(testContext(t)); err != nil {
			t.Fatal(err)
		}
		if !b.hasJetjobsColumns(t) || len(b.adopted) != 0 {
			t.Fatalf("adopted %v, columns added %v", b.adopted, b.hasJetjobsColumns(t))
		}
	})

	t.Run("a user who may not ALTER the table gets ErrNotAdopted, and nothing changes", func(t *testing.T) {
		t.Parallel()
		jobs, b := setupDataJointJobs(t, Options{})
		ctx := testContext(t)
		pool := openAs(t, b.db, "SELECT, INSERT, UPDATE, DELETE")
		limited := New(pool, jobs.t, jobs.opts)
		_, err := limited.RetryErrors(ctx, Filter{})
		wantErrIs(t, err, ErrNotAdopted)
		for _, want := range []string{"~~analysis", "lease_token", "adding them failed"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q should name %q", err, want)
			}
		}
		if b.hasJetjobsColumns(t) || len(b.adopted) != 0 {
			t.Fatalf("the table changed (adopted %v)", b.adopted)
		}
		if job, err := jobs.Get(ctx, Key{int64(0), int64(1)}); err != nil || job.Status != StatusError {
			t.Fatalf("error job %+v, %v: nothing may be written", job, err)
		}
	})
}

// openAs opens a pool on db as a user of its own holding only privileges on db, dropped at
// the end of the test.
func openAs(t *testing.T, db *mysqltest.DB, privileges string) *sql.DB {
	t.Helper()
	user := "u" + db.Name[len(db.Name)-8:]
	db.Exec(t, "CREATE USER '"+user+"'@'%' IDENTIFIED BY 'pw'",
		"GRANT "+privileges+" ON `"+db.Name+"`.* TO '"+user+"'@'%'")
	t.Cleanup(func() { db.SQL.Exec("DROP USER '" + user + "'@'%'") })
	cfg, err := mysql.ParseDSN(db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Passwd = user, "pw"
	pool, err := Open(testContext(t), cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	return pool
}

func TestIsBadSQL(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 1, Options{})
	f.refresh(t, RefreshOptions{})
	for _, c := range []struct {
		restriction string
		bad         bool
	}{
		{"id = = 1", true},   // a syntax error
		{"nosuch > 1", true}, // an unknown column
		{"id > 0", false},
	} {
		_, err := f.jobs.List(f.ctx, Filter{Restrictions: []Restriction{{SQL: c.restriction}}})
		if got := IsBadSQL(err); got != c.bad {
			t.Errorf("restriction %q: IsBadSQL(%v) = %v, want %v", c.restriction, err, got, c.bad)
		}
	}
	if IsBadSQL(errors.New("other")) || IsBadSQL(nil) {
		t.Error("IsBadSQL of a non-MySQL error")
	}
}
