package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/queue"
)

const lease = 3 * time.Second // jobs.lease_duration in the test config

// TestEndToEnd runs a scheduler and three worker processes with an --exec handler over a
// 2,000-key pipeline on an embedded NATS server, with a killed worker, a NATS restart and a
// deleted stream on the way, and checks the invariants from the jobs table and the per-call
// log.
func TestEndToEnd(t *testing.T) {
	store := t.TempDir()
	ns, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	url := ns.ClientURL()
	t.Cleanup(func() { ns.Shutdown() })

	e := newEnv(t, url)
	e.pipeline(40, 50)
	const (
		slowKey  = "5:0" // its first run is killed with its worker
		failKey  = "8:8"
		retryKey = "7:7"
	)
	e.extra = []string{"SLOW_KEY=" + slowKey, "FAIL_KEY=" + failKey, "RETRY_KEY=" + retryKey}

	// All 2,000 jobs pending at priority 5, due at the same time, except: subjects 0 and 1
	// (100 jobs) at priority 1, and five jobs of subject 39 delayed by 15 seconds.
	if out, code := e.run("jobsctl", "refresh", e.table()); code != 0 {
		t.Fatalf("jobsctl refresh: exit %d\n%s", code, out)
	}
	e.db.Exec(t,
		"UPDATE `~~analysis` SET scheduled_time = NOW(3) - INTERVAL 1 SECOND",
		"UPDATE `~~analysis` SET priority = 1 WHERE subject_id < 2",
		"UPDATE `~~analysis` SET scheduled_time = NOW(3) + INTERVAL 15 SECOND WHERE subject_id = 39 AND session_id < 5",
	)
	delayed := map[string]time.Time{}
	rows, err := e.db.SQL.Query("SELECT CONCAT(subject_id, ':', session_id), UNIX_TIMESTAMP(scheduled_time) FROM `~~analysis` WHERE scheduled_time > NOW(3)")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		var at float64
		if err := rows.Scan(&k, &at); err != nil {
			t.Fatal(err)
		}
		delayed[k] = time.Unix(0, int64(at*1e9))
	}
	rows.Close()
	if len(delayed) != 5 {
		t.Fatalf("want 5 delayed jobs, have %d", len(delayed))
	}

	scheduler := e.start("scheduler")
	waitFor(t, "the scheduler to publish the 1,995 due jobs", func() bool {
		return e.count("SELECT COUNT(*) FROM `~~analysis` WHERE dispatched_time IS NOT NULL") >= 1995
	})

	// Strict priority: one worker, one job at a time, 150 calls: the first 100 are exactly
	// the priority 1 jobs.
	out, code := e.run("worker", "--exec", filepath.Join(e.dir, "handler.sh"), "--concurrency", "1", "--max-calls", "150", "-o", "json")
	if code != 0 {
		t.Fatalf("priority phase worker: exit %d\n%s", code, out)
	}
	var summary struct {
		SuccessCount int               `json:"success_count"`
		ErrorList    []json.RawMessage `json:"error_list"`
	}
	if err := json.Unmarshal([]byte(out[strings.LastIndex(out, "{\n"):]), &summary); err != nil {
		t.Fatalf("summary: %v\n%s", err, out)
	}
	if summary.SuccessCount != 150 {
		t.Errorf("--max-calls 150 ran %d successful jobs", summary.SuccessCount)
	}
	for i, c := range startsOf(e.readCalls()) {
		urgent := strings.HasPrefix(c.key, "0:") || strings.HasPrefix(c.key, "1:")
		if i < 100 && !urgent {
			t.Fatalf("call %d ran priority 5 job %s while priority 1 jobs were waiting", i, c.key)
		}
	}

	// Three workers for the rest.
	handler := filepath.Join(e.dir, "handler.sh")
	workers := []*proc{}
	for range 3 {
		workers = append(workers, e.start("worker", "--exec", handler, "--concurrency", "4", "--suppress-errors"))
	}

	// Kill the worker that runs the slow key, mid-job, and start a replacement.
	killedAt := e.killWorkerRunning(workers, slowKey)
	workers = append(workers, e.start("worker", "--exec", handler, "--concurrency", "4", "--suppress-errors"))

	// Restart NATS mid-run, with the same store, on the same port.
	waitFor(t, "500 jobs computed", func() bool { return e.count("SELECT COUNT(*) FROM __analysis") >= 500 })
	ns.Shutdown()
	ns, err = queue.StartEmbedded(queue.EmbeddedOptions{Listen: strings.TrimPrefix(url, "nats://"), StoreDir: store})
	if err != nil {
		t.Fatalf("restart NATS: %v", err)
	}

	// Delete the stream mid-run: the scheduler republishes from MySQL.
	waitFor(t, "1,000 jobs computed", func() bool { return e.count("SELECT COUNT(*) FROM __analysis") >= 1000 })
	deleteStream(t, url, e)

	waitFor(t, "every job computed except the failing one", func() bool {
		return e.count("SELECT COUNT(*) FROM __analysis") == 1999
	})
	waitFor(t, "the failing job recorded as an error", func() bool {
		return e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'error'") == 1
	})
	if n := e.count("SELECT COUNT(*) FROM `~~analysis`"); n != 1 {
		t.Errorf("the jobs table holds %d rows, want only the error row", n)
	}
	var msg string
	if err := e.db.SQL.QueryRow("SELECT error_message FROM `~~analysis` WHERE status = 'error'").Scan(&msg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "ValueError: bad session "+failKey) {
		t.Errorf("error message %q does not carry the handler's stderr tail", msg)
	}
	show, code := e.run("jobsctl", "show", e.table(), "--key", "subject_id=8,session_id=8")
	if code != 0 || !strings.Contains(show, "traceback line 1") {
		t.Errorf("jobsctl show does not give the whole stderr as the stack (exit %d):\n%s", code, show)
	}

	calls := e.readCalls()
	for key, at := range delayed {
		for _, c := range calls {
			if c.key == key && c.phase == "start" && c.at.Before(at) {
				t.Errorf("delayed job %s ran at %v, before its scheduled time %v", key, c.at, at)
			}
		}
	}
	retried := 0
	for _, c := range calls {
		if c.key == retryKey && c.phase == "start" {
			retried++
		}
	}
	if retried != 2 {
		t.Errorf("the retryable job ran %d times, want 2 (a retry after exit 75)", retried)
	}
	e.checkInvariants(killedAt, lease)

	for _, w := range workers {
		if w.exited() {
			continue
		}
		w.signal(syscall.SIGTERM)
		if code := w.wait(t); code != 0 {
			t.Errorf("worker exit code %d after SIGTERM, want 0", code)
		}
	}
	scheduler.signal(syscall.SIGTERM)
	if code := scheduler.wait(t); code != 0 {
		t.Errorf("scheduler exit code %d after SIGTERM, want 0", code)
	}
}

