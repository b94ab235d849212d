package jobsdb

import (
	"bufio"
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/jetjobs/jetjobs/internal/mysqltest"
)

// referenceDDL reads the SHOW CREATE TABLE blocks of testdata/datajoint-ddl.txt (a copy of
// reference/datajoint-ddl.txt: what DataJoint 2.x itself created on MariaDB) for schema
// djpeer, by table name.
func referenceDDL(t testing.TB) map[string]string {
	t.Helper()
	file, err := os.Open("testdata/datajoint-ddl.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	blocks := map[string]string{}
	var name string
	var lines []string
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "## SHOW CREATE TABLE `djpeer`.`"); ok {
			name, lines = strings.TrimSuffix(rest, "`"), nil
			continue
		}
		if name == "" {
			continue
		}
		if strings.TrimSpace(line) == "" {
			blocks[name] = strings.TrimSuffix(strings.Join(lines, "\n"), ";")
			name = ""
			continue
		}
		lines = append(lines, line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"~~analysis", "__analysis", "session", "subject"} {
		if blocks[want] == "" {
			t.Fatalf("testdata/datajoint-ddl.txt has no SHOW CREATE TABLE of %s", want)
		}
	}
	return blocks
}

// showCreate returns SHOW CREATE TABLE of schema.table.
func showCreate(t testing.TB, db *mysqltest.DB, table string) string {
	t.Helper()
	var name, ddl string
	if err := db.SQL.QueryRow("SHOW CREATE TABLE "+qualified(db.Name, table)).Scan(&name, &ddl); err != nil {
		t.Fatal(err)
	}
	return ddl
}

// jetjobsColumnLines are the SHOW CREATE TABLE lines of jetjobs' columns, in order.
var jetjobsColumnLines = []string{
	"  `attempts` int(10) unsigned NOT NULL DEFAULT 0,",
	"  `lease_token` char(32) NOT NULL DEFAULT '',",
	"  `lease_expires` datetime(3) DEFAULT NULL,",
	"  `dispatched_time` datetime(3) DEFAULT NULL,",
}

// checkJobsDDL compares a jobs table's SHOW CREATE TABLE with DataJoint's reference, line by
// line: equal but for jetjobs' four columns right after DataJoint's `version`.
func checkJobsDDL(t testing.TB, got, reference, schema string) {
	t.Helper()
	want := strings.Split(strings.ReplaceAll(reference, "COMMENT='Job queue for `djpeer`.", "COMMENT='Job queue for `"+schema+"`."), "\n")
	lines := strings.Split(got, "\n")
	at := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "  `version` ") {
			at = i + 1
		}
	}
	if at < 0 || at+len(jetjobsColumnLines) > len(lines) {
		t.Fatalf("no `version` column followed by the jetjobs columns in\n%s", got)
	}
	for i, l := range jetjobsColumnLines {
		if lines[at+i] != l {
			t.Errorf("jetjobs column line %d:\n got %s\nwant %s", i, lines[at+i], l)
		}
	}
	lines = append(lines[:at:at], lines[at+len(jetjobsColumnLines):]...)
	if len(lines) != len(want) {
		t.Fatalf("%d lines besides the jetjobs columns, DataJoint has %d:\n%s\n--- want\n%s", len(lines), len(want), got, reference)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, lines[i], want[i])
		}
	}
}

// setupDataJointPipeline creates DataJoint's subject, session and __analysis tables from the
// reference DDL.
func setupDataJointPipeline(t testing.TB, ref map[string]string) (*mysqltest.DB, *Jobs) {
	t.Helper()
	db := mysqltest.New(t)
	db.Exec(t, ref["subject"], ref["session"], ref["__analysis"],
		"INSERT INTO subject SELECT seq FROM seq_0_to_9",
		"INSERT INTO session SELECT s.seq, n.seq FROM seq_0_to_9 s JOIN seq_0_to_9 n")
	pool := openDB(t, db)
	target, err := Inspect(testContext(t), pool, db.Name+".__analysis", "")
	if err != nil {
		t.Fatal(err)
	}
	if target.JobsName != "~~analysis" {
		t.Fatalf("jobs table %q", target.JobsName)
	}
	return db, New(pool, target, Options{})
}

func TestDeclareMatchesDataJointDDL(t *testing.T) {
	t.Parallel()
	ref := referenceDDL(t)
	db, jobs := setupDataJointPipeline(t, ref)
	ctx := testContext(t)
	if err := jobs.Declare(ctx); err != nil {
		t.Fatal(err)
	}
	checkJobsDDL(t, showCreate(t, db, "~~analysis"), ref["~~analysis"], db.Name)

	t.Run("declaring again changes nothing", func(t *testing.T) {
		before := showCreate(t, db, "~~analysis")
		if err := jobs.Declare(ctx); err != nil {
			t.Fatal(err)
		}
		if after := showCreate(t, db, "~~analysis"); after != before {
			t.Fatalf("DDL changed:\n%s\n%s", before, after)
		}
	})
}

