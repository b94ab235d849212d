package scheduler

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/mysqltest"
	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

func TestMain(m *testing.M) { mysqltest.Main(m) }

const (
	targetName = "__analysis"
	jobsName   = "~~analysis"
	// staleTimeout is the refresh's stale timeout in the tests: jobs.stale_timeout's default.
	staleTimeout = time.Hour
)

// bundle is one test's pipeline: a parent table "subject", the target "__analysis" whose key
// (subject_id) comes from it, a NATS server, and the test's own handles on the jobs table and
// the stream.
type bundle struct {
	db     *mysqltest.DB
	pool   *sql.DB // jobsdb.Open pool shared by the schedulers of the test
	nc     *nats.Conn
	table  string // schema.__analysis
	jobs   *jobsdb.Jobs
	stream *queue.Table
	log    *slog.Logger
	logs   *logLines // what log wrote
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
	b := &bundle{db: db, table: db.Name + "." + targetName, logs: &logLines{}}
	b.addSubjects(t, 1, subjects)

	pool, err := jobsdb.Open(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	b.pool = pool

	b.nc = connect(t, natsURL)
	b.log = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), b.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))

	target, err := jobsdb.Inspect(ctx, pool, b.table, "")
	if err != nil {
		t.Fatal(err)
	}
	b.jobs = jobsdb.New(pool, target, jobsdb.Options{Identity: jobsdb.Identity{User: "test"}})
	if err := b.jobs.Declare(ctx); err != nil {
		t.Fatal(err)
	}
	stream, err := queue.Open(ctx, b.nc, db.Name, targetName, queue.Config{})
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

// refresh adds pending jobs for the new subjects through the test's own handle.
func (b *bundle) refresh(t *testing.T) {
	t.Helper()
	if _, err := b.jobs.Refresh(t.Context(), jobsdb.RefreshOptions{Priority: jobsdb.PriorityDefault}); err != nil {
		t.Fatal(err)
	}
}

// fastOptions are the scheduler options of the tests: short intervals, the test's logger.
func (b *bundle) fastOptions() Options {
	return Options{
		Tables:          []Table{{Name: b.table}},
		DB:              b.pool,
		NATS:            b.nc,
		Logger:          b.log,
		Refresh:         RefreshOptions{Interval: 200 * time.Millisecond, StaleTimeout: staleTimeout},
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

// options are fastOptions changed by modify, with the defaults filled in as New does: what a
// leader's services are built from.
func (b *bundle) options(modify func(*Options)) *Options {
	o := b.fastOptions()
	if modify != nil {
		modify(&o)
	}
	o = o.withDefaults()
	return &o
}

// running is a started scheduler.
type running struct {
	s         *Scheduler
	published atomic.Int64
	already   atomic.Int64
}

func (b *bundle) start(t *testing.T, modify func(*Options)) *running {
	t.Helper()
	r := &running{}
	opts := b.fastOptions()
	if modify != nil {
		modify(&opts)
	}
	opts.OnDispatch = func(ev DispatchEvent) {
		if ev.Table != b.table {
			t.Errorf("dispatch event for table %q, want %q", ev.Table, b.table)
		}
		r.published.Add(int64(ev.Published))
		r.already.Add(int64(ev.AlreadyQueued))
	}
	r.s = New(opts)
	if err := r.s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop stops the scheduler, which must not have stopped by itself.
func (r *running) stop(t *testing.T) {
	t.Helper()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		r.s.Stop()
	}()
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("scheduler did not stop within 15s")
	}
	if err := r.s.Err(); err != nil {
		t.Errorf("the scheduler stopped by itself: %v", err)
	}
}

func (r *running) state(table string) leadership.State { return r.s.States()[table] }

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

// waiting is the number of messages waiting in the table's stream.
func (b *bundle) waiting(t *testing.T) uint64 {
	t.Helper()
	st, err := b.stream.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, p := range st {
		n += p.Waiting
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

func (b *bundle) key(t *testing.T, id int) jobsdb.Key {
	t.Helper()
	key, err := b.jobs.Target().ParseKey(fmt.Appendf(nil, `{"subject_id":%d}`, id))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func (b *bundle) job(t *testing.T, id int) jobsdb.Job {
	t.Helper()
	job, err := b.jobs.Get(t.Context(), b.key(t, id))
	if err != nil {
		t.Fatalf("get job %d: %v", id, err)
	}
	return job
}

// reserve reserves the jobs of the subjects, as a worker does.
func (b *bundle) reserve(t *testing.T, ids ...int) {
	t.Helper()
	keys := make([]jobsdb.Key, len(ids))
	for i, id := range ids {
		keys[i] = b.key(t, id)
	}
	leases, err := b.jobs.Reserve(t.Context(), keys)
	if err != nil || len(leases) != len(ids) {
		t.Fatalf("reserve jobs %v: %d leases, %v", ids, len(leases), err)
	}
}

// expire makes the lease of a subject's job expire.
func (b *bundle) expire(t *testing.T, id int) {
	t.Helper()
	b.db.Exec(t, fmt.Sprintf("UPDATE `"+jobsName+"` SET lease_expires = NOW(3) - INTERVAL 1 SECOND WHERE subject_id = %d", id))
}

// logLines collects the lines of a slog text handler, which writes each record, one line, in
// one Write.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (w *logLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines = append(w.lines, strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// matching returns the lines that contain every one of the strings.
func (w *logLines) matching(subs ...string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, l := range w.lines {
		if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(l, s) }) {
			out = append(out, l)
		}
	}
	return out
}

// attr returns the value of key= in a log line, or "".
func attr(line, key string) string {
	_, rest, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return ""
	}
	return strings.Trim(strings.Fields(rest)[0], `"`)
}

// inStream counts the messages in the table's stream, waiting or delivered and not acked.
func (b *bundle) inStream(t *testing.T) uint64 {
	t.Helper()
	n, err := b.stream.Messages(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n
}
