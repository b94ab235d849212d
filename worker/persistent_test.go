package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jetjobs/jetjobs/internal/buildtest"
	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/tracing/tracingtest"
	"github.com/jetjobs/jetjobs/worker"
)

// pythonDir is the repository's Python package, which the Python handlers import.
func pythonDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.Abs("../python")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// pythonHandler writes a persistent handler in Python, built on jetjobs.serve: body defines
// compute(job). Its process id is appended to the file returned, once per start.
func pythonHandler(t testing.TB, body string) (command, starts string) {
	t.Helper()
	dir := t.TempDir()
	starts = filepath.Join(dir, "starts")
	script := fmt.Sprintf(`import os, sys, time
sys.path.insert(0, %q)
import jetjobs
jetjobs.protocol_stream()
print("a library printing on stdout at import")  # must not break the protocol
with open(%q, "a") as f:
    f.write("%%d\n" %% os.getpid())

%s

jetjobs.serve(compute)
`, pythonDir(t), starts, body)
	path := filepath.Join(dir, "handler.py")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return "python3 " + path, starts
}

// startedPIDs reads the pids a handler wrote at its starts.
func startedPIDs(t testing.TB, file string) []int {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		pid, _ := strconv.Atoi(f)
		pids = append(pids, pid)
	}
	return pids
}

// persistent returns a persistent handler for command, stopped at the end of the test, and
// what it logs.
func persistent(t testing.TB, opts worker.PersistentOptions) (*worker.PersistentHandler, *buildtest.Output) {
	t.Helper()
	logs := &buildtest.Output{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	p := worker.Persistent(opts)
	t.Cleanup(p.Stop)
	return p, logs
}

// runSuppressing runs a worker with handler h, Concurrency jobs at once and SuppressErrors,
// and checks how many jobs succeeded and failed.
func (b *bundle) runSuppressing(h worker.Handler, concurrency, successes, failures int) {
	b.t.Helper()
	w := b.worker(h, func(o *worker.Options) { o.SuppressErrors, o.Concurrency = true, concurrency })
	sum, err := b.run(w)
	if err != nil || sum.SuccessCount != successes || len(sum.ErrorList) != failures {
		b.t.Fatalf("summary %+v, %v; want %d successes and %d errors", sum, err, successes, failures)
	}
}

// keepPublishing publishes what is due every 20 ms, as the scheduler would, so that retries
// are taken when their backoff ends; it returns the function that stops it.
func (b *bundle) keepPublishing() (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
				b.publishDue()
			}
		}
	}()
	return func() { close(done); <-stopped }
}

func (b *bundle) errorOf(subject int) (message, stack string) {
	b.t.Helper()
	job, err := b.jobs.Get(context.Background(), jobsdb.Key{subject})
	if err != nil {
		b.t.Fatal(err)
	}
	if job.Status != jobsdb.StatusError {
		b.t.Fatalf("job %d is %s, want error", subject, job.Status)
	}
	return job.ErrorMessage, job.ErrorStack
}

func TestPersistentHandlerComputesManyJobsPerProcess(t *testing.T) {
	b := setup(t, 40, nil)
	command, starts := pythonHandler(t, fmt.Sprintf(`
def compute(job):
    if job.table != %q or job.key != {"subject_id": job.key["subject_id"]}:
        raise ValueError("the request has table %%s and key %%s" %% (job.table, job.key))
    return {"value": "%%d#%%d" %% (job.attempt, os.getpid())}
`, b.table))
	p, _ := persistent(t, worker.PersistentOptions{Command: command})
	w := b.worker(p.Handle, func(o *worker.Options) { o.Concurrency = 3 })
	sum, err := b.run(w)
	if err != nil || sum.SuccessCount != 40 {
		t.Fatalf("summary %+v, %v", sum, err)
	}
	pids := startedPIDs(t, starts)
	if len(pids) == 0 || len(pids) > 3 {
		t.Fatalf("%d handler processes started for 40 jobs at 3 at once, want one per slot at most", len(pids))
	}
	rows, err := b.db.SQL.Query("SELECT value FROM __result")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var v string
		rows.Scan(&v)
		if attempt, _, _ := strings.Cut(v, "#"); attempt != "1" {
			t.Fatalf("row %q: the request did not carry the attempt", v)
		}
		n++
	}
	if n != 40 {
		t.Fatalf("%d rows from the replies, want 40", n)
	}
}

