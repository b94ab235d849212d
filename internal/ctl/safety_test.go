package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRefusals proves that bad input is refused with the right exit code and a message naming
// what is wrong, and that no row of the jobs tables changes.
func TestRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insertDataJointJobs(t)
	a, g := f.analysis, f.greeting
	f.mustRun(t, 0, "refresh", g) // declares ~~greeting with jobs for ada and bob

	unchanged := func(t *testing.T, run func()) {
		t.Helper()
		beforeA, beforeG := f.checksum(t, "~~analysis"), f.checksum(t, "~~greeting")
		run()
		for _, tbl := range []string{"~~analysis", "~~greeting", "__analysis", "__greeting", "session", "person"} {
			if !f.tableExists(t, tbl) {
				t.Fatalf("table %s is gone", tbl)
			}
		}
		if after := f.checksum(t, "~~analysis"); after != beforeA {
			t.Errorf("~~analysis changed: %s, then %s", beforeA, after)
		}
		if after := f.checksum(t, "~~greeting"); after != beforeG {
			t.Errorf("~~greeting changed: %s, then %s", beforeG, after)
		}
	}

	for _, c := range []struct {
		name   string
		args   []string
		code   int
		stderr []string // every one must appear in stderr
		stdout string   // must appear in stdout
	}{
		{"missing key column", []string{"show", a, "--key", "subject_id=2"}, 2, []string{"session_id", "missing"}, ""},
		{"extra key column", []string{"ignore", a, "--key", "subject_id=2,session_id=2,result=1"}, 2, []string{`"result" is not a key column`, "subject_id (int(11)), session_id (int(11))"}, ""},
		{"status is not a key column", []string{"delete", a, "--key", "status=error"}, 2, []string{`"status" is not a key column`, "--status"}, ""},
		{"wrong type", []string{"ignore", a, "--key", "subject_id=two,session_id=2"}, 2, []string{"subject_id"}, ""},
		{"no --key for show", []string{"show", a}, 2, []string{"--key is required", "subject_id=…,session_id=…"}, ""},
		{"malformed --key", []string{"list", a, "--key", "subject_id"}, 2, []string{"--key", "COLUMN=VALUE"}, ""},
		{"duplicated column", []string{"list", a, "--key", "subject_id=1", "--key", "subject_id=2"}, 2, []string{"subject_id", "twice"}, ""},
		{"injection through an int key (whole)", []string{"ignore", a, "--key", "subject_id=1 OR 1=1,session_id=1"}, 2, []string{"subject_id"}, ""},
		{"injection through an int key (delete)", []string{"delete", a, "--key", "subject_id=1 OR 1=1"}, 2, []string{"subject_id"}, ""},
		{"injection through an int key (retry)", []string{"retry", a, "--key", "session_id=2) OR (1=1"}, 2, []string{"session_id"}, ""},
		{"injection through an int key (refresh)", []string{"refresh", a, "--key", "subject_id=0 OR 1=1"}, 2, []string{"subject_id"}, ""},
		{"injection through a varchar key is a plain value (delete)", []string{"delete", g, "--key", "name=x'; DROP TABLE `~~greeting`; --"}, 0, nil, "deleted 0 jobs"},
		{"injection through a varchar key is a plain value (retry)", []string{"retry", g, "--key", `name=bob' OR '1'='1`}, 0, nil, "0 error jobs"},
		{"injection through a varchar key is a plain value (show)", []string{"show", g, "--key", "name=' OR 1=1 -- "}, 1, []string{"no job with key"}, ""},
		{"injection through a varchar key is a plain value (list)", []string{"list", g, "--key", `name=x" OR ""="`, "-o", "json"}, 0, nil, "[]"},
		{"unknown table", []string{"progress", f.schema + ".nosuch"}, 2, []string{"unknown table", a, g}, ""},
		{"unknown table among several", []string{"progress", a, f.schema + ".nosuch"}, 2, []string{"nosuch", a}, ""},
		{"unknown schema", []string{"delete", "nosuchschema.__analysis", "--yes"}, 2, []string{"unknown table", a}, ""},
		{"not schema.table", []string{"list", "analysis"}, 2, []string{"schema.table"}, ""},
		{"drop without --yes and without a terminal", []string{"drop", a}, 2, []string{"--yes", "not a terminal", "nothing was changed"}, ""},
		{"delete of every job without --yes", []string{"delete", a}, 2, []string{"--yes", "every job"}, ""},
		{"bad status", []string{"delete", a, "--status", "failed"}, 2, []string{`--status "failed"`, "pending, reserved, success, error, ignore"}, ""},
		{"bad restriction", []string{"delete", a, "--restrict", "subject_id = = 1"}, 2, []string{"--restrict", "rejected"}, ""},
		{"restriction on an unknown column", []string{"retry", a, "--restrict", "nosuch > 1"}, 2, []string{"--restrict", "nosuch"}, ""},
		{"priority out of range", []string{"refresh", a, "--priority", "300"}, 2, []string{"--priority 300", "-128..127"}, ""},
		{"negative stale timeout", []string{"refresh", a, "--stale-timeout", "-1"}, 2, []string{"stale-timeout"}, ""},
		{"bad output format", []string{"progress", a, "-o", "yaml"}, 2, []string{"--output", "json"}, ""},
		{"unknown flag", []string{"list", a, "--colour"}, 2, []string{"colour", "jobsctl help"}, ""},
		{"missing table argument", []string{"list"}, 2, []string{"want TABLE", "jobsctl list TABLE"}, ""},
		{"too many arguments", []string{"drop", a, g, "--yes"}, 2, []string{"got 2 argument(s)"}, ""},
		{"unknown command", []string{"lsit", a}, 2, []string{`unknown command "lsit"`, "did you mean list?"}, ""},
		{"no command", nil, 2, []string{"no command given"}, ""},
		{"watch interval too short", []string{"watch", a, "--interval", "1ms"}, 2, []string{"--interval"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			unchanged(t, func() {
				r := f.run(t, c.args...)
				if r.code != c.code {
					t.Errorf("jobsctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), r.code, c.code, r.stdout, r.stderr)
				}
				for _, s := range c.stderr {
					if !strings.Contains(r.stderr, s) {
						t.Errorf("stderr should contain %q:\n%s", s, r.stderr)
					}
				}
				if c.stdout != "" && !strings.Contains(r.stdout, c.stdout) {
					t.Errorf("stdout should contain %q:\n%s", c.stdout, r.stdout)
				}
			})
		})
	}

	t.Run("unknown table lists the configured tables", func(t *testing.T) {
		r := f.mustRun(t, 2, "list", f.schema+".__nosuch")
		golden(t, "unknown_table.txt", f.normalize(r.stderr))
	})

	t.Run("drop asks on a terminal and does nothing on no", func(t *testing.T) {
		unchanged(t, func() {
			r := f.runWith(t, runOpts{terminal: true, stdin: "n\n"}, "drop", a)
			if r.code != 1 || !strings.Contains(r.stderr, "[y/N]") || !strings.Contains(r.stderr, "not confirmed") {
				t.Errorf("drop answered n: exit %d, stderr %q", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, "6 jobs: 2 pending, 1 reserved, 1 success, 1 error, 1 ignore") {
				t.Errorf("the question should say what would be lost: %q", r.stderr)
			}
			r = f.runWith(t, runOpts{terminal: true, stdin: ""}, "drop", a)
			if r.code != 1 {
				t.Errorf("drop with no answer (EOF): exit %d, want 1", r.code)
			}
		})
	})

	t.Run("delete of every job asks on a terminal", func(t *testing.T) {
		unchanged(t, func() {
			r := f.runWith(t, runOpts{terminal: true, stdin: "no\n"}, "delete", g)
			if r.code != 1 || !strings.Contains(r.stderr, "Delete every job of "+g) {
				t.Errorf("delete answered no: exit %d, stderr %q", r.code, r.stderr)
			}
		})
		r := f.runWith(t, runOpts{terminal: true, stdin: "y\n"}, "delete", g)
		if r.code != 0 || !strings.Contains(r.stdout, "deleted 2 jobs") {
			t.Errorf("delete answered y: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("drop asks on a terminal and drops on yes", func(t *testing.T) {
		r := f.runWith(t, runOpts{terminal: true, stdin: "yes\n"}, "drop", g)
		if r.code != 0 || f.tableExists(t, "~~greeting") {
			t.Errorf("drop answered yes: exit %d, stderr %q, table still there: %v", r.code, r.stderr, f.tableExists(t, "~~greeting"))
		}
	})
}

// TestExitCodes checks the codes of failures that are not about keys.
func TestExitCodes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.analysis

	t.Run("configuration errors exit 2 and name the key", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.json")
		if err := os.WriteFile(bad, []byte(`{"jobs": {"default_priorty": 3}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		r := f.mustRun(t, 2, "progress", a, "--config", bad)
		if !strings.Contains(r.stderr, "default_priorty") {
			t.Errorf("stderr should name the unknown key: %q", r.stderr)
		}
		r = f.mustRun(t, 2, "progress", a, "--config", filepath.Join(t.TempDir(), "missing.json"))
		if !strings.Contains(r.stderr, "missing.json") {
			t.Errorf("stderr should name the file: %q", r.stderr)
		}
	})

	t.Run("no table given and none configured", func(t *testing.T) {
		empty := filepath.Join(t.TempDir(), "empty.json")
		os.WriteFile(empty, []byte(`{}`), 0o644)
		r := f.mustRun(t, 2, "progress", "--config", empty, "--mysql", f.db.ServerDSN)
		if !strings.Contains(r.stderr, "tables") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})

	t.Run("an unreachable database exits 1 and hides the password", func(t *testing.T) {
		r := f.mustRun(t, 1, "progress", a, "--mysql", "root:s3cret@tcp(127.0.0.1:1)/", "--timeout", "2s")
		if !strings.Contains(r.stderr, "127.0.0.1:1") || strings.Contains(r.stderr, "s3cret") || !strings.Contains(r.stderr, "--mysql") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})

	t.Run("global flags before the command and environment", func(t *testing.T) {
		f.env["JETJOBS_MYSQL_DSN"] = "root@tcp(127.0.0.1:1)/"
		defer delete(f.env, "JETJOBS_MYSQL_DSN")
		f.mustRun(t, 1, "progress", a, "--timeout", "2s")                               // the environment overrides the file
		f.mustRun(t, 0, "--mysql", f.db.ServerDSN, "-o", "json", "progress", a)         // the flag overrides the environment
		f.mustRun(t, 0, "--mysql="+f.db.ServerDSN, "progress", "--no-headers", a)       // flags on both sides
		f.mustRun(t, 0, "progress", a, "--mysql", f.db.ServerDSN, "--output=csv", "-h") // help wins
	})
}

// refusedUnchanged runs jobsctl, wants exit code 2 and every one of want in stderr, and proves
// that the jobs tables did not change.
func (f *fixture) refusedUnchanged(t *testing.T, want []string, args ...string) {
	t.Helper()
	tables := []string{"~~analysis", "~~greeting"}
	before := make([]string, len(tables))
	for i, tbl := range tables {
		before[i] = f.checksum(t, tbl)
	}
	r := f.run(t, args...)
	if r.code != 2 {
		t.Errorf("jobsctl %s: exit %d, want 2\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	for _, s := range want {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("jobsctl %s: stderr should contain %q:\n%s", strings.Join(args, " "), s, r.stderr)
		}
	}
	for i, tbl := range tables {
		if after := f.checksum(t, tbl); after != before[i] {
			t.Errorf("jobsctl %s changed %s: %s, then %s", strings.Join(args, " "), tbl, before[i], after)
		}
	}
}

// TestRestrictStaysInsideItsParentheses proves that a --restrict that would close the
// parentheses it is placed in (and so bypass --status and the other filters), end the
// statement or comment out the rest of it is refused before any statement runs.
func TestRestrictStaysInsideItsParentheses(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insertDataJointJobs(t)
	a, g := f.analysis, f.greeting
	f.mustRun(t, 0, "refresh", g) // declares ~~greeting with jobs for ada and bob

	const escape = "session_id=6) OR (1=1"
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"delete bypassing --status", []string{"delete", a, "--status", "ignore", "--restrict", escape}, []string{`--restrict: bad restriction "session_id=6) OR (1=1"`, "closes a parenthesis"}},
		{"delete with the escape in a second --restrict", []string{"delete", g, "--restrict", "name = 'ada'", "--restrict", escape}, []string{`"session_id=6) OR (1=1"`, "closes a parenthesis"}},
		{"retry", []string{"retry", a, "--restrict", "subject_id = 9) OR (1=1"}, []string{`"subject_id = 9) OR (1=1"`, "closes a parenthesis"}},
		{"refresh", []string{"refresh", g, "--restrict", "name = 'x') OR ('1'='1"}, []string{"closes a parenthesis"}},
		{"list", []string{"list", a, "--status", "ignore", "--restrict", escape}, []string{"closes a parenthesis"}},
		{"errors", []string{"errors", a, "--restrict", escape}, []string{"closes a parenthesis"}},
		{"an unclosed parenthesis", []string{"delete", a, "--restrict", "(subject_id = 1"}, []string{"never closed"}},
		{"an unclosed string", []string{"delete", g, "--restrict", "name = 'ada"}, []string{"string", "never closed"}},
		{"a second statement", []string{"delete", a, "--status", "ignore", "--restrict", "1=1; DELETE FROM `~~analysis`"}, []string{"';'"}},
		{"a comment", []string{"delete", a, "--status", "ignore", "--restrict", "subject_id = 2 -- ) OR (1=1"}, []string{"comment"}},
		{"a hash comment", []string{"retry", a, "--restrict", "subject_id = 2 # x"}, []string{"comment"}},
		{"a block comment", []string{"delete", a, "--status", "ignore", "--restrict", "subject_id = 2 /*) OR (1=1*/"}, []string{"comment"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.refusedUnchanged(t, c.want, c.args...)
		})
	}

	t.Run("parentheses and quotes inside literals are fine", func(t *testing.T) {
		r := f.mustRun(t, 0, "delete", g, "--restrict", "name = 'x) OR (1=1' OR `name` = \"-- #;\"")
		if !strings.Contains(r.stdout, "deleted 0 jobs") {
			t.Errorf("stdout = %q", r.stdout)
		}
	})
}

// TestRefreshRefusesNegativeSeconds proves that refresh's --delay, --stale-timeout and
// --orphan-timeout refuse negative values with exit code 2, changing nothing.
func TestRefreshRefusesNegativeSeconds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insertDataJointJobs(t)
	f.mustRun(t, 0, "refresh", f.greeting)
	for _, c := range []struct{ flag, value string }{
		{"--delay", "-5"},
		{"--delay", "-0.001"},
		{"--stale-timeout", "-1"},
		{"--orphan-timeout", "-3600"},
	} {
		t.Run(c.flag+" "+c.value, func(t *testing.T) {
			f.refusedUnchanged(t, []string{c.flag, c.value, "must be ≥ 0"}, "refresh", f.analysis, c.flag, c.value)
			f.refusedUnchanged(t, []string{c.flag, c.value, "must be ≥ 0"}, "refresh", f.analysis, c.flag+"="+c.value)
		})
	}
	t.Run("0 is fine", func(t *testing.T) {
		f.mustRun(t, 0, "refresh", f.greeting, "--delay", "0", "--stale-timeout", "0", "--orphan-timeout", "0")
	})
}
