package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/buildtest"
	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/tracing/tracingtest"
	"github.com/jetjobs/jetjobs/worker"
)

// calls records a handler's calls per subject, and any two calls of one subject that overlap.
type calls struct {
	mu       sync.Mutex
	n        map[int]int
	running  map[int]bool
	order    []int
	overlaps []int
}

func newCalls() *calls { return &calls{n: map[int]int{}, running: map[int]bool{}} }

// handler computes a job in d, recording the call.
func (c *calls) handler(d time.Duration) worker.Handler {
	return func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		id := subjectID(job)
		c.mu.Lock()
		c.n[id]++
		c.order = append(c.order, id)
		if c.running[id] {
			c.overlaps = append(c.overlaps, id)
		}
		c.running[id] = true
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.running[id] = false
			c.mu.Unlock()
		}()
		if d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return worker.Result{}, ctx.Err()
			}
		}
		return worker.Result{Rows: []jobsdb.Row{{"value": "computed"}}}, nil
	}
}

// check fails the test unless each of subjects 1..n was computed exactly once, without overlap.
func (c *calls) check(t *testing.T, n int) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.overlaps) > 0 {
		t.Errorf("subjects computed twice at the same time: %v", c.overlaps)
	}
	for id := 1; id <= n; id++ {
		if c.n[id] != 1 {
			t.Errorf("subject %d computed %d times, want once", id, c.n[id])
		}
	}
}

func (c *calls) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.order)
}

// mysqlOnly makes the workers claim from MySQL without NATS.
func mysqlOnly(o *worker.Options) { o.NATS, o.Dispatch = nil, worker.DispatchMySQL }

// Workers with dispatch=mysql compute every job once from the jobs table alone: no message
// is ever fetched (none was published), and several workers claim disjoint batches.
func TestMySQLDispatchComputesEveryJobOnce(t *testing.T) {
	t.Parallel()
	b := newBundle(t, 600, nil)
	b.queue.Delete(context.Background()) // nothing in JetStream: MySQL alone must do
	c := newCalls()
	var wg sync.WaitGroup
	sums := make([]worker.Summary, 3)
	for i := range sums {
		w := b.worker(c.handler(time.Millisecond), func(o *worker.Options) { mysqlOnly(o); o.Concurrency = 7 })
		wg.Go(func() {
			sum, err := b.run(w)
			if err != nil {
				t.Error(err)
			}
			sums[i] = sum
		})
	}
	wg.Wait()
	c.check(t, 600)
	total := 0
	for _, s := range sums {
		total += s.SuccessCount
	}
	if total != 600 || b.count("SELECT COUNT(*) FROM `~~result`") != 0 {
		t.Fatalf("%d successes, %d jobs left", total, b.count("SELECT COUNT(*) FROM `~~result`"))
	}
}

// Claims take the most urgent priority first, then the oldest due job, one slot at a time.
func TestMySQLDispatchTakesPrioritiesInOrder(t *testing.T) {
	t.Parallel()
	b := newBundle(t, 30, nil)
	b.db.Exec(t, "UPDATE `~~result` SET priority = 1 WHERE subject_id > 20",
		"UPDATE `~~result` SET scheduled_time = NOW(3) - INTERVAL subject_id SECOND WHERE subject_id <= 20")
	c := newCalls()
	limit := 3
	w := b.worker(c.handler(0), func(o *worker.Options) { mysqlOnly(o); o.Concurrency = 1; o.MaxPriority = &limit })
	if _, err := b.run(w); err != nil {
		t.Fatal(err)
	}
	want := []int{21, 22, 23, 24, 25, 26, 27, 28, 29, 30}
	if fmt.Sprint(c.order) != fmt.Sprint(want) {
		t.Fatalf("ran %v, want the priority 1 jobs only, in key order %v", c.order, want)
	}
	w = b.worker(c.handler(0), func(o *worker.Options) { mysqlOnly(o); o.Concurrency = 1 })
	if _, err := b.run(w); err != nil {
		t.Fatal(err)
	}
	// Then priority 5, the oldest scheduled first: 20, 19, … 1.
	for i, id := range c.order[10:] {
		if id != 20-i {
			t.Fatalf("ran %v after the urgent ones, want 20 down to 1", c.order[10:])
		}
	}
}