func TestPersistentHandlerFailuresAreRecordedAsDataJointDoes(t *testing.T) {
	b := setup(t, 4, func(o *worker.Options) { o.MaxAttempts = 2 })
	command, _ := pythonHandler(t, `
calls = {}
def compute(job):
    sid = job.key["subject_id"]
    calls[sid] = calls.get(sid, 0) + 1
    print("computing subject %d" % sid, file=sys.stderr)
    print("a print goes to stderr too")
    if sid == 2:
        raise ValueError("subject 2 has no spikes")
    if sid == 3 and job.attempt == 1:
        raise jetjobs.Retry("the file server is busy")
    if sid == 4:
        raise KeyError("x" * 3000)
    return None
`)
	p, logs := persistent(t, worker.PersistentOptions{Command: command})
	w := b.worker(p.Handle, func(o *worker.Options) { o.SuppressErrors, o.Concurrency, o.Once = true, 1, false; o.MaxCalls = 5 })
	defer b.keepPublishing()()
	sum, err := b.run(w)
	if err != nil || sum.SuccessCount != 2 || len(sum.ErrorList) != 2 {
		t.Fatalf("summary %+v, %v; want subjects 1 and 3 (after a retry) computed, 2 and 4 failed", sum, err)
	}
	t.Run("the message is the exception line, the stack the job's stderr and traceback", func(t *testing.T) {
		msg, stack := b.errorOf(2)
		if msg != "ValueError: subject 2 has no spikes" {
			t.Errorf("error_message %q", msg)
		}
		if !strings.HasPrefix(stack, "computing subject 2\na print goes to stderr too\nTraceback (most recent call last):") ||
			!strings.HasSuffix(stack, "ValueError: subject 2 has no spikes\n") {
			t.Errorf("error_stack:\n%s", stack)
		}
		if strings.Contains(stack, "subject 1") || strings.Contains(stack, "subject 3") {
			t.Errorf("another job's stderr is in this job's stack:\n%s", stack)
		}
	})
	t.Run("a long message is truncated as DataJoint truncates it", func(t *testing.T) {
		msg, _ := b.errorOf(4)
		if len(msg) != jobsdb.ErrorMessageLength || !strings.HasPrefix(msg, "KeyError: 'xxx") || !strings.HasSuffix(msg, "...truncated") {
			t.Errorf("message of %d characters: %.30s…%s", len(msg), msg, msg[max(0, len(msg)-20):])
		}
	})
	t.Run("stderr goes to the worker's log with the job it belongs to", func(t *testing.T) {
		want := regexp.MustCompile(`msg="handler stderr" handler=.* pid=[0-9]+ line="computing subject 2" table=` +
			regexp.QuoteMeta(b.table) + ` key="{\\"subject_id\\":2}"`)
		if !want.MatchString(logs.String()) {
			t.Errorf("log:\n%s", logs.String())
		}
	})
}

func TestPersistentHandlerThatDiesIsRestartedAndItsJobFails(t *testing.T) {
	b := setup(t, 3, nil)
	command, starts := pythonHandler(t, `
def compute(job):
    if job.key["subject_id"] == 2:
        print("Fatal Python error: Segmentation fault", file=sys.stderr, flush=True)
        os._exit(139)
    return {"value": str(os.getpid())}
`)
	p, _ := persistent(t, worker.PersistentOptions{Command: command})
	b.runSuppressing(p.Handle, 1, 2, 1)
	msg, stack := b.errorOf(2)
	if msg != "Fatal Python error: Segmentation fault" || !strings.Contains(stack, "Segmentation fault") {
		t.Errorf("error_message %q, stack %q: want the last line of its stderr", msg, stack)
	}
	if pids := startedPIDs(t, starts); len(pids) < 2 {
		t.Errorf("started %v: the dead handler was not restarted", pids)
	}
}