func startsOf(calls []call) []call {
	var starts []call
	for _, c := range calls {
		if c.phase == "start" {
			starts = append(starts, c)
		}
	}
	return starts
}

// deleteStream deletes the test table's stream behind the programs' backs.
func deleteStream(t *testing.T, url string, e *env) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name, err := js.StreamNameBySubject(ctx, fmt.Sprintf("%s.%s.__analysis.p5.x", e.prefix(), e.db.Name))
	if err != nil {
		t.Fatalf("find the stream: %v", err)
	}
	if err := js.DeleteStream(ctx, name); err != nil {
		t.Fatalf("delete the stream: %v", err)
	}
}

// TestEndToEndExternalNATS29 proves the programs against the NATS server installed on the
// machine (Debian's 2.9.10 on 127.0.0.1:4222).
func TestEndToEndExternalNATS29(t *testing.T) {
	e := newEnv(t, natstest.External(t))
	e.pipeline(10, 20)
	scheduler := e.start("scheduler")
	handler := filepath.Join(e.dir, "handler.sh")
	w1 := e.start("worker", "--exec", handler, "--concurrency", "3")
	w2 := e.start("worker", "--exec", handler, "--concurrency", "3")
	waitFor(t, "200 jobs computed", func() bool { return e.count("SELECT COUNT(*) FROM __analysis") == 200 })
	waitFor(t, "the jobs table to empty", func() bool { return e.count("SELECT COUNT(*) FROM `~~analysis`") == 0 })
	e.checkInvariants(nil, lease)
	for _, p := range []*proc{w1, w2, scheduler} {
		p.signal(syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Errorf("%s exit code %d after SIGTERM", p.name, code)
		}
	}
	deleteStream(t, e.natsURL, e)
}

