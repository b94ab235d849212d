package worker_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetjobs/jetjobs/internal/mysqltest"
	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/tracing/tracingtest"
	"github.com/jetjobs/jetjobs/worker"
)

func TestMain(m *testing.M) { mysqltest.Main(m) }

const waitTimeout = 60 * time.Second

// bundle is a test's world: a pipeline of keys with pending jobs, published to a stream, and
// the options of the workers the test runs.
type bundle struct {
	t     testing.TB
	db    *mysqltest.DB
	nc    *nats.Conn
	opts  worker.Options // DB, NATS, Tables, short leases and retries
	jobs  *jobsdb.Jobs
	queue *queue.Table
	table string
}

// setup creates subject(n) → __result(subject_id, value) with n pending jobs, all published;
// modify, when not nil, changes the workers' options (a lease, KeepCompleted, MaxAttempts).
func setup(t *testing.T, n int, modify func(*worker.Options)) *bundle {
	t.Helper()
	t.Parallel()
	return newBundle(t, n, modify)
}

func newBundle(t testing.TB, n int, modify func(*worker.Options)) *bundle {
	t.Helper()
	return newBundleWith(t, n, natstest.Embedded(t).ClientURL(), modify)
}

// newBundleOn is newBundle on the NATS server at url.
func newBundleOn(t testing.TB, n int, url string) *bundle {
	t.Helper()
	return newBundleWith(t, n, url, nil)
}