func TestPersistentHandlerThatBreaksTheProtocolIsKilled(t *testing.T) {
	b := setup(t, 2, nil)
	dir := t.TempDir()
	script := filepath.Join(dir, "h.sh")
	// A shell handler: the handshake, then a reply to the first request that is not JSON.
	os.WriteFile(script, []byte(`#!/bin/sh
echo "$$" >> `+filepath.Join(dir, "starts")+`
echo '{"protocol":"jetjobs-handler","version":1}'
while IFS= read -r line; do
  id=${line#*\"id\":}; id=${id%%,*}
  case "$line" in
  *'"subject_id":1'*) echo "Traceback: oops" >&2; echo "this is not JSON" ;;
  *) echo "{\"id\":$id,\"ok\":true,\"rows\":{\"value\":\"ok\"}}" ;;
  esac
done
`), 0o755)
	p, _ := persistent(t, worker.PersistentOptions{Command: script})
	b.runSuppressing(p.Handle, 1, 1, 1)
	msg, stack := b.errorOf(1)
	if !strings.HasPrefix(msg, `handler broke the protocol: its reply "this is not JSON" is not a JSON object`) || stack != "Traceback: oops\n" {
		t.Errorf("error_message %q, stack %q", msg, stack)
	}
	if n := b.count("SELECT COUNT(*) FROM __result WHERE subject_id = 2 AND value = 'ok'"); n != 1 {
		t.Error("the next job was not computed by a new handler")
	}
	if pids := startedPIDs(t, filepath.Join(dir, "starts")); len(pids) != 2 {
		t.Errorf("started %v, want the broken handler and its replacement", pids)
	}
}

// shellGroupHandler is a shell handler that, for each job, starts a child in its process group
// (recording the child's pid in dir/child) and waits for it: killing only the handler would
// leave the child computing.
func shellGroupHandler(t testing.TB) (script, childFile string) {
	t.Helper()
	dir := t.TempDir()
	script, childFile = filepath.Join(dir, "h.sh"), filepath.Join(dir, "child")
	os.WriteFile(script, []byte(`#!/bin/sh
echo '{"protocol":"jetjobs-handler","version":1}'
while IFS= read -r line; do
  echo "computing" >&2
  sleep 600 &
  echo $! > `+childFile+`
  wait
done
`), 0o755)
	return script, childFile
}

func childPID(t testing.TB, file string) int {
	t.Helper()
	var pid int
	waitfor.True(t, "the handler to start its child", func() bool {
		data, _ := os.ReadFile(file)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		return pid > 0
	})
	return pid
}

func TestPersistentHandlerTimeoutKillsTheProcessGroup(t *testing.T) {
	b := setup(t, 1, nil)
	script, childFile := shellGroupHandler(t)
	p, _ := persistent(t, worker.PersistentOptions{Command: script, Timeout: 500 * time.Millisecond})
	b.runSuppressing(p.Handle, 1, 0, 1)
	if msg, stack := b.errorOf(1); msg != "handler timed out after 500ms and was killed" || stack != "computing\n" {
		t.Errorf("error_message %q, stack %q; want the timeout and the job's stderr", msg, stack)
	}
	child := childPID(t, childFile)
	waitfor.True(t, "the handler's child to be killed with its group", func() bool { return !alive(child) })
}

func TestPersistentHandlerOfALostLeaseIsKilled(t *testing.T) {
	b := setup(t, 1, nil)
	script, childFile := shellGroupHandler(t)
	p, _ := persistent(t, worker.PersistentOptions{Command: script})
	w := b.worker(p.Handle, nil)
	done := make(chan error, 1)
	go func() { _, err := b.run(w); done <- err }()
	child := childPID(t, childFile)
	// jobsctl delete (or an orphan recovery) takes the job away from its holder.
	b.db.Exec(t, "UPDATE `~~result` SET lease_token = 'someoneelse00000000000000000000' WHERE status = 'reserved'")
	waitfor.True(t, "the handler of the lost job to be killed with its group", func() bool { return !alive(child) })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'reserved' AND lease_token = 'someoneelse00000000000000000000'"); n != 1 {
		t.Error("the fenced worker changed the new holder's job")
	}
}

func TestPersistentHandlerJobIsReleasedWhenTheWorkerStops(t *testing.T) {
	b := setup(t, 1, nil)
	script, childFile := shellGroupHandler(t)
	p, _ := persistent(t, worker.PersistentOptions{Command: script})
	w := b.worker(p.Handle, func(o *worker.Options) { o.Once = false })
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	child := childPID(t, childFile)
	// The grace period is over: the running job is released and its handler killed.
	now, cancel := context.WithCancel(context.Background())
	cancel()
	w.Stop(now)
	if sum, err := w.Summary(); err != nil || len(sum.ErrorList) != 0 {
		t.Fatalf("summary %+v, %v: a released job is no error", sum, err)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'pending' AND lease_token = ''"); n != 1 {
		t.Error("the job was not released to pending")
	}
	waitfor.True(t, "the handler to be killed with its group", func() bool { return !alive(child) })
}

