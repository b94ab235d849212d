package scheduler_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/mysqltest"
	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/internal/scheduler"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

func TestMain(m *testing.M) { mysqltest.Main(m) }

const (
	targetName = "__analysis"
	jobsName   = "~~analysis"
)

// bundle is one test's pipeline: a parent table "subject", the target "__analysis" whose key
// (subject_id) comes from it, a NATS server, and the test's own handles on the jobs table and
// the stream.
type bundle struct {
	db     *mysqltest.DB
	pool   *sql.DB // jobsdb.Open pool shared by the schedulers of the test
	nc     *nats.Conn
	cfg    config.Config
	table  string // schema.__analysis
	jobs   *jobsdb.Jobs
	stream *queue.Table
	log    *slog.Logger
}

// setup builds the pipeline with subjects 1..subjects on an embedded NATS server.
func setup(t *testing.T, subjects int) *bundle {
	t.Helper()
	return setupOn(t, natstest.Embedded(t).ClientURL(), subjects)
}

// setupOn builds the pipeline on the NATS server at natsURL; the stream is deleted at the end.
func setupOn(t *testing.T, natsURL string, subjects int) *bundle {
	t.Helper()
	ctx := t.Context()
	db := mysqltest.New(t)
	db.Exec(t,
		"CREATE TABLE subject (subject_id INT NOT NULL, PRIMARY KEY (subject_id))",
		"CREATE TABLE `"+targetName+"` (subject_id INT NOT NULL, result DOUBLE, PRIMARY KEY (subject_id), "+
			"FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
	)
	b := &bundle{db: db, table: db.Name + "." + targetName}
	b.addSubjects(t, 1, subjects)

	pool, err := jobsdb.Open(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	b.pool = pool

	b.nc = connect(t, natsURL)

	b.cfg = config.Default()
	b.cfg.Tables = []config.Table{{Table: b.table}}
	b.cfg.Jobs.RefreshInterval = config.Seconds(200 * time.Millisecond)
	b.log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))

	jobs, err := cli.OpenJobs(ctx, pool, b.cfg, b.table, jobsdb.Identity{User: "test"})
	if err != nil {
		t.Fatal(err)
	}
	b.jobs = jobs
	if err := jobs.Declare(ctx); err != nil {
		t.Fatal(err)
	}
	stream, err := queue.Open(ctx, b.nc, db.Name, targetName, b.queueConfig())
	if err != nil {
		t.Fatal(err)
	}
	b.stream = stream
	t.Cleanup(func() {
		// Leave nothing behind on a shared server. The schedulers have stopped by now
		// (cleanups run last-registered first).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.stream.Delete(ctx); err != nil {
			t.Logf("delete the test's stream: %v", err)
		}
	})
	return b
}

func (b *bundle) queueConfig() queue.Config {
	return queue.Config{Prefix: b.cfg.NATS.SubjectPrefix, Replicas: 1, AckWait: b.cfg.NATS.AckWait.Duration()}
}

// connect connects to the NATS server at url for the test.
func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := queue.Connect(t.Context(), queue.ConnectOptions{URL: url, Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (b *bundle) addSubjects(t *testing.T, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		b.db.Exec(t, fmt.Sprintf("INSERT INTO subject VALUES (%d)", i))
	}
}

// fastOptions are the scheduler options of the tests: short intervals, the test's logger.
func (b *bundle) fastOptions() scheduler.Options {
	return scheduler.Options{
		Config:          b.cfg,
		Tables:          []string{b.table},
		DB:              b.pool,
		NATS:            b.nc,
		Logger:          b.log,
		PollInterval:    100 * time.Millisecond,
		RecoverInterval: 200 * time.Millisecond,
		ErrorBackoffMax: 500 * time.Millisecond,
		Leadership: leadership.Config{
			RetryInterval: 50 * time.Millisecond,
			CheckInterval: 50 * time.Millisecond,
			CheckTimeout:  500 * time.Millisecond,
		},
	}
}

// running is a scheduler running in the background.
type running struct {
	s         *scheduler.Scheduler
	cancel    context.CancelFunc
	done      chan struct{}
	err       error
	published atomic.Int64
	already   atomic.Int64
}

func (b *bundle) start(t *testing.T, modify func(*scheduler.Options)) *running {
	t.Helper()
	r := &running{done: make(chan struct{})}
	opts := b.fastOptions()
	if modify != nil {
		modify(&opts)
	}
	opts.OnDispatch = func(ev scheduler.DispatchEvent) {
		if ev.Table != b.table {
			t.Errorf("dispatch event for table %q, want %q", ev.Table, b.table)
		}
		r.published.Add(int64(ev.Published))
		r.already.Add(int64(ev.AlreadyQueued))
	}
	r.s = scheduler.New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		defer close(r.done)
		r.err = r.s.Run(ctx)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Fatal("scheduler did not stop within 15s")
	}
	if r.err != nil {
		t.Errorf("Run returned %v after its context ended", r.err)
	}
}