func TestDeclareAdoptsDataJointTable(t *testing.T) {
	t.Parallel()
	ref := referenceDDL(t)
	db, jobs := setupDataJointPipeline(t, ref)
	ctx := testContext(t)
	// The jobs table exactly as DataJoint created it, with rows DataJoint wrote.
	db.Exec(t, strings.ReplaceAll(ref["~~analysis"], "`djpeer`", "`"+db.Name+"`"),
		"INSERT INTO `~~analysis` (subject_id, session_id, status, priority) VALUES (0, 0, 'pending', 5), (0, 1, 'pending', 3)",
		"INSERT INTO `~~analysis` (subject_id, session_id, status, priority, error_message, error_stack, user, host, pid) "+
			"VALUES (0, 2, 'error', 5, 'ValueError: x', X'646A300005050000000000000068656C6C6F', 'dj@%', 'dj-host', 77)",
		"INSERT INTO `~~analysis` (subject_id, session_id, status, priority, reserved_time) VALUES (0, 3, 'reserved', 5, NOW(3) - INTERVAL 2 HOUR)")

	if err := jobs.Declare(ctx); err != nil {
		t.Fatal(err)
	}
	t.Run("the jetjobs columns are added, the DDL is the one jetjobs creates", func(t *testing.T) {
		checkJobsDDL(t, showCreate(t, db, "~~analysis"), ref["~~analysis"], db.Name)
	})
	t.Run("existing rows are kept", func(t *testing.T) {
		job, err := jobs.Get(ctx, Key{0, 2})
		if err != nil || job.Status != StatusError || job.ErrorMessage != "ValueError: x" || job.ErrorStack != "hello" ||
			job.User != "dj@%" || job.PID != 77 || job.Attempts != 0 {
			t.Fatalf("error row %+v, %v", job, err)
		}
		if p, err := jobs.Progress(ctx); err != nil || p != (Progress{Pending: 2, Error: 1, Reserved: 1, Total: 4}) {
			t.Fatalf("progress %+v, %v", p, err)
		}
	})
	t.Run("DataJoint's rows work with jetjobs", func(t *testing.T) {
		if leases, err := jobs.Reserve(ctx, []Key{{0, 0}, {0, 1}}); err != nil || len(leases) != 2 {
			t.Fatalf("reserved %d, %v", len(leases), err)
		}
		if n, err := jobs.RecoverExpired(ctx, 0); err != nil || n != 0 {
			t.Fatalf("recovered %d without an orphan timeout, %v", n, err)
		}
		if n, err := jobs.RecoverExpired(ctx, 3600e9); err != nil || n != 1 {
			t.Fatalf("recovered %d DataJoint reservations, %v", n, err)
		}
		if res, err := jobs.Refresh(ctx, RefreshOptions{Priority: 5}); err != nil || res.Added != 96 {
			t.Fatalf("refresh %+v, %v", res, err)
		}
	})
}

func TestDeclareRace(t *testing.T) {
	t.Parallel()
	ref := referenceDDL(t)
	for _, existing := range []bool{false, true} {
		name := "a fresh table"
		if existing {
			name = "a DataJoint table"
		}
		t.Run("eight processes declaring "+name+" at once all succeed", func(t *testing.T) {
			db, jobs := setupDataJointPipeline(t, ref)
			if existing {
				db.Exec(t, strings.ReplaceAll(ref["~~analysis"], "`djpeer`", "`"+db.Name+"`"))
			}
			ctx := testContext(t)
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = New(jobs.db, jobs.t, Options{}).Declare(ctx)
				}()
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			checkJobsDDL(t, showCreate(t, db, "~~analysis"), ref["~~analysis"], db.Name)
		})
	}
}

func TestDeclareRefusesAnotherKey(t *testing.T) {
	t.Parallel()
	ref := referenceDDL(t)
	db, jobs := setupDataJointPipeline(t, ref)
	db.Exec(t, "CREATE TABLE `~~analysis` (subject_id int NOT NULL, status enum('pending') NOT NULL, PRIMARY KEY (subject_id))")
	before := showCreate(t, db, "~~analysis")
	err := jobs.Declare(context.Background())
	if err == nil || !strings.Contains(err.Error(), "jobs table") {
		t.Fatalf("error %v", err)
	}
	if showCreate(t, db, "~~analysis") != before {
		t.Fatal("the existing table was changed")
	}
}

func TestDeclareCopiesKeyColumnTypes(t *testing.T) {
	t.Parallel()
	f := setup(t, "_scan", Options{},
		"CREATE TABLE rec (big bigint unsigned NOT NULL, code varchar(20) CHARACTER SET latin1 COLLATE latin1_bin NOT NULL, "+
			"item binary(16) NOT NULL COMMENT ':uuid:item id', day date NOT NULL, PRIMARY KEY (big, code, item, day))",
		"CREATE TABLE _scan (big bigint unsigned NOT NULL, code varchar(20) CHARACTER SET latin1 COLLATE latin1_bin NOT NULL, "+
			"item binary(16) NOT NULL COMMENT ':uuid:item id', day date NOT NULL, PRIMARY KEY (big, code, item, day), "+
			"FOREIGN KEY (big, code, item, day) REFERENCES rec (big, code, item, day))")
	if f.target.JobsName != "~~scan" {
		t.Fatalf("jobs table %s", f.target.JobsName)
	}
	if err := f.jobs.Declare(f.ctx); err != nil {
		t.Fatal(err)
	}
	ddl := showCreate(t, f.db, "~~scan")
	for _, want := range []string{
		"  `big` bigint(20) unsigned NOT NULL,",
		"  `code` varchar(20) CHARACTER SET latin1 COLLATE latin1_bin NOT NULL,",
		"  `item` binary(16) NOT NULL COMMENT ':uuid:',",
		"  `day` date NOT NULL,",
		"  PRIMARY KEY (`big`,`code`,`item`,`day`),",
	} {
		if !strings.Contains(ddl, want+"\n") {
			t.Errorf("no line %q in\n%s", want, ddl)
		}
	}
}