func newBundleWith(t testing.TB, n int, url string, modify func(*worker.Options)) *bundle {
	t.Helper()
	db := mysqltest.New(t)
	db.Exec(t,
		"CREATE TABLE subject (subject_id int NOT NULL PRIMARY KEY)",
		"CREATE TABLE __result (subject_id int NOT NULL, value varchar(64) NOT NULL DEFAULT '', PRIMARY KEY (subject_id), FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
		fmt.Sprintf("INSERT INTO subject SELECT seq FROM seq_1_to_%d", n),
	)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	// The pool the programs use (interpolated parameters, pool size), not the harness's.
	pool, err := jobsdb.Open(context.Background(), db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	db.SQL = pool
	b := &bundle{t: t, db: db, nc: nc, table: db.Name + ".__result"}
	b.opts = worker.Options{
		DB: pool, NATS: nc, Tables: []worker.Table{{Name: b.table}},
		RetryBackoff: 10 * time.Millisecond,
		Jobs:         jobsdb.Options{LeaseDuration: 2 * time.Second},
		Queue:        queue.Config{Prefix: "wt", AckWait: 2 * time.Second},
	}
	if modify != nil {
		modify(&b.opts)
	}
	target, err := jobsdb.Inspect(context.Background(), db.SQL, b.table, "")
	if err != nil {
		t.Fatal(err)
	}
	b.jobs = jobsdb.New(db.SQL, target, b.opts.Jobs)
	if _, err := b.jobs.Refresh(context.Background(), jobsdb.RefreshOptions{Priority: 5, Delay: -time.Second}); err != nil {
		t.Fatal(err)
	}
	b.queue, err = queue.Open(context.Background(), nc, db.Name, "__result", b.opts.Queue)
	if err != nil {
		t.Fatal(err)
	}
	b.publishDue()
	return b
}

// publishDue publishes every due pending job, as the scheduler does.
func (b *bundle) publishDue() {
	b.t.Helper()
	natstest.PublishDue(b.t, b.jobs, b.queue)
}

func (b *bundle) worker(h worker.Handler, opts func(*worker.Options)) *worker.Worker {
	b.t.Helper()
	o := b.opts
	o.Handler, o.Once, o.Concurrency = h, true, 4
	if opts != nil {
		opts(&o)
	}
	w, err := worker.New(o)
	if err != nil {
		b.t.Fatal(err)
	}
	return w
}

func (b *bundle) run(w *worker.Worker) (worker.Summary, error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return w.Run(ctx)
}

func (b *bundle) count(query string) int {
	b.t.Helper()
	var n int
	if err := b.db.SQL.QueryRow(query).Scan(&n); err != nil {
		b.t.Fatalf("%s: %v", query, err)
	}
	return n
}

func subjectID(job *worker.Job) int {
	n, _ := strconv.Atoi(fmt.Sprint(job.Key["subject_id"]))
	return n
}

func TestRowsCommitWithTheCompletion(t *testing.T) {
	b := setup(t, 50, nil)
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		return worker.Result{Rows: []jobsdb.Row{{"value": fmt.Sprintf("v%d", subjectID(job))}}}, nil
	}, nil)
	sum, err := b.run(w)
	if err != nil {
		t.Fatal(err)
	}
	if sum.SuccessCount != 50 || len(sum.ErrorList) != 0 {
		t.Errorf("summary %+v, want 50 successes", sum)
	}
	if n := b.count("SELECT COUNT(*) FROM __result WHERE value = CONCAT('v', subject_id)"); n != 50 {
		t.Errorf("%d target rows written with their key filled in, want 50", n)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result`"); n != 0 {
		t.Errorf("%d jobs left, want none (keep_completed is off)", n)
	}
}

func TestWriteCallbackRunsInTheCompletionTransaction(t *testing.T) {
	b := setup(t, 10, func(o *worker.Options) { o.Jobs.KeepCompleted = true })
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		id := subjectID(job)
		return worker.Result{Write: func(ctx context.Context, tx *sql.Tx) error {
			if id == 3 {
				return errors.New("constraint says no")
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO __result VALUES (?, 'tx')", id)
			return err
		}}, nil
	}, func(o *worker.Options) { o.SuppressErrors = true })
	sum, err := b.run(w)
	if err != nil {
		t.Fatal(err)
	}
	if sum.SuccessCount != 9 || len(sum.ErrorList) != 1 {
		t.Fatalf("summary %+v, want 9 successes and 1 error", sum)
	}
	if n := b.count("SELECT COUNT(*) FROM __result WHERE subject_id = 3"); n != 0 {
		t.Errorf("the failed Write left %d target rows", n)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'success'"); n != 9 {
		t.Errorf("%d success rows, want 9", n)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'error' AND subject_id = 3 AND error_message LIKE '%constraint says no%'"); n != 1 {
		t.Errorf("the failed Write is not recorded as the job's error")
	}
}

func TestRetryableFailuresRetryThenFail(t *testing.T) {
	b := setup(t, 2, func(o *worker.Options) { o.MaxAttempts = 3 })
	var calls [3]atomic.Int32
	h := func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		id := subjectID(job)
		if n := calls[id].Add(1); job.Attempt != int(n) {
			return worker.Result{}, fmt.Errorf("attempt %d on call %d", job.Attempt, n)
		}
		if id == 1 && job.Attempt < 2 || id == 2 {
			return worker.Result{}, worker.Retryable(errors.New("flaky"))
		}
		return worker.Result{}, nil
	}
	// Key 1 fails once then succeeds (2 calls); key 2 fails every attempt (3 calls): with
	// --max-calls 5 counting finished calls, the worker stops after the last of them.
	w := b.worker(h, func(o *worker.Options) { o.SuppressErrors, o.Once, o.MaxCalls = true, false, 5 })
	// Retries become due later: keep publishing what is due, as the scheduler would.
	defer b.keepPublishing()()
	sum, err := b.run(w)
	if err != nil {
		t.Fatal(err)
	}
	if calls[1].Load() != 2 || calls[2].Load() != 3 {
		t.Errorf("calls: key 1 ran %d times (want 2), key 2 ran %d times (want 3 = max_attempts)", calls[1].Load(), calls[2].Load())
	}
	if sum.SuccessCount != 1 || len(sum.ErrorList) != 1 || !strings.Contains(sum.ErrorList[0].Error, "attempt 3 of 3") {
		t.Errorf("summary %+v", sum)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'error' AND attempts = 3"); n != 1 {
		t.Errorf("the exhausted job is not an error row after 3 attempts")
	}
}

func TestPanicIsRecordedWithItsStack(t *testing.T) {
	b := setup(t, 1, nil)
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		var m map[string]int
		m["boom"]++ // panics
		return worker.Result{}, nil
	}, func(o *worker.Options) { o.SuppressErrors = true })
	sum, err := b.run(w)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.ErrorList) != 1 || !strings.Contains(sum.ErrorList[0].Error, "panic: assignment to entry in nil map") {
		t.Fatalf("summary %+v", sum)
	}
	jobs, err := b.jobs.List(context.Background(), jobsdb.Filter{Statuses: []jobsdb.Status{jobsdb.StatusError}})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("error jobs: %v %v", jobs, err)
	}
	job, err := b.jobs.Get(context.Background(), jobs[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(job.ErrorStack, "worker_test.go") {
		t.Errorf("the stack does not point at the handler:\n%s", job.ErrorStack)
	}
}

func TestFailureStopsTheWorkerWithoutSuppressErrors(t *testing.T) {
	b := setup(t, 20, nil)
	var ran atomic.Int32
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		ran.Add(1)
		if subjectID(job) == 1 {
			return worker.Result{}, errors.New("bad input")
		}
		return worker.Result{}, nil
	}, func(o *worker.Options) { o.Concurrency = 1 })
	sum, err := b.run(w)
	if !errors.Is(err, worker.ErrJobFailed) {
		t.Fatalf("Run returned %v, want ErrJobFailed", err)
	}
	if len(sum.ErrorList) != 1 || ran.Load() == 20 {
		t.Errorf("after the failure the worker went on: %d calls, summary %+v", ran.Load(), sum)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'error' AND error_message = 'bad input'"); n != 1 {
		t.Errorf("the failure was not recorded")
	}
}

func TestMaxCallsCountsFinishedJobs(t *testing.T) {
	b := setup(t, 30, nil)
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		return worker.Result{}, nil
	}, func(o *worker.Options) { o.MaxCalls, o.Concurrency = 7, 3 })
	sum, err := b.run(w)
	if err != nil {
		t.Fatal(err)
	}
	if sum.SuccessCount != 7 {
		t.Errorf("--max-calls 7 finished %d jobs", sum.SuccessCount)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result`"); n != 23 {
		t.Errorf("%d jobs left, want 23 (none reserved and left behind)", n)
	}
}