func (r *running) state(table string) leadership.State { return r.s.States()[table] }

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// receiver fetches the table's messages and records their keys.
type receiver struct {
	t       *testing.T
	fetcher *queue.Fetcher
	mu      sync.Mutex
	msgs    []queue.Msg
}

func (b *bundle) receiver(t *testing.T) *receiver {
	t.Helper()
	f := b.stream.NewFetcher(nil)
	t.Cleanup(f.Stop)
	return &receiver{t: t, fetcher: f}
}

// subjectID decodes a message's key.
func subjectID(t *testing.T, key []byte) int {
	t.Helper()
	var k struct {
		SubjectID *int `json:"subject_id"`
	}
	if err := json.Unmarshal(key, &k); err != nil || k.SubjectID == nil {
		t.Fatalf("message key %s is not {\"subject_id\": n}: %v", key, err)
	}
	return *k.SubjectID
}

// fetch collects messages until it has n more or the timeout passes, and returns the
// subject ids of the new ones.
func (r *receiver) fetch(n int, timeout time.Duration) []int {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), timeout)
	defer cancel()
	var ids []int
	for len(ids) < n {
		msgs, err := r.fetcher.Fetch(ctx, n-len(ids))
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			r.t.Fatalf("fetch: %v", err)
		}
		for _, m := range msgs {
			ids = append(ids, subjectID(r.t, m.Key()))
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, msgs...)
		r.mu.Unlock()
	}
	slices.Sort(ids)
	return ids
}

// ack acknowledges the received message of subject id, dropping it from the stream.
func (r *receiver) ack(id int) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, m := range r.msgs {
		if subjectID(r.t, m.Key()) == id {
			if err := m.Ack(r.t.Context()); err != nil {
				r.t.Fatalf("ack %d: %v", id, err)
			}
			r.msgs = slices.Delete(r.msgs, i, i+1)
			return
		}
	}
	r.t.Fatalf("no received message for subject %d", id)
}

