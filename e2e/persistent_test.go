package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetjobs/jetjobs/internal/natstest"
)

// pythonPackage puts the repository's Python package on the programs' PYTHONPATH.
func (e *env) pythonPackage() {
	e.t.Helper()
	dir, err := filepath.Abs("../python")
	if err != nil {
		e.t.Fatal(err)
	}
	e.extra = append(e.extra, "PYTHONPATH="+dir)
}

func TestWorkerRunsAPersistentHandler(t *testing.T) {
	e := newEnv(t, natstest.Embedded(t).ClientURL())
	e.pythonPackage()
	e.pipeline(2, 10)
	e.writeConfig(map[string]any{"keep_completed": true})
	starts := filepath.Join(e.dir, "starts")
	handler := filepath.Join(e.dir, "handler.py")
	os.WriteFile(handler, []byte(`import os, jetjobs
with open(`+"\""+starts+"\""+`, "a") as f:
    f.write("%d\n" % os.getpid())
jetjobs.serve(lambda job: {"result": job.key["session_id"] + 0.5})
`), 0o644)

	if out, code := e.run("jobsctl", "refresh", e.table()); code != 0 {
		t.Fatalf("jobsctl refresh: exit %d\n%s", code, out)
	}
	e.start("scheduler")
	out, code := e.run("worker", "--exec", "python3 "+handler, "--persistent", "-j", "3", "--once")
	if code != 0 || !strings.Contains(out, "success_count: 20") {
		t.Fatalf("worker: exit %d\n%s", code, out)
	}
	if n := e.count("SELECT COUNT(*) FROM __analysis WHERE result = session_id + 0.5"); n != 20 {
		t.Errorf("%d rows from the handler's replies, want 20", n)
	}
	data, _ := os.ReadFile(starts)
	if n := len(strings.Fields(string(data))); n != 3 {
		t.Errorf("%d handler processes for 20 jobs at -j 3, want 3, started before the first job", n)
	}
	// The database user, as DataJoint writes it (USER()), not the operating system's.
	var user string
	if err := e.db.SQL.QueryRow("SELECT USER()").Scan(&user); err != nil {
		t.Fatal(err)
	}
	if n := e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'success' AND user = ?", user); n != 20 {
		t.Errorf("%d jobs with user %q, want 20", n, user)
	}
}

func TestWorkerWhoseHandlerCannotStartTakesNoJob(t *testing.T) {
	e := newEnv(t, natstest.Embedded(t).ClientURL())
	e.pythonPackage()
	e.pipeline(1, 5)
	if out, code := e.run("jobsctl", "refresh", e.table()); code != 0 {
		t.Fatalf("jobsctl refresh: exit %d\n%s", code, out)
	}
	out, code := e.run("worker", "--datajoint", "no_such_pipeline.Analysis", "--once")
	if code != 1 || !strings.Contains(out, "worker: python3 -m jetjobs.datajoint no_such_pipeline.Analysis: handler failed to start: "+
		"exited with status 1 before its handshake: ModuleNotFoundError: No module named 'no_such_pipeline'") {
		t.Fatalf("worker: exit %d, want 1 with the handler's reason\n%s", code, out)
	}
	if n := e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'pending' AND attempts = 0"); n != 5 {
		t.Errorf("%d of 5 jobs untouched: the worker took jobs it could not compute", n)
	}
}
