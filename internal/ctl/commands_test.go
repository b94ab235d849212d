package ctl

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/buildtest"
	"github.com/jetjobs/jetjobs/internal/waitfor"
)

// keysOf returns the compact JSON keys of a list -o json output, in order.
func keysOf(t *testing.T, out string) []string {
	t.Helper()
	var jobs []map[string]json.RawMessage
	decodeJSON(t, out, &jobs)
	keys := make([]string, len(jobs))
	for i, j := range jobs {
		var b bytes.Buffer
		if err := json.Compact(&b, j["key"]); err != nil {
			t.Fatal(err)
		}
		keys[i] = b.String()
	}
	return keys
}

func readCSV(t *testing.T, out string) [][]string {
	t.Helper()
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("output is not CSV: %v\n%s", err, out)
	}
	return rows
}

func columnNames(cols []column) []string {
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = c.name
	}
	return names
}

// TestDataJointJobsTable runs every command on a jobs table that DataJoint declared and filled
// (DataJoint's DDL, no jetjobs columns), in the order an operator would.
func TestDataJointJobsTable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insertDataJointJobs(t)
	a := f.analysis

	t.Run("progress counts every status of DataJoint's rows", func(t *testing.T) {
		ddl := f.createTable(t, "~~analysis")
		golden(t, "progress.txt", f.normalize(f.mustRun(t, 0, "progress", a).stdout))
		if after := f.createTable(t, "~~analysis"); after != ddl {
			t.Errorf("progress changed DataJoint's jobs table:\n%s\nthen\n%s", ddl, after)
		}
		golden(t, "progress_all.txt", f.normalize(f.mustRun(t, 0, "progress").stdout))

		var got map[string]map[string]int64
		decodeJSON(t, f.mustRun(t, 0, "progress", a, "-o", "json").stdout, &got)
		want := map[string]map[string]int64{a: {"pending": 2, "reserved": 1, "success": 1, "error": 1, "ignore": 1, "total": 6}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("progress -o json = %v, want %v", got, want)
		}

		rows := readCSV(t, f.mustRun(t, 0, "progress", "-o", "csv").stdout)
		wantRows := [][]string{
			{"table", "pending", "reserved", "success", "error", "ignore", "total"},
			{a, "2", "1", "1", "1", "1", "6"},
			{f.greeting, "0", "0", "0", "0", "0", "0"},
		}
		if !reflect.DeepEqual(rows, wantRows) {
			t.Errorf("progress -o csv = %v, want %v", rows, wantRows)
		}
		rows = readCSV(t, f.mustRun(t, 0, "progress", a, "-o", "csv", "--no-headers").stdout)
		if len(rows) != 1 || rows[0][0] != a {
			t.Errorf("progress -o csv --no-headers = %v, want one row of %s", rows, a)
		}
	})

	t.Run("list shows jobs in the order workers take them", func(t *testing.T) {
		golden(t, "list.txt", f.normalize(f.mustRun(t, 0, "list", a).stdout))
		golden(t, "list_no_headers.txt", f.normalize(f.mustRun(t, 0, "list", a, "--status", "pending", "--no-headers").stdout))

		wantOrder := []string{
			`{"subject_id":3,"session_id":1}`, // priority 1
			`{"subject_id":2,"session_id":2}`, // priority 3
			`{"subject_id":1,"session_id":1}`, // priority 5, same scheduled_time: key order
			`{"subject_id":1,"session_id":2}`,
			`{"subject_id":2,"session_id":1}`,
			`{"subject_id":2,"session_id":3}`,
		}
		if got := keysOf(t, f.mustRun(t, 0, "list", a, "-o", "json").stdout); !reflect.DeepEqual(got, wantOrder) {
			t.Errorf("list order = %v, want %v", got, wantOrder)
		}
		for _, c := range []struct {
			args []string
			want []string
		}{
			{[]string{"--status", "pending"}, []string{wantOrder[0], wantOrder[3]}},
			{[]string{"--status", "error,reserved"}, []string{wantOrder[1], wantOrder[4]}},
			{[]string{"--status", "error", "--status", "ignore"}, []string{wantOrder[1], wantOrder[5]}},
			{[]string{"--key", "subject_id=2"}, []string{wantOrder[1], wantOrder[4], wantOrder[5]}},
			{[]string{"--key", "subject_id=2,session_id=3"}, []string{wantOrder[5]}},
			{[]string{"--priority", "3"}, []string{wantOrder[0], wantOrder[1]}},
			{[]string{"--limit", "2"}, wantOrder[:2]},
			{[]string{"--restrict", "session_id > 1", "--restrict", "subject_id < 2"}, []string{wantOrder[3]}},
			{[]string{"--due", "--status", "pending"}, []string{wantOrder[0], wantOrder[3]}},
		} {
			args := append([]string{"list", a, "-o", "json"}, c.args...)
			if got := keysOf(t, f.mustRun(t, 0, args...).stdout); !reflect.DeepEqual(got, c.want) {
				t.Errorf("list %v = %v, want %v", c.args, got, c.want)
			}
		}

		var jobs []map[string]any
		decodeJSON(t, f.mustRun(t, 0, "list", a, "-o", "json", "--key", "subject_id=2,session_id=2").stdout, &jobs)
		if len(jobs) != 1 {
			t.Fatalf("list --key 2,2: %d jobs", len(jobs))
		}
		want := map[string]any{
			"key":             map[string]any{"subject_id": json.Number("2"), "session_id": json.Number("2")},
			"status":          "error",
			"priority":        json.Number("3"),
			"attempts":        json.Number("0"),
			"created_time":    "2026-11-20T08:00:00.000Z",
			"scheduled_time":  "2026-11-20T08:00:00.000Z",
			"reserved_time":   "2026-11-20T09:00:00.000Z",
			"completed_time":  "2026-11-20T09:00:03.000Z",
			"duration":        nil,
			"user":            "bob@10.0.0.3",
			"host":            "node3",
			"pid":             json.Number("1234"),
			"connection_id":   json.Number("55"),
			"version":         "",
			"lease_expires":   nil,
			"dispatched_time": nil,
			"error_message":   "ValueError: session 2 has no spikes",
		}
		for k, v := range want {
			if !reflect.DeepEqual(jobs[0][k], v) {
				t.Errorf("list -o json field %s = %#v, want %#v", k, jobs[0][k], v)
			}
		}
		if len(jobs[0]) != len(want) {
			t.Errorf("list -o json has fields %v, want exactly %v", jobs[0], columnNames(jobColumns))
		}
		decodeJSON(t, f.mustRun(t, 0, "list", a, "-o", "json", "--key", "subject_id=1,session_id=1").stdout, &jobs)
		if jobs[0]["duration"] != json.Number("12.5") || jobs[0]["status"] != "success" {
			t.Errorf("success job: duration %v status %v, want 12.5 success", jobs[0]["duration"], jobs[0]["status"])
		}

		rows := readCSV(t, f.mustRun(t, 0, "list", a, "-o", "csv").stdout)
		if !reflect.DeepEqual(rows[0], columnNames(jobColumns)) {
			t.Errorf("list -o csv header = %v, want %v", rows[0], columnNames(jobColumns))
		}
		if len(rows) != 7 {
			t.Fatalf("list -o csv: %d rows, want header + 6", len(rows))
		}
		row := map[string]string{}
		for i, name := range rows[0] {
			row[name] = rows[2][i]
		}
		if row["key"] != `{"subject_id":2,"session_id":2}` || row["status"] != "error" || row["duration"] != "" ||
			row["completed_time"] != "2026-11-20T09:00:03.000Z" || row["pid"] != "1234" {
			t.Errorf("list -o csv second row = %v", row)
		}
		if got := f.mustRun(t, 0, "list", a, "--status", "success", "--status", "ignore", "--key", "subject_id=3").stdout; strings.Count(got, "\n") != 1 {
			t.Errorf("list with no match should print the header only, got:\n%s", got)
		}
		if got := f.mustRun(t, 0, "list", a, "--key", "subject_id=3", "--status", "error", "-o", "json").stdout; strings.TrimSpace(got) != "[]" {
			t.Errorf("list -o json with no match = %s, want []", got)
		}
	})

	t.Run("errors lists failed jobs with their messages", func(t *testing.T) {
		golden(t, "errors.txt", f.normalize(f.mustRun(t, 0, "errors", a).stdout))
		var jobs []map[string]any
		decodeJSON(t, f.mustRun(t, 0, "errors", a, "-o", "json").stdout, &jobs)
		if len(jobs) != 1 || jobs[0]["error_message"] != "ValueError: session 2 has no spikes" || jobs[0]["status"] != "error" {
			t.Errorf("errors -o json = %v", jobs)
		}
		rows := readCSV(t, f.mustRun(t, 0, "errors", a, "-o", "csv").stdout)
		if len(rows) != 2 || !reflect.DeepEqual(rows[0], columnNames(jobColumns)) {
			t.Errorf("errors -o csv = %v", rows)
		}
	})

	t.Run("show decodes DataJoint's error stack", func(t *testing.T) {
		golden(t, "show_error.txt", f.normalize(f.mustRun(t, 0, "show", a, "--key", "subject_id=2,session_id=2").stdout))
		golden(t, "show_reserved.txt", f.normalize(f.mustRun(t, 0, "show", a, "--key", "session_id=1", "--key", "subject_id=2").stdout))
		var job map[string]any
		decodeJSON(t, f.mustRun(t, 0, "show", a, "--key", "subject_id=2,session_id=2", "-o", "json").stdout, &job)
		if job["error_stack"] != djTraceback {
			t.Errorf("show -o json error_stack = %q, want %q", job["error_stack"], djTraceback)
		}
		if k, _ := job["key"].(map[string]any); k["subject_id"] != json.Number("2") || k["session_id"] != json.Number("2") {
			t.Errorf("show -o json key = %v", job["key"])
		}
		rows := readCSV(t, f.mustRun(t, 0, "show", a, "--key", "subject_id=2,session_id=2", "-o", "csv").stdout)
		if len(rows) != 2 || rows[0][len(rows[0])-1] != "error_stack" || rows[1][len(rows[1])-1] != djTraceback {
			t.Errorf("show -o csv = %q", rows)
		}
		r := f.mustRun(t, 1, "show", a, "--key", "subject_id=3,session_id=9")
		if !strings.Contains(r.stderr, "no job with key subject_id=3,session_id=9") {
			t.Errorf("show of a missing job: stderr %q", r.stderr)
		}
	})

	t.Run("reading DataJoint's table does not alter it", func(t *testing.T) {
		f.mustRun(t, 0, "list", a)
		f.mustRun(t, 0, "errors", a)
		f.mustRun(t, 0, "show", a, "--key", "subject_id=2,session_id=2")
		var n int
		if err := f.db.SQL.QueryRow("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=? AND TABLE_NAME='~~analysis' AND COLUMN_NAME IN ('attempts', 'lease_token', 'lease_expires', 'dispatched_time')", f.schema).Scan(&n); err != nil || n != 0 {
			t.Errorf("list, errors and show added %d jetjobs columns to DataJoint's table (%v)", n, err)
		}
	})

	t.Run("refresh adopts DataJoint's table and adds the missing key", func(t *testing.T) {
		golden(t, "refresh.txt", f.normalize(f.mustRun(t, 0, "refresh", a).stdout))
		for _, col := range []string{"attempts", "lease_token", "lease_expires", "dispatched_time"} {
			var n int
			if err := f.db.SQL.QueryRow("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=? AND TABLE_NAME='~~analysis' AND COLUMN_NAME=?", f.schema, col).Scan(&n); err != nil || n != 1 {
				t.Errorf("after refresh, ~~analysis has no column %s (%v)", col, err)
			}
		}
		var res map[string]any
		decodeJSON(t, f.mustRun(t, 0, "refresh", a, "-o", "json").stdout, &res)
		want := map[string]any{"table": a, "added": json.Number("0"), "removed": json.Number("0"), "orphaned": json.Number("0"), "re_pended": json.Number("0")}
		if !reflect.DeepEqual(res, want) {
			t.Errorf("second refresh -o json = %v, want %v", res, want)
		}
		// The added job's times are now(): pin them so the golden file is stable.
		f.exec(t, "UPDATE `~~analysis` SET created_time='2026-11-22 10:00:00', scheduled_time='2026-11-22 10:00:00' WHERE subject_id=1 AND session_id=3")
		golden(t, "list_after_refresh.txt", f.normalize(f.mustRun(t, 0, "list", a).stdout))
		var p map[string]map[string]int64
		decodeJSON(t, f.mustRun(t, 0, "progress", a, "-o", "json").stdout, &p)
		if p[a]["pending"] != 3 || p[a]["total"] != 7 {
			t.Errorf("progress after refresh = %v, want 3 pending of 7", p[a])
		}
		rows := readCSV(t, f.mustRun(t, 0, "refresh", f.greeting, "--priority", "2", "-o", "csv").stdout)
		if want := [][]string{columnNames(refreshColumns), {f.greeting, "2", "0", "0", "0"}}; !reflect.DeepEqual(rows, want) {
			t.Errorf("refresh of the varchar pipeline -o csv = %v, want %v", rows, want)
		}
		var jobs []map[string]any
		decodeJSON(t, f.mustRun(t, 0, "list", f.greeting, "-o", "json").stdout, &jobs)
		if len(jobs) != 2 || jobs[0]["priority"] != json.Number("2") {
			t.Errorf("jobs of the varchar pipeline after refresh --priority 2: %v", jobs)
		}
	})

	t.Run("ignore, retry and delete steer jobs", func(t *testing.T) {
		golden(t, "ignore.txt", f.normalize(f.mustRun(t, 0, "ignore", a, "--key", "subject_id=1,session_id=3").stdout))
		var job map[string]any
		decodeJSON(t, f.mustRun(t, 0, "show", a, "--key", "subject_id=1,session_id=3", "-o", "json").stdout, &job)
		if job["status"] != "ignore" {
			t.Errorf("after ignore, status = %v", job["status"])
		}
		var ign map[string]any
		decodeJSON(t, f.mustRun(t, 0, "ignore", f.greeting, "--key", `name="bob"`, "-o", "json").stdout, &ign)
		if ign["table"] != f.greeting || ign["status"] != "ignore" || ign["key"].(map[string]any)["name"] != "bob" {
			t.Errorf("ignore -o json = %v", ign)
		}

		golden(t, "retry.txt", f.normalize(f.mustRun(t, 0, "retry", a).stdout))
		decodeJSON(t, f.mustRun(t, 0, "show", a, "--key", "subject_id=2,session_id=2", "-o", "json").stdout, &job)
		if job["status"] != "pending" {
			t.Errorf("after retry, status = %v, want pending", job["status"])
		}
		keys := keysOf(t, f.mustRun(t, 0, "list", a, "--due", "--status", "pending", "-o", "json").stdout)
		if !strings.Contains(strings.Join(keys, " "), `{"subject_id":2,"session_id":2}`) {
			t.Errorf("a retried job is due at once; due pending jobs: %v", keys)
		}
		var retried map[string]any
		decodeJSON(t, f.mustRun(t, 0, "retry", a, "-o", "json").stdout, &retried)
		if retried["retried"] != json.Number("0") {
			t.Errorf("second retry -o json = %v, want 0 retried", retried)
		}

		golden(t, "delete.txt", f.normalize(f.mustRun(t, 0, "delete", a, "--status", "ignore").stdout))
		rows := readCSV(t, f.mustRun(t, 0, "delete", a, "--key", "subject_id=3", "-o", "csv").stdout)
		if want := [][]string{{"table", "deleted"}, {a, "1"}}; !reflect.DeepEqual(rows, want) {
			t.Errorf("delete --key -o csv = %v, want %v", rows, want)
		}
		var p map[string]map[string]int64
		decodeJSON(t, f.mustRun(t, 0, "progress", a, "-o", "json").stdout, &p)
		if want := map[string]int64{"pending": 2, "reserved": 1, "success": 1, "error": 0, "ignore": 0, "total": 4}; !reflect.DeepEqual(p[a], want) {
			t.Errorf("progress after ignore, retry, delete = %v, want %v", p[a], want)
		}
	})

	t.Run("watch prints one line per table and update without a terminal", func(t *testing.T) {
		golden(t, "watch.txt", f.normalize(f.mustRun(t, 0, "watch", "--count", "1").stdout))
		r := f.mustRun(t, 0, "watch", a, "--count", "3", "--interval", "100ms", "-o", "json")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 3 {
			t.Fatalf("watch --count 3 -o json printed %d lines, want 3:\n%s", len(lines), r.stdout)
		}
		for i, l := range lines {
			var u map[string]any
			decodeJSON(t, l, &u)
			if u["table"] != a || u["pending"] != json.Number("2") || u["total"] != json.Number("4") {
				t.Errorf("watch update %d = %v", i, u)
			}
			if i == 0 && (u["rate"] != nil || u["eta_seconds"] != nil) {
				t.Errorf("first update has a rate or ETA: %v", u)
			}
			if i > 0 && u["rate"] != json.Number("0") {
				t.Errorf("update %d of an idle queue: rate %v, want 0", i, u["rate"])
			}
			if _, err := time.Parse(time.RFC3339, u["time"].(string)); err != nil {
				t.Errorf("watch time %v is not RFC 3339", u["time"])
			}
		}
		rows := readCSV(t, f.mustRun(t, 0, "watch", a, "--count", "2", "--interval", "100ms", "-o", "csv").stdout)
		if len(rows) != 3 || !reflect.DeepEqual(rows[0], columnNames(watchColumns)) {
			t.Errorf("watch -o csv = %v, want one header and 2 rows", rows)
		}
	})

	t.Run("watch redraws in place on a terminal", func(t *testing.T) {
		r := f.runWith(t, runOpts{terminal: true}, "watch", a, "--count", "2", "--interval", "100ms")
		if r.code != 0 {
			t.Fatalf("watch: exit %d: %s", r.code, r.stderr)
		}
		if strings.Count(r.stdout, "jobsctl watch: every 100ms") != 2 {
			t.Errorf("want two frames:\n%q", r.stdout)
		}
		// The second frame moves the cursor up over the first (title, header, one row) and clears.
		if !strings.Contains(r.stdout, "\x1b[3F\x1b[J") {
			t.Errorf("the second frame does not redraw the first:\n%q", r.stdout)
		}
	})

	t.Run("watch stops on interrupt with exit 0", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		out := &buildtest.Output{}
		done := make(chan result)
		go func() { done <- f.runWith(t, runOpts{ctx: ctx, stdout: out}, "watch", a, "--interval", "100ms") }()
		waitfor.Within(t, 10*time.Second, "two updates of watch", func() bool { return strings.Count(out.String(), a) >= 2 })
		cancel()
		select {
		case r := <-done:
			if r.code != 0 {
				t.Errorf("interrupted watch: exit %d, stderr %q", r.code, r.stderr)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not stop within 10s of the interrupt")
		}
	})

	t.Run("drop --yes drops the jobs table only", func(t *testing.T) {
		golden(t, "drop.txt", f.normalize(f.mustRun(t, 0, "drop", a, "--yes").stdout))
		if f.tableExists(t, "~~analysis") {
			t.Error("~~analysis still exists after drop --yes")
		}
		if !f.tableExists(t, "__analysis") {
			t.Error("drop removed the target table")
		}
		var p map[string]map[string]int64
		decodeJSON(t, f.mustRun(t, 0, "progress", a, "-o", "json").stdout, &p)
		if p[a]["total"] != 0 {
			t.Errorf("progress after drop = %v, want all zero", p[a])
		}
		r := f.mustRun(t, 1, "list", a)
		if !strings.Contains(r.stderr, "refresh") {
			t.Errorf("list without a jobs table should say to refresh: %q", r.stderr)
		}
	})
}