// dispatched counts the jobs marked as published.
func (b *bundle) dispatched(t *testing.T) int {
	t.Helper()
	jobs, err := b.jobs.List(t.Context(), jobsdb.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, j := range jobs {
		if j.DispatchedTime != nil {
			n++
		}
	}
	return n
}

func seq(from, to int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func (b *bundle) job(t *testing.T, id int) jobsdb.Job {
	t.Helper()
	key, err := b.jobs.Target().ParseKey(fmt.Appendf(nil, `{"subject_id":%d}`, id))
	if err != nil {
		t.Fatal(err)
	}
	job, err := b.jobs.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("get job %d: %v", id, err)
	}
	return job
}

func TestScheduler(t *testing.T) {
	t.Parallel()

	t.Run("publishes every new key exactly once", func(t *testing.T) {
		t.Parallel()
		for _, srv := range natstest.Servers(t) {
			t.Run(srv.Name, func(t *testing.T) {
				t.Parallel()
				testPublishesOnce(t, setupOn(t, srv.URL, 25))
			})
		}
	})

	t.Run("the stream holds at most the dispatch window; the rest follows as workers drain it", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 30)
		b.start(t, func(o *scheduler.Options) { o.DispatchWindow = 10 })
		waitFor(t, 30*time.Second, "the first window published and marked", func() bool {
			st, err := b.stream.State(t.Context())
			return err == nil && len(st) == 1 && st[0].Waiting == 10 && b.dispatched(t) == 10
		})
		rcv := b.receiver(t)
		var got []int
		for len(got) < 30 {
			ids := rcv.fetch(10, 30*time.Second)
			if len(ids) == 0 {
				t.Fatalf("the rest of the backlog was not published after %d jobs", len(got))
			}
			for _, id := range ids {
				rcv.ack(id)
			}
			got = append(got, ids...)
			st, err := b.stream.State(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if st[0].Waiting > 10 {
				t.Fatalf("%d messages waiting, above the window of 10", st[0].Waiting)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, seq(1, 30)) {
			t.Errorf("received %v, want every job once", got)
		}
	})

	t.Run("a delayed job is published when it becomes due, not before", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 0)
		b.cfg.Jobs.AutoRefresh = false
		const delay = 2 * time.Second
		b.addSubjects(t, 1, 1)
		begin := time.Now()
		if _, err := b.jobs.Refresh(t.Context(), jobsdb.RefreshOptions{Delay: delay, Priority: 5}); err != nil {
			t.Fatal(err)
		}
		b.addSubjects(t, 2, 2)
		if _, err := b.jobs.Refresh(t.Context(), jobsdb.RefreshOptions{Priority: 5}); err != nil {
			t.Fatal(err)
		}
		b.start(t, nil)
		rcv := b.receiver(t)
		got := rcv.fetch(1, 20*time.Second)
		if !slices.Equal(got, []int{2}) {
			t.Fatalf("first message: %v, want the job that was due at once (2)", got)
		}
		if time.Since(begin) < delay {
			if early := rcv.fetch(1, time.Until(begin.Add(delay))-100*time.Millisecond); len(early) > 0 {
				t.Fatalf("delayed job published %v before its scheduled time", time.Until(begin.Add(delay)))
			}
		}
		got = rcv.fetch(1, 20*time.Second)
		arrived := time.Since(begin)
		if !slices.Equal(got, []int{1}) {
			t.Fatalf("second message: %v, want the delayed job (1)", got)
		}
		if arrived < delay {
			t.Errorf("delayed job arrived %v after the refresh, before its delay of %v", arrived, delay)
		}
		if arrived > delay+3*time.Second {
			t.Errorf("delayed job arrived %v after the refresh; its delay was %v", arrived, delay)
		}
	})

	t.Run("a job moved into the future waits for its new time", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 1)
		b.cfg.Jobs.AutoRefresh = false
		if _, err := b.jobs.Refresh(t.Context(), jobsdb.RefreshOptions{Priority: 5}); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		b.db.Exec(t, "UPDATE `"+jobsName+"` SET scheduled_time = NOW(3) + INTERVAL 1500000 MICROSECOND")
		b.start(t, nil)
		rcv := b.receiver(t)
		got := rcv.fetch(1, 20*time.Second)
		if !slices.Equal(got, []int{1}) {
			t.Fatalf("fetched %v, want 1", got)
		}
		if since := time.Since(begin); since < 1500*time.Millisecond {
			t.Errorf("job published %v after being moved 1.5 s into the future", since)
		}
	})

	t.Run("jobs whose lease expired are recovered and republished", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 3)
		b.start(t, nil)
		rcv := b.receiver(t)
		if got := rcv.fetch(3, 20*time.Second); !slices.Equal(got, seq(1, 3)) {
			t.Fatalf("fetched %v, want 1..3", got)
		}
		// A worker reserves job 2, acks its message, and dies: its lease expires.
		key, err := b.jobs.Target().ParseKey([]byte(`{"subject_id":2}`))
		if err != nil {
			t.Fatal(err)
		}
		leases, err := b.jobs.Reserve(t.Context(), []jobsdb.Key{key})
		if err != nil || len(leases) != 1 {
			t.Fatalf("reserve job 2: %v leases, %v", len(leases), err)
		}
		rcv.ack(2)
		b.db.Exec(t, "UPDATE `"+jobsName+"` SET lease_expires = NOW(3) - INTERVAL 1 SECOND WHERE subject_id = 2")
		if got := rcv.fetch(1, 20*time.Second); !slices.Equal(got, []int{2}) {
			t.Fatalf("after the lease expired, fetched %v, want 2", got)
		}
		if job := b.job(t, 2); job.Status != jobsdb.StatusPending {
			t.Errorf("recovered job status %s, want pending", job.Status)
		}
	})

	t.Run("a pending job whose message was dropped is republished", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 3)
		r := b.start(t, func(o *scheduler.Options) { o.RedispatchAfter = time.Second })
		rcv := b.receiver(t)
		if got := rcv.fetch(3, 20*time.Second); !slices.Equal(got, seq(1, 3)) {
			t.Fatalf("fetched %v, want 1..3", got)
		}
		rcv.ack(3) // dropped without touching MySQL: the job stays pending
		if got := rcv.fetch(1, 20*time.Second); !slices.Equal(got, []int{3}) {
			t.Fatalf("after dropping 3's message, fetched %v, want 3", got)
		}
		// 1 and 2 kept their messages: their republishes found them there.
		waitFor(t, 10*time.Second, "a republish reports messages already queued", func() bool { return r.already.Load() > 0 })
		if extra := rcv.fetch(1, 500*time.Millisecond); len(extra) > 0 {
			t.Errorf("jobs whose messages were still queued were published again: %v", extra)
		}
	})

	t.Run("a stream deleted mid-run is recreated and its jobs republished", func(t *testing.T) {
		t.Parallel()
		for _, srv := range natstest.Servers(t) {
			t.Run(srv.Name, func(t *testing.T) {
				t.Parallel()
				testStreamDeleted(t, setupOn(t, srv.URL, 4))
			})
		}
	})

	t.Run("jobs whose messages the stream lost are published again at once, not after RedispatchAfter", func(t *testing.T) {
		t.Parallel()
		for _, srv := range natstest.Servers(t) {
			for _, loss := range []string{"deleted", "purged"} {
				t.Run(srv.Name+"/"+loss, func(t *testing.T) {
					t.Parallel()
					testMessagesLost(t, setupOn(t, srv.URL, 4), loss)
				})
			}
		}
	})

	t.Run("of two schedulers on one table only the leader publishes", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 10)
		r1, r2 := b.start(t, nil), b.start(t, nil)
		rcv := b.receiver(t)
		if got := rcv.fetch(10, 20*time.Second); !slices.Equal(got, seq(1, 10)) {
			t.Fatalf("fetched %v, want 1..10", got)
		}
		waitFor(t, 5*time.Second, "one leader and one standby", func() bool {
			s1, s2 := r1.state(b.table), r2.state(b.table)
			return s1 == leadership.StateLeader && s2 == leadership.StateStandby ||
				s1 == leadership.StateStandby && s2 == leadership.StateLeader
		})
		leader, standby := r1, r2
		if r2.state(b.table) == leadership.StateLeader {
			leader, standby = r2, r1
		}
		if n := standby.published.Load() + standby.already.Load(); n != 0 {
			t.Errorf("the standby dispatched %d jobs", n)
		}
		if n := leader.published.Load(); n != 10 {
			t.Errorf("the leader published %d messages for 10 keys", n)
		}
	})

	t.Run("when the leader stops, the standby takes over and publishes new keys", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2)
		r1 := b.start(t, nil)
		waitFor(t, 10*time.Second, "the first scheduler leads", func() bool { return r1.state(b.table) == leadership.StateLeader })
		r2 := b.start(t, nil)
		rcv := b.receiver(t)
		if got := rcv.fetch(2, 20*time.Second); !slices.Equal(got, seq(1, 2)) {
			t.Fatalf("fetched %v, want 1..2", got)
		}
		waitFor(t, 10*time.Second, "the second scheduler is standby", func() bool { return r2.state(b.table) == leadership.StateStandby })
		r1.stop(t)
		b.addSubjects(t, 3, 5)
		if got := rcv.fetch(3, 20*time.Second); !slices.Equal(got, seq(3, 5)) {
			t.Fatalf("after failover, fetched %v, want 3..5", got)
		}
		if s := r2.state(b.table); s != leadership.StateLeader {
			t.Errorf("second scheduler state %v, want leader", s)
		}
		if n := r2.published.Load(); n != 3 {
			t.Errorf("the new leader published %d messages, want 3", n)
		}
	})

	t.Run("keeps going when its MySQL connections are killed", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2)
		r := b.start(t, nil)
		rcv := b.receiver(t)
		if got := rcv.fetch(2, 20*time.Second); !slices.Equal(got, seq(1, 2)) {
			t.Fatalf("fetched %v, want 1..2", got)
		}
		rows, err := b.db.SQL.Query("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()", b.db.Name)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		for _, id := range ids {
			b.db.SQL.Exec("KILL ?", id) // some may have gone already
		}
		t.Logf("killed %d connections", len(ids))
		b.addSubjects(t, 3, 4)
		if got := rcv.fetch(2, 30*time.Second); !slices.Equal(got, seq(3, 4)) {
			t.Fatalf("after killing the connections, fetched %v, want 3..4", got)
		}
		waitFor(t, 10*time.Second, "the scheduler leads again", func() bool { return r.state(b.table) == leadership.StateLeader })
	})

	t.Run("keeps going through a NATS server restart", func(t *testing.T) {
		t.Parallel()
		store := t.TempDir()
		srv, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: store})
		if err != nil {
			t.Fatal(err)
		}
		url := srv.ClientURL()
		t.Cleanup(func() { srv.Shutdown() })
		b := setupOn(t, url, 2)
		b.start(t, nil)
		rcv := b.receiver(t)
		if got := rcv.fetch(2, 20*time.Second); !slices.Equal(got, seq(1, 2)) {
			t.Fatalf("fetched %v, want 1..2", got)
		}
		srv.Shutdown()
		waitFor(t, 10*time.Second, "the client sees the disconnect", func() bool { return !b.nc.IsConnected() })
		b.addSubjects(t, 3, 4)
		srv, err = queue.StartEmbedded(queue.EmbeddedOptions{Listen: strings.TrimPrefix(url, "nats://"), StoreDir: store})
		if err != nil {
			t.Fatalf("restart NATS on %s: %v", url, err)
		}
		if got := rcv.fetch(2, 30*time.Second); !slices.Equal(got, seq(3, 4)) {
			t.Fatalf("after the NATS restart, fetched %v, want 3..4", got)
		}
	})

	t.Run("an unknown table is a usage error", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 0)
		s := scheduler.New(scheduler.Options{
			Config: b.cfg,
			Tables: []string{b.db.Name + ".no_such_table"},
			DB:     b.pool,
			NATS:   b.nc,
			Logger: b.log,
		})
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		err := s.Run(ctx)
		if err == nil || ctx.Err() != nil {
			t.Fatalf("Run = %v (context: %v), want an error at once", err, ctx.Err())
		}
		if code := cli.ExitCode(err); code != cli.ExitUsage {
			t.Errorf("exit code %d for %v, want %d", code, err, cli.ExitUsage)
		}
		if !strings.Contains(err.Error(), "no_such_table") {
			t.Errorf("error %q does not name the table", err)
		}
	})

	t.Run("no table is a usage error", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 0)
		err := scheduler.New(scheduler.Options{Config: b.cfg, DB: b.pool, NATS: b.nc, Logger: b.log}).Run(t.Context())
		if code := cli.ExitCode(err); code != cli.ExitUsage {
			t.Errorf("Run = %v (exit code %d), want a usage error", err, code)
		}
	})
}

