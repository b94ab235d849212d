//go:build datajoint

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetjobs/jetjobs/internal/djtest"
	"github.com/jetjobs/jetjobs/internal/natstest"
)

// djPipeline is a DataJoint pipeline, the module djpipeline (its database and whether its
// tables have DataJoint's hidden job metadata are formatted in): Analysis, computed by the
// DataJoint adapter with its own make(), which logs each call to MAKE_LOG (session 13 raises;
// session 14 writes bytes that are not UTF-8 on stderr, stored as U+FFFD, and raises; the
// others insert a row), and Summary, whose rows a persistent handler returns to the worker.
const djPipeline = `import os, sys
import datajoint as dj

dj.config["jobs.add_job_metadata"] = %s
schema = dj.Schema(%q)


@schema
class Subject(dj.Manual):
    definition = """
    subject_id : int32
    """


@schema
class Session(dj.Manual):
    definition = """
    -> Subject
    session_id : int32
    """


@schema
class Analysis(dj.Computed):
    definition = """
    -> Session
    ---
    result : float64
    """

    def make(self, key):
        with open(os.environ["MAKE_LOG"], "a") as log:
            log.write("%%d:%%d %%d\n" %% (key["subject_id"], key["session_id"], os.getpid()))
        if key["session_id"] == 13:
            raise ValueError(f"subject {key['subject_id']}, session 13: the recording is corrupt")
        if key["session_id"] == 14:
            sys.stderr.buffer.write(b"raw bytes \xff\xfe from a C library\n")
            sys.stderr.flush()
            raise RuntimeError("undecodable output")
        self.insert1({**key, "result": key["subject_id"] * 1.5})


@schema
class Summary(dj.Computed):
    definition = """
    -> Session
    ---
    n : int32
    """

    def make(self, key):
        raise NotImplementedError("computed by a jetjobs handler")
`