// TestSIGTERMReleasesRunningJobs: a worker told to stop lets its running job finish within
// the grace period, then releases it to pending, not error.
func TestSIGTERMReleasesRunningJobs(t *testing.T) {
	e := newEnv(t, natstest.Embedded(t).ClientURL())
	e.pipeline(1, 2)
	e.extra = []string{"HOLD_KEY=0:0"}
	e.start("scheduler")
	w := e.start("worker", "--exec", filepath.Join(e.dir, "handler.sh"), "--concurrency", "2", "--grace", "1s")
	waitFor(t, "the other job to finish and the held one to start", func() bool {
		return e.count("SELECT COUNT(*) FROM __analysis") == 1 && len(startsOf(e.readCalls())) == 2
	})
	w.signal(syscall.SIGTERM)
	if code := w.wait(t); code != 0 {
		t.Errorf("worker exit code %d after SIGTERM, want 0", code)
	}
	var status string
	var attempts int
	var token string
	if err := e.db.SQL.QueryRow("SELECT status, attempts, lease_token FROM `~~analysis` WHERE subject_id = 0 AND session_id = 0").Scan(&status, &attempts, &token); err != nil {
		t.Fatal(err)
	}
	if status != "pending" || token != "" {
		t.Errorf("interrupted job is %s with lease %q, want pending with no lease", status, token)
	}
	if n := e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'error'"); n != 0 {
		t.Errorf("%d error rows after a SIGTERM", n)
	}
}

// TestSchedulerFailover: with the leading scheduler killed, the standby takes over and new
// keys still get computed.
func TestSchedulerFailover(t *testing.T) {
	e := newEnv(t, natstest.Embedded(t).ClientURL())
	e.pipeline(1, 5)
	first := e.start("scheduler")
	e.start("worker", "--exec", filepath.Join(e.dir, "handler.sh"), "--concurrency", "2")
	waitFor(t, "the first keys computed under the first scheduler", func() bool {
		return e.count("SELECT COUNT(*) FROM __analysis") == 5
	})
	second := e.start("scheduler")
	first.signal(syscall.SIGKILL)
	first.wait(t)
	e.db.Exec(t, "INSERT INTO session SELECT 0, seq FROM seq_5_to_9")
	waitFor(t, "new keys computed after the failover", func() bool {
		return e.count("SELECT COUNT(*) FROM __analysis") == 10
	})
	second.signal(syscall.SIGTERM)
	if code := second.wait(t); code != 0 {
		t.Errorf("standby scheduler exit code %d", code)
	}
}

// TestBadMessagesRejected: a malformed message, keys with wrong columns and injection
// attempts in key values are rejected with a logged error and change no row.
func TestBadMessagesRejected(t *testing.T) {
	url := natstest.Embedded(t).ClientURL()
	e := newEnv(t, url)
	e.pipeline(2, 2)
	if out, code := e.run("jobsctl", "refresh", e.table(), "--delay", "3600"); code != 0 {
		t.Fatalf("jobsctl refresh: exit %d\n%s", code, out)
	}
	before := e.checksum()
	w := e.start("worker", "--exec", filepath.Join(e.dir, "handler.sh"))
	waitFor(t, "the worker to open the stream", func() bool { return streamExists(t, url, e) })

	// Published through the queue package, as the scheduler publishes, so the messages go to
	// the subjects and consumers workers read.
	nc := natstest.Conn(t, url)
	q, err := queue.Open(context.Background(), nc, e.db.Name, "__analysis", queue.Config{Prefix: e.prefix()})
	if err != nil {
		t.Fatal(err)
	}
	bad := []string{
		`not json`,
		`{"subject_id": 0}`,
		`{"subject_id": 0, "session_id": 0, "extra": 1}`,
		`{"subject_id": "0 OR 1=1", "session_id": 0}`,
		`{"subject_id": 0, "session_id": "0; DELETE FROM ` + "`~~analysis`" + `"}`,
		`{"subject_id": 0, "session_id": 1.5}`,
	}
	msgs := make([]queue.Message, len(bad))
	for i, payload := range bad {
		msgs[i] = queue.Message{Priority: 5, Key: []byte(payload)}
	}
	if _, err := q.Publish(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	q.Wake()
	waitFor(t, "the worker to reject every bad message", func() bool {
		return strings.Count(w.out.String(), "rejecting a malformed message") == len(bad)
	})
	if after := e.checksum(); after != before {
		t.Errorf("bad messages changed the jobs table (checksum %s → %s)", before, after)
	}
	if n := e.count("SELECT COUNT(*) FROM __analysis"); n != 0 {
		t.Errorf("bad messages computed %d rows", n)
	}
	if calls := e.readCalls(); len(calls) != 0 {
		t.Errorf("the handler ran for bad messages: %+v", calls)
	}
	w.signal(syscall.SIGTERM)
	w.wait(t)
}

func streamExists(t *testing.T, url string, e *env) bool {
	nc, err := nats.Connect(url)
	if err != nil {
		return false
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = js.StreamNameBySubject(ctx, fmt.Sprintf("%s.%s.__analysis.p5.x", e.prefix(), e.db.Name))
	return err == nil
}

func (e *env) prefix() string { return "e2e" + strings.ReplaceAll(e.db.Name, "_", "") }