func TestHandler(t *testing.T) {
	t.Parallel()
	b := setup(t, 0)
	get := func(h http.Handler, path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		body, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(body)
	}

	t.Run("not ready before the leadership state is known", func(t *testing.T) {
		s := scheduler.New(b.fastOptions())
		h := s.Handler()
		if code, _ := get(h, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz = %d", code)
		}
		if code, body := get(h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "unknown") {
			t.Errorf("/readyz before Run = %d %q, want 503 naming the unknown state", code, body)
		}
		if code, _ := get(h, "/metrics"); code != http.StatusNotFound {
			t.Errorf("/metrics without a handler = %d, want 404", code)
		}
	})

	t.Run("ready while running, with the metrics hook served", func(t *testing.T) {
		r := b.start(t, func(o *scheduler.Options) {
			o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "jetjobs_up 1\n") })
		})
		h := r.s.Handler()
		waitFor(t, 10*time.Second, "/readyz answers 200", func() bool {
			code, _ := get(h, "/readyz")
			return code == http.StatusOK
		})
		if _, body := get(h, "/readyz"); !strings.Contains(body, b.table+": leader") {
			t.Errorf("/readyz body %q does not show the table's state", body)
		}
		if code, body := get(h, "/metrics"); code != http.StatusOK || body != "jetjobs_up 1\n" {
			t.Errorf("/metrics = %d %q", code, body)
		}
	})

	t.Run("not ready when NATS is disconnected", func(t *testing.T) {
		nc := connect(t, natstest.Embedded(t).ClientURL())
		opts := b.fastOptions()
		opts.NATS = nc
		nc.Close()
		if code, body := get(scheduler.New(opts).Handler(), "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "nats") {
			t.Errorf("/readyz with a closed NATS connection = %d %q", code, body)
		}
	})

	t.Run("the HTTP server listens on HTTPAddr", func(t *testing.T) {
		var addr atomic.Value
		logs := &lineWriter{onLine: func(line string) {
			if _, rest, ok := strings.Cut(line, "msg=\"serving HTTP\" addr="); ok {
				addr.Store(strings.Fields(rest)[0])
			}
		}}
		b.start(t, func(o *scheduler.Options) {
			o.HTTPAddr = "127.0.0.1:0"
			o.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), nil))
		})
		waitFor(t, 10*time.Second, "the HTTP address is logged", func() bool { return addr.Load() != nil })
		resp, err := http.Get("http://" + addr.Load().(string) + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("/healthz over HTTP = %d", resp.StatusCode)
		}
	})
}

