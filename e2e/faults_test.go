package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/internal/procfs"
)

// TestNATS29CrashLeavesNoKeyBehind: nats-server 2.9 killed mid-run and restarted on the same
// store restores messages that had been acked, behind their consumer's ack floor, where no
// consumer delivers them. Each holds its key's subject, so every later publish of that key
// was refused and the key never computed again. The scheduler removes them, and the keys are
// computed again when their target rows are deleted, long before RedispatchAfter (2 minutes
// here) could matter. Whether a crash leaves such messages depends on what the server had
// flushed: the scenario runs again, on a fresh pipeline, until one does (three times at most).
func TestNATS29CrashLeavesNoKeyBehind(t *testing.T) {
	const attempts = 3
	for attempt := 1; ; attempt++ {
		if natsCrashLeftStrays(t) {
			return
		}
		if attempt == attempts {
			t.Fatalf("%d crashes left no stray messages: the test did not exercise their removal", attempts)
		}
		t.Logf("crash %d left no stray messages; again", attempt)
	}
}

// natsCrashLeftStrays runs the scenario once, checking that every key is computed, and again
// after the target is emptied; it reports whether the scheduler removed stray messages.
func natsCrashLeftStrays(t *testing.T) bool {
	ns := natstest.StartProcess(t, natstest.DebianServer)
	e := newEnv(t, ns.URL)
	e.nats = map[string]any{"ack_wait": 30}
	e.writeConfig(map[string]any{"lease_duration": 60})
	e.pipeline(40, 50)
	handler := filepath.Join(e.dir, "handler.sh")
	scheduler := e.start("scheduler")
	var workers []*proc
	for range 2 {
		workers = append(workers, e.start("worker", "--exec", handler, "--concurrency", "8"))
	}
	waitFor(t, "half of the keys computed", func() bool { return e.count("SELECT COUNT(*) FROM __analysis") >= 1000 })
	ns.Kill()
	ns.Start()
	waitFor(t, "every key computed", func() bool { return e.count("SELECT COUNT(*) FROM __analysis") == 2000 })

	e.db.Exec(t, "DELETE FROM __analysis")
	waitFor(t, "every key computed again", func() bool { return e.count("SELECT COUNT(*) FROM __analysis") == 2000 })
	for _, p := range append(workers, scheduler) {
		p.signal(syscall.SIGTERM)
		p.wait(t)
	}
	ns.Kill()
	return strings.Contains(scheduler.out.String(), "removed messages that no consumer would deliver")
}

// TestSIGTERMToWorkerAndHandlers: systemctl stop, Kubernetes and kill -TERM -PGID signal the
// worker and its handlers at once. The interrupted jobs are released, as for a SIGTERM to the
// worker alone, and the worker exits 0.
func TestSIGTERMToWorkerAndHandlers(t *testing.T) {
	e := newEnv(t, natstest.Embedded(t).ClientURL())
	e.pipeline(1, 2)
	e.extra = []string{"HOLD_KEY=0:0"}
	e.start("scheduler")
	w := e.start("worker", "--exec", filepath.Join(e.dir, "handler.sh"), "--concurrency", "2")
	waitFor(t, "the other job to finish and the held one to start", func() bool {
		return e.count("SELECT COUNT(*) FROM __analysis") == 1 && len(startsOf(e.readCalls())) == 2
	})
	// The handler runs in a process group of its own: signal it, and the worker.
	for _, pid := range procfs.Children(w.cmd.Process.Pid) {
		syscall.Kill(-pid, syscall.SIGTERM)
	}
	w.signal(syscall.SIGTERM)
	if code := w.wait(t); code != 0 {
		t.Errorf("worker exit code %d, want 0\n%s", code, w.out.String())
	}
	if n := e.count("SELECT COUNT(*) FROM `~~analysis` WHERE subject_id = 0 AND session_id = 0 AND status = 'pending' AND attempts = 0"); n != 1 {
		t.Error("the interrupted job is not pending with its attempt given back")
	}
	if n := e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'error'"); n != 0 {
		t.Errorf("%d error rows after a SIGTERM", n)
	}
}

// TestWorkerWaitsForMySQL: a worker started while MySQL is unreachable keeps trying, says so,
// and a SIGTERM meanwhile ends it cleanly (exit 0).
func TestWorkerWaitsForMySQL(t *testing.T) {
	e := newEnv(t, natstest.Embedded(t).ClientURL())
	e.pipeline(1, 1)
	w := e.start("worker", "--exec", filepath.Join(e.dir, "handler.sh"), "--mysql", "root@tcp(127.0.0.1:1)/")
	waitFor(t, "the worker to report MySQL unreachable twice", func() bool {
		if w.exited() {
			t.Fatalf("the worker gave up:\n%s", w.out.String())
		}
		return strings.Count(w.out.String(), "cannot reach MySQL; retrying") >= 2
	})
	w.signal(syscall.SIGTERM)
	if code := w.wait(t); code != 0 {
		t.Errorf("worker exit code %d after a SIGTERM while waiting, want 0\n%s", code, w.out.String())
	}
}

// TestMemoryStreamRefilledAfterNATSRestart: with nats.storage = memory a NATS restart empties
// the stream. The scheduler notices and publishes every due job again at once, not after
// RedispatchAfter (2·ack_wait + lease_duration: 11 minutes here, far beyond waitTimeout), and a
// worker started after the restart computes every key once.
func TestMemoryStreamRefilledAfterNATSRestart(t *testing.T) {
	ns := natstest.StartProcess(t, natstest.DebianServer)
	e := newEnv(t, ns.URL)
	e.nats = map[string]any{"ack_wait": 30, "storage": "memory"}
	e.writeConfig(map[string]any{"lease_duration": 600})
	e.pipeline(10, 20)
	e.start("scheduler")
	waitFor(t, "every job published", func() bool {
		return e.count("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = '~~analysis'") == 1 &&
			e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'pending' AND dispatched_time IS NOT NULL") == 200
	})
	ns.Kill()
	ns.Start()
	e.start("worker", "--exec", filepath.Join(e.dir, "handler.sh"), "--concurrency", "8")
	waitFor(t, "every key computed", func() bool { return e.count("SELECT COUNT(*) FROM __analysis") == 200 })
	if starts := startsOf(e.readCalls()); len(starts) != 200 {
		t.Errorf("%d handler calls for 200 keys", len(starts))
	}
	if n := e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'error'"); n != 0 {
		t.Errorf("%d error rows", n)
	}
}