func TestLostLeaseCancelsTheJob(t *testing.T) {
	b := setup(t, 1, nil)
	started := make(chan struct{})
	var cause atomic.Value
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		close(started)
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		return worker.Result{}, ctx.Err()
	}, nil)
	done := make(chan error, 1)
	go func() { _, err := b.run(w); done <- err }()
	<-started
	// jobsctl delete (or an orphan recovery) takes the job away from its holder.
	b.db.Exec(t, "UPDATE `~~result` SET lease_token = 'someoneelse00000000000000000000' WHERE status = 'reserved'")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c, _ := cause.Load().(error); !errors.Is(c, jobsdb.ErrLeaseLost) {
		t.Errorf("the job's context was cancelled by %v, want the lost lease", c)
	}
	var status, token string
	if err := b.db.SQL.QueryRow("SELECT status, lease_token FROM `~~result`").Scan(&status, &token); err != nil {
		t.Fatal(err)
	}
	if status != "reserved" || token != "someoneelse00000000000000000000" {
		t.Errorf("the fenced worker changed the new holder's job: %s %s", status, token)
	}
}

func TestStopReleasesRunningJobsAfterGrace(t *testing.T) {
	b := setup(t, 2, nil)
	var started atomic.Int32
	all := make(chan struct{})
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		if started.Add(1) == 2 {
			close(all)
		}
		<-ctx.Done()
		return worker.Result{}, ctx.Err()
	}, func(o *worker.Options) { o.Grace, o.Once = 100*time.Millisecond, false })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := w.Run(ctx); done <- err }()
	<-all
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'pending' AND lease_token = '' AND dispatched_time IS NULL"); n != 2 {
		t.Errorf("%d released jobs, want both pending again, not errors", n)
	}
}

func TestExecHandlerProtocol(t *testing.T) {
	b := setup(t, 3, func(o *worker.Options) { o.MaxAttempts = 1 })
	dir := t.TempDir()
	script := filepath.Join(dir, "h.sh")
	os.WriteFile(script, []byte(`#!/bin/sh
read key
case "$JETJOBS_KEY_SUBJECT_ID" in
1) printf '{"value": "%s#%s#%s"}' "$JETJOBS_TABLE" "$JETJOBS_ATTEMPT" "$(printf %s "$key" | tr -d '{}"')" ;;
2) echo "first line" >&2; echo "ValueError: no" >&2; exit 3 ;;
3) exit 75 ;;
esac
`), 0o755)
	w := b.worker(worker.Exec(worker.ExecOptions{Command: script}), func(o *worker.Options) { o.SuppressErrors = true })
	sum, err := b.run(w)
	if err != nil {
		t.Fatal(err)
	}
	var value string
	if err := b.db.SQL.QueryRow("SELECT value FROM __result WHERE subject_id = 1").Scan(&value); err != nil {
		t.Fatalf("the stdout row was not inserted: %v (summary %+v)", err, sum)
	}
	if want := b.table + "#1#subject_id:1"; value != want {
		t.Errorf("handler saw %q, want %q", value, want)
	}
	if len(sum.ErrorList) != 2 {
		t.Fatalf("summary %+v", sum)
	}
	var msg string
	b.db.SQL.QueryRow("SELECT error_message FROM `~~result` WHERE subject_id = 2").Scan(&msg)
	if msg != "ValueError: no" {
		t.Errorf("error message %q, want the last line of stderr (the exception line, as DataJoint stores it)", msg)
	}
	b.db.SQL.QueryRow("SELECT error_message FROM `~~result` WHERE subject_id = 3").Scan(&msg)
	if !strings.Contains(msg, "attempt 1 of 1") {
		t.Errorf("exit 75 with no attempt left: %q", msg)
	}
}