func TestPersistentHandlerThatCrashesAtStartIsNotRestartedInALoop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	script := filepath.Join(dir, "h.sh")
	os.WriteFile(script, []byte(`#!/bin/sh
echo "$$" >> `+starts+`
echo "Traceback (most recent call last):" >&2
echo "ModuleNotFoundError: No module named 'lab_pipeline'" >&2
exit 1
`), 0o755)
	p, logs := persistent(t, worker.PersistentOptions{Command: script})
	job := &worker.Job{Table: "lab.__analysis", KeyJSON: []byte(`{"subject_id":1}`), Attempt: 1}

	err := p.Start(context.Background(), 2)
	var execErr *worker.ExecError
	if !errors.As(err, &execErr) || execErr.Message != "handler failed to start: exited with status 1 before its handshake: ModuleNotFoundError: No module named 'lab_pipeline'" ||
		!strings.HasPrefix(execErr.Stack(), "Traceback") {
		t.Fatalf("Start: %v", err)
	}
	// Each start failed: the next one waits a second; a job meanwhile waits for it.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := p.Handle(ctx, job); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a job right after the failed start: %v, want it to wait for the next start", err)
	}
	if n := len(startedPIDs(t, starts)); n != 2 {
		t.Fatalf("%d starts, want the 2 of Start and none while the restart waits", n)
	}
	// After the delay, the next job starts it again, and fails with the same clear error.
	if _, err := p.Handle(context.Background(), job); !errors.As(err, &execErr) || !strings.Contains(execErr.Message, "ModuleNotFoundError") {
		t.Fatalf("the job after the delay: %v", err)
	}
	if !strings.Contains(logs.String(), "the handler failed to start; the next start waits") {
		t.Errorf("log:\n%s", logs.String())
	}
}

func TestPersistentHandlerHandshakeIsChecked(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct{ first, want string }{
		"stdout before the handshake": {"connected to root@127.0.0.1:3306",
			`handler failed to start: its first line on stdout is "connected to root@127.0.0.1:3306", not the handshake {"protocol": "jetjobs-handler", "version": 1}: stdout carries the protocol only; logs and prints belong on stderr`},
		"another version": {`{"protocol":"jetjobs-handler","version":2}`,
			"handler failed to start: it speaks version 2 of the protocol; this worker speaks version 1"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			script := filepath.Join(t.TempDir(), "h.sh")
			os.WriteFile(script, []byte("#!/bin/sh\necho '"+tc.first+"'\nexec sleep 600\n"), 0o755)
			p, _ := persistent(t, worker.PersistentOptions{Command: script})
			err := p.Start(context.Background(), 1)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Start: %v\nwant: %s", err, tc.want)
			}
		})
	}
	t.Run("a handler that never says hello", func(t *testing.T) {
		t.Parallel()
		p, _ := persistent(t, worker.PersistentOptions{Command: "sleep 600", StartTimeout: 200 * time.Millisecond})
		if err := p.Start(context.Background(), 1); err == nil || !strings.Contains(err.Error(), "it sent no handshake within 200ms") {
			t.Fatalf("Start: %v", err)
		}
	})
}

func TestPersistentHandlerStopEndsThePrograms(t *testing.T) {
	t.Parallel()
	command, starts := pythonHandler(t, "def compute(job):\n    return None\n")
	p, _ := persistent(t, worker.PersistentOptions{Command: command})
	if err := p.Start(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	pids := startedPIDs(t, starts)
	if len(pids) != 2 {
		t.Fatalf("started %v, want 2", pids)
	}
	p.Stop()
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("handler %d still runs after Stop", pid)
		}
	}
	if _, err := p.Handle(context.Background(), &worker.Job{KeyJSON: []byte("{}")}); !errors.Is(err, worker.ErrHandlerStopped) {
		t.Errorf("a job after Stop: %v", err)
	}
}

