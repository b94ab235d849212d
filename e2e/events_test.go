package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/notify"
)

// A three-stage pipeline, session → __analysis → __summary, computed by the real programs with
// refresh_interval at an hour: after the refresh a scheduler makes when it takes the lead,
// only events move a key. The first key reaches __summary only through the worker's
// completion event; later keys start with a notify from jobsctl, from Go, from a parent's
// insert and from the README's raw Python publish; a bad notify changes nothing.
func TestEventDrivenPipeline(t *testing.T) {
	ns := natstest.Embedded(t)
	e := newEnv(t, ns.ClientURL())
	e.db.Exec(t,
		"CREATE TABLE session (subject_id int NOT NULL, session_id int NOT NULL, PRIMARY KEY (subject_id, session_id))",
		"CREATE TABLE __analysis (subject_id int NOT NULL, session_id int NOT NULL, result float NOT NULL, "+
			"PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id, session_id) REFERENCES session (subject_id, session_id))",
		"CREATE TABLE __summary (subject_id int NOT NULL, session_id int NOT NULL, result float NOT NULL, "+
			"PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id, session_id) REFERENCES __analysis (subject_id, session_id))",
		"INSERT INTO session VALUES (1, 1)",
	)
	analysis, summary := e.db.Name+".__analysis", e.db.Name+".__summary"
	e.tables = []map[string]any{{"table": analysis}, {"table": summary}}
	e.writeConfig(map[string]any{"refresh_interval": 3600})

	sched := e.start("scheduler", "--log-level", "debug")
	e.start("worker", "--exec", filepath.Join(e.dir, "handler.sh"), "--concurrency", "4")

	computed := func(key string) bool {
		var sub, ses int
		fmt.Sscanf(key, "%d:%d", &sub, &ses)
		return e.count("SELECT COUNT(*) FROM __summary WHERE subject_id = ? AND session_id = ?", sub, ses) == 1
	}
	// through waits for key to reach __summary; the pipeline has an hour between refreshes,
	// so anything under a minute was moved by events.
	through := func(key string, since time.Time) {
		t.Helper()
		waitFor(t, "session "+key+" to reach __summary", func() bool { return computed(key) })
		took := time.Since(since)
		t.Logf("session %s: through both stages in %v", key, took.Round(time.Millisecond))
		if took > time.Minute {
			t.Errorf("session %s took %v: not moved by events", key, took)
		}
	}
	newSession := func(sub, ses int) time.Time {
		e.db.Exec(t, fmt.Sprintf("INSERT INTO session VALUES (%d, %d)", sub, ses))
		return time.Now()
	}

	// 1: __analysis finds it at its first refresh; __summary, whose first refresh found
	// nothing, only through the completion the worker announces.
	through("1:1", time.Now())

	// 2: jobsctl notify.
	at := newSession(2, 1)
	if out, code := e.run("jobsctl", "notify", analysis, "--key", "subject_id=2,session_id=1"); code != 0 {
		t.Fatalf("jobsctl notify: exit %d\n%s", code, out)
	}
	through("2:1", at)

	// 3: the Go function.
	at = newSession(3, 1)
	nc := natstest.Conn(t, e.natsURL)
	if err := notify.Keys(context.Background(), nc, e.prefix(), analysis, map[string]any{"subject_id": 3, "session_id": 1}); err != nil {
		t.Fatal(err)
	}
	through("3:1", at)

	// 4: an insert into the parent, announced with jobsctl notify --inserted.
	at = newSession(4, 1)
	if out, code := e.run("jobsctl", "notify", e.db.Name+".session", "--inserted", "--key", "subject_id=4,session_id=1"); code != 0 {
		t.Fatalf("jobsctl notify --inserted: exit %d\n%s", code, out)
	}
	through("4:1", at)

	// 3:7: the README's Python snippet, a raw PUB over a socket.
	at = newSession(3, 7)
	runPythonNotify(t, e)
	through("3:7", at)

	// Bad notifies change nothing: jobsctl refuses them before publishing (exit 2), the
	// scheduler refuses a raw bad payload and logs why.
	newSession(9, 9) // in the key source: a refresh that went through would add it
	before := e.checksum()
	for _, args := range [][]string{
		{"--key", "subject_id=9,nosuch=1"},
		{"--key", "subject_id=9; DROP TABLE session"},
		{"--key", "subject_id=x"},
		{},
	} {
		out, code := e.run("jobsctl", append([]string{"notify", analysis}, args...)...)
		if code != 2 {
			t.Errorf("jobsctl notify %v: exit %d, want 2\n%s", args, code, out)
		}
	}
	if out, code := e.run("jobsctl", "notify", e.db.Name+".nosuchtable", "--key", "subject_id=9"); code != 2 || !strings.Contains(out, "nosuchtable") {
		t.Errorf("jobsctl notify of an unknown table: exit %d, want 2\n%s", code, out)
	}
	subj, err := notify.Subject(e.prefix(), analysis)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(subj, []byte(`[{"subject_id": "9 OR 1=1", "session_id": 9}]`)); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	waitFor(t, "the scheduler to log the refused notify", func() bool {
		return strings.Contains(sched.out.String(), "refused an event; no job changed")
	})
	if after := e.checksum(); after != before {
		t.Errorf("the jobs table changed after bad notifies: %s, then %s", before, after)
	}
	if computed("9:9") || e.count("SELECT COUNT(*) FROM `~~analysis` WHERE subject_id = 9") != 0 {
		t.Error("session 9:9 got a job from a bad notify")
	}

	// A notify while no scheduler runs is lost, its key is not: the next scheduler's refresh
	// on taking the lead finds it (and 9:9), and the events move it on.
	sched.signal(syscall.SIGTERM)
	if code := sched.wait(t); code != 0 {
		t.Fatalf("scheduler: exit %d", code)
	}
	at = newSession(5, 1)
	if out, code := e.run("jobsctl", "notify", analysis, "--key", "subject_id=5,session_id=1"); code != 0 {
		t.Fatalf("jobsctl notify with no scheduler: exit %d\n%s", code, out)
	}
	e.start("scheduler")
	through("5:1", at)
	through("9:9", at)
}

// runPythonNotify runs the README's Python snippet as written, but for the database, the
// port and the prefix, to notify session 3:7 of __analysis.
func runPythonNotify(t *testing.T, e *env) {
	t.Helper()
	var code string
	for _, s := range readmeSection(t, "Event-driven pipelines") {
		if s.lang == "python" {
			code = s.text
		}
	}
	if code == "" {
		t.Fatal("the README's Event-driven pipelines section has no python snippet")
	}
	u, err := url.Parse(e.natsURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ old, new string }{
		{`"lab.__analysis"`, `"` + e.db.Name + `.__analysis"`},
		{`port=4222`, `port=` + u.Port()},
		{`prefix="jetjobs"`, `prefix="` + e.prefix() + `"`},
	} {
		if !strings.Contains(code, r.old) {
			t.Fatalf("the README's python snippet has no %s to replace:\n%s", r.old, code)
		}
		code = strings.ReplaceAll(code, r.old, r.new)
	}
	file := filepath.Join(e.dir, "notify.py")
	if err := os.WriteFile(file, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("python3", file).CombinedOutput(); err != nil {
		t.Fatalf("python3 notify.py: %v\n%s", err, out)
	}
}
