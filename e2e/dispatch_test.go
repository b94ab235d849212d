package e2e

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/natstest"
)

// deadNATS is the URL of a loopback port where no NATS server listens.
func deadNATS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "nats://" + ln.Addr().String()
}

// TestDispatchMySQLEndToEnd runs the programs with dispatch=mysql and nothing but the
// database (the configured NATS URL has no server): the scheduler refreshes and recovers, the
// workers claim due jobs from the jobs table. Strict priorities, every key computed once, and
// the jobs of a SIGKILLed worker recovered and computed by the others.
func TestDispatchMySQLEndToEnd(t *testing.T) {
	e := newEnv(t, deadNATS(t))
	e.dispatch = "mysql"
	e.writeConfig(nil)
	e.pipeline(20, 50)
	const slowKey = "5:0" // its first run is killed with its worker
	e.extra = []string{"SLOW_KEY=" + slowKey}
	if out, code := e.run("jobsctl", "refresh", e.table()); code != 0 {
		t.Fatalf("jobsctl refresh: exit %d\n%s", code, out)
	}
	e.db.Exec(t,
		"UPDATE `~~analysis` SET scheduled_time = NOW(3) - INTERVAL 1 SECOND",
		"UPDATE `~~analysis` SET priority = 1 WHERE subject_id < 2")
	scheduler := e.start("scheduler")
	handler := filepath.Join(e.dir, "handler.sh")

	// Strict priority: one worker, one job at a time, 150 calls: the first 100 are exactly
	// the priority 1 jobs.
	out, code := e.run("worker", "--exec", handler, "--concurrency", "1", "--max-calls", "150")
	if code != 0 {
		t.Fatalf("priority phase worker: exit %d\n%s", code, out)
	}
	starts := startsOf(e.readCalls())
	for i, c := range starts {
		urgent := strings.HasPrefix(c.key, "0:") || strings.HasPrefix(c.key, "1:")
		if i < 100 && !urgent || i >= 100 && urgent {
			t.Fatalf("call %d ran %s: priority 5 before priority 1, or the other way round", i, c.key)
		}
	}
	if len(starts) != 150 {
		t.Fatalf("%d calls, want 150", len(starts))
	}

	// Three workers for the rest; the one that runs the slow key is killed mid-job.
	var workers []*proc
	for range 3 {
		workers = append(workers, e.start("worker", "--exec", handler, "--concurrency", "4", "--suppress-errors"))
	}
	killedAt := e.killWorkerRunning(workers, slowKey)
	waitFor(t, "every key computed", func() bool { return e.count("SELECT COUNT(*) FROM __analysis") == 1000 })
	waitFor(t, "the jobs table to empty", func() bool { return e.count("SELECT COUNT(*) FROM `~~analysis`") == 0 })
	e.checkInvariants(killedAt, lease)
	runs := 0
	for _, c := range startsOf(e.readCalls()) {
		if c.key == slowKey {
			runs++
		}
	}
	if runs != 2 {
		t.Errorf("the killed worker's job ran %d times, want 2 (killed, then recovered)", runs)
	}
	for _, p := range append(workers, scheduler) {
		if p.exited() {
			continue
		}
		p.signal(syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Errorf("%s exit code %d after SIGTERM", p.name, code)
		}
		if out := p.out.String(); strings.Contains(out, "NATS") && !strings.Contains(out, "dispatch=mysql") {
			t.Errorf("%s with dispatch=mysql talked about NATS:\n%s", p.name, out)
		}
	}
}

// TestDispatchAutoThroughANATSOutage: with dispatch=auto (the default), the NATS server is
// killed mid-run and started again later. The workers switch to claiming from MySQL, then back
// to JetStream; the run completes with every key computed once, no two calls of a key at the
// same time, and no error rows.
func TestDispatchAutoThroughANATSOutage(t *testing.T) {
	ns := natstest.StartProcess(t, natstest.DebianServer)
	e := newEnv(t, ns.URL)
	e.pipeline(40, 50)
	handler := filepath.Join(e.dir, "handler.sh")
	scheduler := e.start("scheduler")
	var workers []*proc
	for range 3 {
		workers = append(workers, e.start("worker", "--exec", handler, "--concurrency", "4"))
	}
	computed := func() int { return e.count("SELECT COUNT(*) FROM __analysis") }
	waitFor(t, "300 keys computed through NATS", func() bool { return computed() >= 300 })
	ns.Kill()
	down := computed()
	waitFor(t, "every worker to claim from MySQL", func() bool {
		for _, w := range workers {
			if !strings.Contains(w.out.String(), "claiming jobs from MySQL") {
				return false
			}
		}
		return true
	})
	waitFor(t, "300 more keys computed without NATS", func() bool { return computed() >= down+300 })
	ns.Start()
	waitFor(t, "every worker back on JetStream", func() bool {
		for _, w := range workers {
			if !strings.Contains(w.out.String(), "taking jobs from JetStream") {
				return false
			}
		}
		return true
	})
	waitFor(t, "every key computed", func() bool { return computed() == 2000 })
	waitFor(t, "the jobs table to empty", func() bool { return e.count("SELECT COUNT(*) FROM `~~analysis`") == 0 })
	if n := e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'error'"); n != 0 {
		t.Errorf("%d error rows", n)
	}
	e.checkInvariants(nil, lease)
	for _, p := range append(workers, scheduler) {
		p.signal(syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Errorf("%s exit code %d after SIGTERM", p.name, code)
		}
		if out := p.out.String(); strings.Contains(out, "lease lost") || strings.Contains(out, "not renewed in time") {
			t.Errorf("%s: a lease was broken by the switches:\n%s", p.name, out)
		}
	}
}

// TestDispatchAutoWithoutNATSAtStart: with dispatch=auto and no NATS server at all, the
// scheduler and the workers start at once, and the workers compute every key from MySQL.
func TestDispatchAutoWithoutNATSAtStart(t *testing.T) {
	e := newEnv(t, deadNATS(t))
	e.pipeline(10, 20)
	began := time.Now()
	scheduler := e.start("scheduler")
	handler := filepath.Join(e.dir, "handler.sh")
	w1 := e.start("worker", "--exec", handler, "--concurrency", "3")
	w2 := e.start("worker", "--exec", handler, "--concurrency", "3")
	waitFor(t, "the first key computed", func() bool { return e.count("SELECT COUNT(*) FROM __analysis") > 0 })
	if d := time.Since(began); d > 15*time.Second {
		t.Errorf("the first key took %v without NATS, want it at once", d)
	}
	waitFor(t, "200 keys computed", func() bool { return e.count("SELECT COUNT(*) FROM __analysis") == 200 })
	e.checkInvariants(nil, lease)
	for _, p := range []*proc{w1, w2} {
		if !strings.Contains(p.out.String(), "NATS unreachable at start; claiming jobs from MySQL") {
			t.Errorf("worker did not say it claims from MySQL:\n%s", p.out.String())
		}
	}
	for _, p := range []*proc{w1, w2, scheduler} {
		p.signal(syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Errorf("%s exit code %d after SIGTERM", p.name, code)
		}
	}
}