// A supervisor signals every process of a service at once: a persistent handler killed by the
// stop signal while its worker stops has its job released, not recorded as failed.
func TestPersistentHandlerKilledWithTheWorkersStopSignalIsReleased(t *testing.T) {
	b := setup(t, 1, nil)
	script, childFile := shellGroupHandler(t)
	p, _ := persistent(t, worker.PersistentOptions{Command: script})
	b.stopWithTheHandlersGroup(p.Handle, func() int {
		group, err := syscall.Getpgid(childPID(t, childFile))
		if err != nil {
			t.Fatal(err)
		}
		return group
	})
}

// stopWithTheHandlersGroup runs a worker with handler h, signals the process group of the
// running handler (group waits for it to run) with SIGTERM and stops the worker right after,
// as a supervisor does, and checks that the job was released, not recorded as failed.
func (b *bundle) stopWithTheHandlersGroup(h worker.Handler, group func() int) {
	b.t.Helper()
	w := b.worker(h, func(o *worker.Options) { o.Once = false })
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var sum worker.Summary
	go func() {
		var err error
		sum, err = w.Run(ctx)
		done <- err
	}()
	// The handler's process group gets the signal first, the worker a moment later.
	if err := syscall.Kill(-group(), syscall.SIGTERM); err != nil {
		b.t.Fatal(err)
	}
	stop()
	if err := <-done; err != nil {
		b.t.Fatalf("Run: %v", err)
	}
	if len(sum.ErrorList) != 0 {
		b.t.Errorf("errors %v, want none: the job was interrupted, not failed", sum.ErrorList)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'pending' AND attempts = 0"); n != 1 {
		b.t.Errorf("the job is not pending with its attempt given back")
	}
}

// What a handler writes on stderr is stored as valid UTF-8, so that DataJoint can decode every
// error of the table: invalid bytes replaced, and the 4 MiB tail of a long stderr cut between
// characters.
func TestExecStderrIsStoredAsValidUTF8(t *testing.T) {
	b := setup(t, 1, nil)
	// "x", 5,000,000 bytes of é, then a last line with an invalid byte: the 4 MiB tail kept
	// begins inside an é.
	b.runSuppressing(worker.Exec(worker.ExecOptions{
		Command: `python3 -c 'import sys; sys.stderr.buffer.write(b"x" + "é".encode() * 2500000 + b"\nbad \xff byte!\n"); sys.exit(1)'`,
	}), 1, 0, 1)
	msg, stack := b.errorOf(1)
	if msg != "bad \uFFFD byte!" {
		t.Errorf("error_message %q, want the last line with its invalid byte replaced", msg)
	}
	if !strings.HasPrefix(stack, "éé") || !strings.HasSuffix(stack, "\nbad \uFFFD byte!\n") || !utf8.ValidString(stack) {
		t.Errorf("error_stack of %d bytes begins %q and ends %q", len(stack), stack[:min(8, len(stack))], stack[max(0, len(stack)-16):])
	}
}

// A request carries the job's trace context and, with a timeout, its deadline.
func TestPersistentHandlerRequestCarriesTraceContextAndDeadline(t *testing.T) {
	b := setup(t, 1, nil)
	tel, rec := tracingtest.New(t)
	command, _ := pythonHandler(t, `
import datetime
def compute(job):
    left = (job.deadline - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    return {"value": "%s|%d" % (job.trace.get("traceparent", ""), round(left))}
`)
	p, _ := persistent(t, worker.PersistentOptions{Command: command, Timeout: time.Hour})
	w := b.worker(p.Handle, func(o *worker.Options) { o.Telemetry = tel })
	if sum, err := b.run(w); err != nil || sum.SuccessCount != 1 {
		t.Fatalf("summary %+v, %v", sum, err)
	}
	var value string
	if err := b.db.SQL.QueryRow("SELECT value FROM __result").Scan(&value); err != nil {
		t.Fatal(err)
	}
	traceparent, left, _ := strings.Cut(value, "|")
	if left != "3600" && left != "3599" {
		t.Errorf("the handler saw a deadline %s s ahead, want an hour (the timeout)", left)
	}
	var runs []string
	for _, s := range rec.Ended() {
		if strings.HasPrefix(s.Name(), "run ") {
			runs = append(runs, "00-"+s.SpanContext().TraceID().String()+"-"+s.SpanContext().SpanID().String()+"-01")
		}
	}
	if len(runs) != 1 || traceparent != runs[0] {
		t.Errorf("the handler saw traceparent %q, want the job's run span %v", traceparent, runs)
	}
}