// A claim that finds fewer jobs than slots waits before the next, with a backoff; a job that
// becomes due meanwhile is taken within about a second.
func TestMySQLDispatchFindsNewJobsWhileIdle(t *testing.T) {
	t.Parallel()
	b := newBundle(t, 5, nil)
	c := newCalls()
	w := b.worker(c.handler(0), func(o *worker.Options) { mysqlOnly(o); o.Once = false })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := w.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	waitUntil(t, "the first five jobs", func() bool { return c.total() == 5 })
	// Idle for 3 s, running nothing again meanwhile: the wait between claims grows to its
	// maximum.
	idle := time.Now()
	waitUntil(t, "3 s of idleness", func() bool {
		if n := c.total(); n != 5 {
			t.Fatalf("%d calls while no job was due", n)
		}
		return time.Since(idle) >= 3*time.Second
	})
	b.db.Exec(t, "INSERT INTO subject VALUES (6)")
	if res, err := b.jobs.Refresh(context.Background(), jobsdb.RefreshOptions{Priority: 5, Delay: -time.Second}); err != nil || res.Added != 1 {
		t.Fatalf("refresh: %+v, %v", res, err)
	}
	added := time.Now()
	waitUntil(t, "the new job", func() bool { return c.total() == 6 })
	if d := time.Since(added); d > 2*time.Second {
		t.Errorf("an idle worker took %v to find a new job", d)
	}
	cancel()
	<-done
	c.check(t, 6)
}

// logBuffer is a logger whose lines the test reads.
func logBuffer() (*slog.Logger, *buildtest.Output) {
	out := &buildtest.Output{}
	return slog.New(slog.NewTextHandler(out, nil)), out
}

// With dispatch=auto a worker takes messages while NATS runs, claims from MySQL once NATS has
// been gone for NATSOutage, and goes back to JetStream when it returns: every job once, no two
// calls of a job at once, no lease broken, and the logs and the gauge say which mode it is in.
func TestAutoDispatchRidesOutANATSOutage(t *testing.T) {
	t.Parallel()
	ns := natstest.StartRestartable(t)
	b := newBundleOn(t, 400, ns.URL)
	nc, err := queue.Connect(context.Background(), queue.ConnectOptions{URL: ns.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	tel, rec := tracingtest.New(t)
	log, out := logBuffer()
	c := newCalls()
	w := b.worker(c.handler(20*time.Millisecond), func(o *worker.Options) {
		o.NATS, o.Dispatch, o.Telemetry, o.Logger, o.Concurrency = nc, worker.DispatchAuto, tel, log, 4
		o.Jobs.LeaseDuration = 3 * time.Second
	})
	mode := func() string {
		for _, m := range tracing.DispatchModes {
			if v, _ := rec.Int64(t, tracing.MetricDispatchMode, tracing.DispatchKey.String(m)); v == 1 {
				return m
			}
		}
		return ""
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := b.run(w); err != nil {
			t.Error(err)
		}
	}()
	waitUntil(t, "50 jobs from JetStream", func() bool { return c.total() >= 50 })
	if m := mode(); m != "nats" {
		t.Errorf("dispatch mode gauge says %q while NATS runs, want nats", m)
	}
	ns.Stop()
	stopped, before := time.Now(), c.total()
	waitUntil(t, "the switch to MySQL", func() bool { return strings.Contains(out.String(), "claiming jobs from MySQL") })
	if d := time.Since(stopped); d > 5*time.Second {
		t.Errorf("switched to MySQL %v after NATS went away, want within 5 s", d)
	}
	waitUntil(t, "50 more jobs from MySQL", func() bool { return c.total() >= before+50 })
	if m := mode(); m != "mysql" {
		t.Errorf("dispatch mode gauge says %q while NATS is down, want mysql", m)
	}
	ns.Start()
	restarted := time.Now()
	waitUntil(t, "the switch back to JetStream", func() bool { return strings.Contains(out.String(), "taking jobs from JetStream") })
	if d := time.Since(restarted); d > 5*time.Second {
		t.Errorf("switched back to JetStream %v after NATS returned, want within 5 s", d)
	}
	<-done // Once: every job done
	c.check(t, 400)
	if n := b.count("SELECT COUNT(*) FROM `~~result`"); n != 0 {
		t.Errorf("%d jobs left", n)
	}
	if strings.Contains(out.String(), "lease") {
		t.Errorf("a lease was lost or not renewed across the switches:\n%s", out.String())
	}
}

// With dispatch=auto and NATS unreachable at start, the worker computes from MySQL at once.
func TestAutoDispatchStartsWithoutNATS(t *testing.T) {
	t.Parallel()
	b := newBundle(t, 50, nil)
	nc, err := queue.Connect(context.Background(), queue.ConnectOptions{URL: "nats://127.0.0.1:1", Background: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	log, out := logBuffer()
	c := newCalls()
	w := b.worker(c.handler(0), func(o *worker.Options) { o.NATS, o.Logger = nc, log })
	began := time.Now()
	if _, err := b.run(w); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 10*time.Second {
		t.Errorf("50 jobs took %v without NATS", d)
	}
	c.check(t, 50)
	if !strings.Contains(out.String(), "NATS unreachable at start") {
		t.Errorf("the worker did not say it claims from MySQL:\n%s", out.String())
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