// writePipeline writes the module djpipeline into dir for database db.
func writePipeline(t testing.TB, dir, db string, metadata bool) {
	t.Helper()
	flag := "False"
	if metadata {
		flag = "True"
	}
	if err := os.WriteFile(filepath.Join(dir, "djpipeline.py"), []byte(fmt.Sprintf(djPipeline, flag, db)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// djCheck reads, with DataJoint, what jetjobs left: it prints one JSON line.
const djCheck = `import json
import datajoint as dj
from djpipeline import Analysis

jobs = Analysis.jobs
out = {
    "progress": jobs.progress(),
    "errors": [{"session": j["session_id"], "message": j["error_message"], "stack": j["error_stack"]} for j in jobs.errors.to_dicts()],
    "users": sorted({j["user"] for j in jobs.completed.to_dicts()}),
    "dj_user": dj.conn().get_user(),
    "refresh": jobs.refresh(),
    "remaining": list(Analysis().progress()),
}
print(json.dumps(out))
`

func TestDataJointAdapterComputesEveryKeyOnceAndDataJointReadsTheJobs(t *testing.T) {
	e := newEnv(t, natstest.Embedded(t).ClientURL())
	env := djtest.Env(t, e.db.ServerDSN, e.dir)
	djtest.Require(t, env)
	makeLog := filepath.Join(e.dir, "make.log")
	e.extra = append(e.extra, env...)
	e.extra = append(e.extra, "MAKE_LOG="+makeLog)
	writePipeline(t, e.dir, e.db.Name, true)
	const subjects, sessions = 3, 15
	keys := subjects * sessions
	if out, err := djtest.Python(t, e.dir, e.extra, fmt.Sprintf(`from djpipeline import Subject, Session
Subject.insert({"subject_id": s} for s in range(1, %d))
Session.insert({"subject_id": s, "session_id": n} for s in range(1, %d) for n in range(1, %d))
`, subjects+1, subjects+1, sessions+1)); err != nil {
		t.Fatalf("declaring the pipeline with DataJoint: %v\n%s", err, out)
	}
	summary := filepath.Join(e.dir, "summary.py")
	os.WriteFile(summary, []byte("import jetjobs\njetjobs.serve(lambda job: {\"n\": job.key[\"session_id\"]})\n"), 0o644)
	// One worker for both: Analysis through its "datajoint" entry, Summary through --exec.
	e.tables = []map[string]any{
		{"table": e.db.Name + ".__analysis", "datajoint": "djpipeline.Analysis"},
		{"table": e.db.Name + ".__summary"},
	}
	e.writeConfig(map[string]any{"keep_completed": true})

	e.start("scheduler")
	waitFor(t, "the scheduler to queue every key of both tables", func() bool {
		var n int
		err := e.db.SQL.QueryRow("SELECT (SELECT COUNT(*) FROM `~~analysis`) + (SELECT COUNT(*) FROM `~~summary`)").Scan(&n)
		return err == nil && n == 2*keys // until the scheduler declared both jobs tables, an error
	})
	out, code := e.run("worker", "--exec", "python3 "+summary, "--persistent", "-j", "2", "--suppress-errors", "--once")
	if code != 0 {
		t.Fatalf("worker: exit %d\n%s", code, out)
	}

	t.Run("the adapter ran make() once per key", func(t *testing.T) {
		data, err := os.ReadFile(makeLog)
		if err != nil {
			t.Fatal(err)
		}
		calls := map[string]int{}
		pids := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			key, pid, _ := strings.Cut(line, " ")
			calls[key]++
			pids[pid] = true
		}
		if len(calls) != keys {
			t.Errorf("make() ran for %d keys, want %d", len(calls), keys)
		}
		for key, n := range calls {
			if n != 1 {
				t.Errorf("make(%s) ran %d times", key, n)
			}
		}
		if len(pids) > 2 {
			t.Errorf("make() ran in %d processes at -j 2: the adapter was not kept running", len(pids))
		}
		if n := e.count("SELECT COUNT(*) FROM __analysis"); n != keys-2*subjects {
			t.Errorf("%d rows in Analysis, want %d", n, keys-2*subjects)
		}
	})
	t.Run("DataJoint's log stayed off the protocol and went to the worker's log", func(t *testing.T) {
		if !strings.Contains(out, `msg="handler stderr"`) || !strings.Contains(out, "connected to") {
			t.Errorf("the worker's log has no DataJoint log line:\n%s", out)
		}
	})

	check, err := djtest.Python(t, e.dir, e.extra, djCheck)
	if err != nil {
		t.Fatalf("DataJoint could not read the jobs: %v\n%s", err, check)
	}
	var got struct {
		Progress map[string]int `json:"progress"`
		Errors   []struct {
			Session int    `json:"session"`
			Message string `json:"message"`
			Stack   string `json:"stack"`
		} `json:"errors"`
		Users     []string       `json:"users"`
		DJUser    string         `json:"dj_user"`
		Refresh   map[string]int `json:"refresh"`
		Remaining []int          `json:"remaining"`
	}
	lines := strings.Split(strings.TrimSpace(check), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("%v\n%s", err, check)
	}
	t.Run("Table.jobs.progress() counts what jetjobs did", func(t *testing.T) {
		want := map[string]int{"pending": 0, "reserved": 0, "success": keys - 2*subjects, "error": 2 * subjects, "ignore": 0, "total": keys}
		for k, v := range want {
			if got.Progress[k] != v {
				t.Errorf("progress %v, want %v", got.Progress, want)
				break
			}
		}
	})
	t.Run("Table.jobs.errors reads messages and decoded stacks as DataJoint writes them", func(t *testing.T) {
		if len(got.Errors) != 2*subjects {
			t.Fatalf("%d errors, want %d", len(got.Errors), 2*subjects)
		}
		for _, e := range got.Errors {
			switch e.Session {
			case 13:
				if !strings.HasPrefix(e.Message, "ValueError: subject ") || !strings.HasSuffix(e.Message, ", session 13: the recording is corrupt") ||
					!strings.HasPrefix(e.Stack, "Traceback (most recent call last):\n") || !strings.Contains(e.Stack, "in _populate1") ||
					!strings.HasSuffix(e.Stack, e.Message+"\n") {
					t.Errorf("session 13: message %q, stack:\n%s", e.Message, e.Stack)
				}
			case 14:
				if e.Message != "RuntimeError: undecodable output" || !strings.HasPrefix(e.Stack, "raw bytes \uFFFD from a C library\nTraceback") {
					t.Errorf("session 14: message %q, stack:\n%s", e.Message, e.Stack)
				}
			default:
				t.Errorf("unexpected error %+v", e)
			}
		}
	})
	t.Run("Table.jobs.refresh() works on the table and adds nothing", func(t *testing.T) {
		if got.Refresh["added"] != 0 || got.Refresh["removed"] != 0 || len(got.Remaining) != 2 || got.Remaining[0] != 2*subjects {
			t.Errorf("refresh %v, progress (remaining, total) %v", got.Refresh, got.Remaining)
		}
	})
	t.Run("the user is the database user, as DataJoint writes it", func(t *testing.T) {
		if len(got.Users) != 1 || got.Users[0] != got.DJUser || !strings.Contains(got.DJUser, "@") {
			t.Errorf("users of the jobs %v, DataJoint's %q", got.Users, got.DJUser)
		}
	})
	t.Run("the hidden job metadata is filled, for DataJoint's rows and for jetjobs'", func(t *testing.T) {
		if n := e.count("SELECT COUNT(*) FROM __summary WHERE n = session_id AND _job_start_time IS NOT NULL AND _job_duration >= 0 AND _job_version = ''"); n != keys {
			t.Errorf("%d Summary rows (inserted by jetjobs) with their metadata, want %d", n, keys)
		}
		if n := e.count("SELECT COUNT(*) FROM __analysis WHERE _job_start_time IS NOT NULL"); n != keys-2*subjects {
			t.Errorf("%d Analysis rows with their metadata, want %d", n, keys-2*subjects)
		}
	})
}