// TestDSNWithoutDatabase runs the commands with a DSN that names no database, as the default
// DSN root@tcp(127.0.0.1:3306)/ does: every statement must qualify its tables.
func TestDSNWithoutDatabase(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insertDataJointJobs(t)
	f.env["JETJOBS_MYSQL_DSN"] = f.db.ServerDSN
	a := f.analysis
	r := f.run(t, "refresh", a, "-o", "json")
	if r.code != 0 {
		t.Fatalf("refresh: exit %d: %s", r.code, r.stderr)
	}
	var res map[string]any
	decodeJSON(t, r.stdout, &res)
	if res["added"] != json.Number("1") {
		t.Errorf("refresh = %v, want 1 added", res)
	}
	for _, args := range [][]string{
		{"progress"}, {"list", a}, {"errors", a}, {"show", a, "--key", "subject_id=2,session_id=2"},
		{"ignore", a, "--key", "subject_id=1,session_id=3"}, {"retry", a}, {"delete", a, "--status", "ignore"},
		{"watch", "--count", "1"}, {"drop", a, "--yes"},
	} {
		f.mustRun(t, 0, args...)
	}
}

// TestConfigJobsDefaults checks that refresh and ignore take their defaults from the config
// file's jobs section, and that flags override them.
func TestConfigJobsDefaults(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.analysis
	cfg, _ := json.Marshal(map[string]any{
		"mysql":  map[string]any{"dsn": f.db.DSN},
		"jobs":   map[string]any{"default_priority": 2, "stale_timeout": 0},
		"tables": []map[string]any{{"table": a}},
	})
	path := filepath.Join(t.TempDir(), "jobs.json")
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	f.env["JETJOBS_CONFIG"] = path
	priorities := func() map[string]string {
		var jobs []map[string]any
		decodeJSON(t, f.mustRun(t, 0, "list", a, "-o", "json").stdout, &jobs)
		out := map[string]string{}
		for _, j := range jobs {
			k := j["key"].(map[string]any)
			out[fmt.Sprint(k["subject_id"], ",", k["session_id"])] = fmt.Sprint(j["priority"])
		}
		return out
	}
	f.mustRun(t, 0, "ignore", a, "--key", "subject_id=1,session_id=1")
	f.mustRun(t, 0, "refresh", a, "--key", "subject_id=2")
	f.mustRun(t, 0, "refresh", a, "--key", "subject_id=3", "--priority", "7")
	want := map[string]string{"1,1": "2", "2,1": "2", "2,2": "2", "2,3": "2", "3,1": "7"}
	if got := priorities(); !reflect.DeepEqual(got, want) {
		t.Errorf("priorities = %v, want %v (ignore and refresh with jobs.default_priority 2, --priority 7)", got, want)
	}
}
