package ctl

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/mysqltest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

func TestMain(m *testing.M) { mysqltest.Main(m) }

// fixture is a test database holding DataJoint's pipeline (testdata/datajoint.sql) and a
// config file that lists its two targets.
type fixture struct {
	db       *mysqltest.DB
	schema   string
	analysis string // schema.__analysis, jobs table ~~analysis declared by DataJoint's DDL
	greeting string // schema.__greeting, keyed by a varchar, no jobs table until refreshed
	config   string // path of the config file
	env      map[string]string
}

// clock is a fake clock for watch: each reading is step later than the one before.
type clock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

var fixedNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	db := mysqltest.New(t)
	script, err := os.ReadFile("testdata/datajoint.sql")
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(t, sqlStatements(string(script))...)
	f := &fixture{
		db:       db,
		schema:   db.Name,
		analysis: db.Name + ".__analysis",
		greeting: db.Name + ".__greeting",
	}
	f.config = filepath.Join(t.TempDir(), "jetjobs.json")
	cfg, _ := json.Marshal(map[string]any{
		"mysql":  map[string]any{"dsn": db.DSN},
		"tables": []map[string]any{{"table": f.analysis}, {"table": f.greeting}},
	})
	if err := os.WriteFile(f.config, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	f.env = map[string]string{"JETJOBS_CONFIG": f.config}
	return f
}

// sqlStatements splits a script at semicolons that end a line, dropping comment lines.
func sqlStatements(script string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(script, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		cur.WriteString(line + "\n")
		if strings.HasSuffix(strings.TrimSpace(line), ";") {
			if s := strings.TrimSpace(cur.String()); s != ";" {
				out = append(out, strings.TrimSuffix(s, ";"))
			}
			cur.Reset()
		}
	}
	return out
}

// djStack encodes s as DataJoint's blob.pack does for a str: "dj0\0", 0x05, the length as a
// little-endian uint64, the UTF-8 bytes.
func djStack(s string) []byte {
	b := []byte("dj0\x00\x05")
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

const djTraceback = "Traceback (most recent call last):\n" +
	"  File \"pipeline.py\", line 12, in make\n" +
	"    raise ValueError(\"session 2 has no spikes\")\n" +
	"ValueError: session 2 has no spikes\n"

// insertDataJointJobs fills ~~analysis as DataJoint's refresh, reserve, error, complete
// (keep_completed) and ignore leave it, with fixed times.
func (f *fixture) insertDataJointJobs(t *testing.T) {
	t.Helper()
	const q = "INSERT INTO `~~analysis` (subject_id, session_id, status, priority, created_time, scheduled_time, " +
		"reserved_time, completed_time, duration, error_message, error_stack, user, host, pid, connection_id, version) " +
		"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	rows := [][]any{
		{1, 1, "success", 5, "2026-11-20 08:00:00.000", "2026-11-20 08:00:00.000", "2026-11-20 08:30:00.000", "2026-11-20 08:30:13.000", 12.5, "", nil, "alice@10.0.0.7", "node7", 4242, 77, ""},
		{1, 2, "pending", 5, "2026-11-20 08:00:00.000", "2026-11-20 08:00:00.000", nil, nil, nil, "", nil, "", "", 0, 0, ""},
		{2, 1, "reserved", 5, "2026-11-20 08:00:00.000", "2026-11-20 08:00:00.000", "2026-11-20 09:15:00.250", nil, nil, "", nil, "alice@10.0.0.7", "node7", 4242, 77, ""},
		{2, 2, "error", 3, "2026-11-20 08:00:00.000", "2026-11-20 08:00:00.000", "2026-11-20 09:00:00.000", "2026-11-20 09:00:03.000", nil, "ValueError: session 2 has no spikes", djStack(djTraceback), "bob@10.0.0.3", "node3", 1234, 55, ""},
		{2, 3, "ignore", 5, "2026-11-20 08:00:00.000", "2026-11-20 08:00:00.000", nil, nil, nil, "", nil, "", "", 0, 0, ""},
		{3, 1, "pending", 1, "2026-11-21 07:00:00.000", "2026-11-21 07:30:00.000", nil, nil, nil, "", nil, "", "", 0, 0, ""},
	}
	for _, r := range rows {
		if _, err := f.db.SQL.Exec(q, r...); err != nil {
			t.Fatalf("insert DataJoint job %v: %v", r[:3], err)
		}
	}
}

// result is one run of jobsctl.
type result struct {
	stdout, stderr string
	code           int
}

// runOpts are the parts of the process a test chooses.
type runOpts struct {
	stdin    string
	terminal bool // stdin and stdout are terminals
	clock    *clock
	ctx      context.Context
	stdout   io.Writer // default: a buffer returned in result.stdout
}

func (f *fixture) run(t *testing.T, args ...string) result {
	t.Helper()
	return f.runWith(t, runOpts{}, args...)
}

func (f *fixture) runWith(t *testing.T, o runOpts, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if o.clock == nil {
		o.clock = &clock{t: fixedNow, step: 2 * time.Second}
	}
	if o.ctx == nil {
		o.ctx = context.Background()
	}
	var out io.Writer = &stdout
	if o.stdout != nil {
		out = o.stdout
	}
	env := Env{
		Stdin:    strings.NewReader(o.stdin),
		Stdout:   out,
		Stderr:   &stderr,
		Getenv:   func(k string) string { return f.env[k] },
		Terminal: func(any) bool { return o.terminal },
		Location: time.UTC,
		Now:      o.clock.now,
	}
	code := Run(o.ctx, args, env)
	return result{stdout.String(), stderr.String(), code}
}

// mustRun runs jobsctl and fails the test unless it exits with want.
func (f *fixture) mustRun(t *testing.T, want int, args ...string) result {
	t.Helper()
	r := f.run(t, args...)
	if r.code != want {
		t.Fatalf("jobsctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
	return r
}

// normalize replaces the random part of the per-test database name (its last 8 characters)
// so golden files are stable, keeping its length so text tables stay aligned.
func (f *fixture) normalize(s string) string {
	return strings.ReplaceAll(s, f.schema, f.schema[:len(f.schema)-8]+"XXXXXXXX")
}

// golden compares got with testdata/golden/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept):\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}

// checksum is a fingerprint of a table's rows, to prove a refused command changed nothing.
func (f *fixture) checksum(t *testing.T, table string) string {
	t.Helper()
	var name string
	var sum []byte
	if err := f.db.SQL.QueryRow("CHECKSUM TABLE `"+table+"` EXTENDED").Scan(&name, &sum); err != nil {
		t.Fatalf("checksum %s: %v", table, err)
	}
	var n int
	if err := f.db.SQL.QueryRow("SELECT COUNT(*) FROM `" + table + "`").Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return fmt.Sprintf("checksum %s, %d rows", sum, n)
}

// tableExists reports whether a table of the test database exists.
func (f *fixture) tableExists(t *testing.T, table string) bool {
	t.Helper()
	var n int
	err := f.db.SQL.QueryRow("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?", f.schema, table).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// createTable is SHOW CREATE TABLE of a table of the test database.
func (f *fixture) createTable(t *testing.T, table string) string {
	t.Helper()
	var name, ddl string
	if err := f.db.SQL.QueryRow("SHOW CREATE TABLE `"+table+"`").Scan(&name, &ddl); err != nil {
		t.Fatal(err)
	}
	return ddl
}

// exec runs SQL in the test database.
func (f *fixture) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	if _, err := f.db.SQL.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// decodeJSON parses out into v.
func decodeJSON(t *testing.T, out string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
}