// lineWriter calls onLine for each complete line written.
type lineWriter struct {
	mu     sync.Mutex
	buf    []byte
	onLine func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := slices.Index(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.onLine(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

func testPublishesOnce(t *testing.T, b *bundle) {
	r := b.start(t, nil)
	rcv := b.receiver(t)
	if got := rcv.fetch(25, 20*time.Second); !slices.Equal(got, seq(1, 25)) {
		t.Fatalf("fetched keys %v, want 1..25 once each", got)
	}
	for _, id := range []int{1, 25} {
		if job := b.job(t, id); job.Status != jobsdb.StatusPending || job.DispatchedTime == nil {
			t.Errorf("job %d: status %s, dispatched_time %v; want pending and dispatched", id, job.Status, job.DispatchedTime)
		}
	}
	// Later passes must not publish the same keys again: add a key, and once it arrives
	// (which proves refreshes and dispatches ran meanwhile), count the publishes.
	b.addSubjects(t, 26, 26)
	if got := rcv.fetch(1, 20*time.Second); !slices.Equal(got, []int{26}) {
		t.Fatalf("after adding subject 26, fetched %v", got)
	}
	if n := r.published.Load(); n != 26 {
		t.Errorf("scheduler published %d messages for 26 keys", n)
	}
}

func testStreamDeleted(t *testing.T, b *bundle) {
	b.start(t, func(o *scheduler.Options) { o.RedispatchAfter = time.Second })
	rcv := b.receiver(t)
	if got := rcv.fetch(4, 20*time.Second); !slices.Equal(got, seq(1, 4)) {
		t.Fatalf("fetched %v, want 1..4", got)
	}
	// The delivered messages go with the stream; the jobs stay pending in MySQL. The same
	// fetcher, like a running worker's, keeps pulling once the stream is back.
	if err := b.stream.Delete(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := rcv.fetch(4, 20*time.Second); !slices.Equal(got, seq(1, 4)) {
		st, err := b.stream.State(context.Background())
		t.Fatalf("after deleting the stream, fetched %v, want 1..4 (stream state %+v %v)", got, st, err)
	}
}

func testMessagesLost(t *testing.T, b *bundle, loss string) {
	b.start(t, func(o *scheduler.Options) { o.RedispatchAfter = time.Hour })
	waitFor(t, 20*time.Second, "the four jobs published", func() bool { return b.dispatched(t) == 4 })
	switch loss {
	case "deleted":
		if err := b.stream.Delete(t.Context()); err != nil {
			t.Fatal(err)
		}
	case "purged":
		js, err := jetstream.New(b.nc)
		if err != nil {
			t.Fatal(err)
		}
		s, err := js.Stream(t.Context(), b.stream.StreamName())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	rcv := b.receiver(t)
	if got := rcv.fetch(4, 20*time.Second); !slices.Equal(got, seq(1, 4)) {
		t.Fatalf("after the stream was %s, fetched %v, want 1..4", loss, got)
	}
}