func TestExecTimeoutKillsTheProcessGroup(t *testing.T) {
	b := setup(t, 1, nil)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	cmd := "sleep 600 & echo $! > " + pidFile + "; wait"
	w := b.worker(worker.Exec(worker.ExecOptions{Command: cmd, Timeout: 500 * time.Millisecond}), func(o *worker.Options) { o.SuppressErrors = true })
	sum, err := b.run(w)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.ErrorList) != 1 || !strings.Contains(sum.ErrorList[0].Error, "timed out") {
		t.Fatalf("summary %+v", sum)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	deadline := time.Now().Add(waitTimeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the handler's child %d survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie waiting for a reaper does not run).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

func TestTelemetryCountsAndSpans(t *testing.T) {
	b := setup(t, 10, func(o *worker.Options) { o.MaxAttempts = 1 })
	tel, rec := tracingtest.New(t)
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		if !trace.SpanFromContext(ctx).SpanContext().IsValid() {
			return worker.Result{}, errors.New("the handler's context carries no span")
		}
		if subjectID(job) <= 3 {
			return worker.Result{}, errors.New("fails on purpose")
		}
		return worker.Result{}, nil
	}, func(o *worker.Options) { o.SuppressErrors, o.Telemetry = true, tel })
	sum, err := b.run(w)
	if err != nil {
		t.Fatal(err)
	}
	if sum.SuccessCount != 7 || len(sum.ErrorList) != 3 {
		t.Fatalf("summary %+v", sum)
	}
	for name, want := range map[string]int64{
		tracing.MetricReserved:  10,
		tracing.MetricCompleted: 7,
		tracing.MetricFailed:    3,
	} {
		if got := rec.Counter(t, name, b.table); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	// Each job: process (root here, as nothing was published with a trace context) with
	// reserve, run and complete or fail as children.
	children := map[trace.SpanID][]string{}
	roots := 0
	for _, s := range rec.Ended() {
		if strings.HasPrefix(s.Name(), "process ") {
			roots++
			continue
		}
		children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], strings.Fields(s.Name())[0])
	}
	if roots != 10 {
		t.Errorf("%d process spans, want 10", roots)
	}
	for _, names := range children {
		got := strings.Join(names, ",")
		if !strings.Contains(got, "reserve") || !strings.Contains(got, "run") || !(strings.Contains(got, "complete") || strings.Contains(got, "fail")) {
			t.Errorf("a job's spans are %s, want reserve, run and complete or fail", got)
		}
	}
}

func TestStopWithAnEndedContextReleasesRunningJobsAtOnce(t *testing.T) {
	b := setup(t, 2, nil)
	var started atomic.Int32
	all := make(chan struct{})
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		if started.Add(1) == 2 {
			close(all)
		}
		<-ctx.Done()
		return worker.Result{}, ctx.Err()
	}, func(o *worker.Options) { o.Once = false })
	if err := w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-all
	// The second signal, or the end of the grace period: release the running jobs now.
	now, cancel := context.WithCancel(context.Background())
	cancel()
	stopped := make(chan struct{})
	go func() { w.Stop(now); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(waitTimeout):
		t.Fatal("Stop did not end the running jobs")
	}
	if sum, err := w.Summary(); err != nil || len(sum.ErrorList) != 0 {
		t.Fatalf("summary %+v, %v: released jobs are not errors", sum, err)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'pending' AND lease_token = ''"); n != 2 {
		t.Errorf("%d jobs released to pending, want 2", n)
	}
}
