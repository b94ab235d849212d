package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/mysqltest"
	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/jobsdb"
)

// componentFixture is a jobs table with n reserved jobs, for testing the completer and the
// keeper on their own.
type componentFixture struct {
	t      *testing.T
	db     *mysqltest.DB
	jobs   *jobsdb.Jobs
	table  *table
	leases []jobsdb.Lease
}

func newComponentFixture(t *testing.T, n int, lease time.Duration) *componentFixture {
	t.Helper()
	t.Parallel()
	db := mysqltest.New(t)
	db.Exec(t,
		"CREATE TABLE subject (subject_id int NOT NULL PRIMARY KEY)",
		"CREATE TABLE __result (subject_id int NOT NULL, value varchar(64) NOT NULL DEFAULT '', PRIMARY KEY (subject_id), FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
		fmt.Sprintf("INSERT INTO subject SELECT seq FROM seq_1_to_%d", n),
	)
	pool, err := jobsdb.Open(t.Context(), db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	db.SQL = pool
	target, err := jobsdb.Inspect(t.Context(), pool, db.Name+".__result", "")
	if err != nil {
		t.Fatal(err)
	}
	jobs := jobsdb.New(pool, target, jobsdb.Options{LeaseDuration: lease})
	if _, err := jobs.Refresh(t.Context(), jobsdb.RefreshOptions{Priority: 5, Delay: -time.Second}); err != nil {
		t.Fatal(err)
	}
	keys := make([]jobsdb.Key, n)
	for i := range keys {
		keys[i] = jobsdb.Key{int64(i + 1)}
	}
	leases, err := jobs.Reserve(t.Context(), keys)
	if err != nil || len(leases) != n {
		t.Fatalf("reserve: %d leases, %v", len(leases), err)
	}
	return &componentFixture{t: t, db: db, jobs: jobs, table: &table{name: target.FullName(), jobs: jobs}, leases: leases}
}

// job is the i-th reserved job, finished with a success that writes value.
func (f *componentFixture) job(i int, value string) *job {
	l := f.leases[i]
	j := &job{t: f.table, key: l.Key, lease: l, ctx: context.Background(), reserved: time.Now()}
	j.keyJSON = []byte(`{"subject_id":` + strconv.Itoa(i+1) + `}`)
	j.outcome = jobsdb.Outcome{Lease: l, Kind: jobsdb.OutcomeSuccess, Rows: []jobsdb.Row{{"value": value}}}
	return j
}

func (f *componentFixture) count(query string) int {
	f.t.Helper()
	var n int
	if err := f.db.SQL.QueryRow(query).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// lockJobs locks every jobs row in a transaction of its own; release commits it.
func (f *componentFixture) lockJobs() (release func()) {
	f.t.Helper()
	tx, err := f.db.SQL.BeginTx(context.Background(), nil)
	if err != nil {
		f.t.Fatal(err)
	}
	rows, err := tx.Query("SELECT * FROM `~~result` FOR UPDATE")
	if err != nil {
		f.t.Fatal(err)
	}
	rows.Close()
	var once sync.Once
	return func() { once.Do(func() { tx.Commit() }) }
}

// settlements collects what a completer settled.
type settlements struct {
	mu   sync.Mutex
	jobs map[*job]error // nil error: recorded (applied)
}

func (s *settlements) settled(j *job, applied bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jobs == nil {
		s.jobs = map[*job]error{}
	}
	if err == nil && !applied {
		err = jobsdb.ErrLeaseLost
	}
	s.jobs[j] = err
}

func (s *settlements) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.jobs)
}

func (s *settlements) of(j *job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.jobs[j]
}

func (f *componentFixture) completer(opts Options, s *settlements) *completer {
	f.t.Helper()
	opts.DB = f.db.SQL
	if opts.StopTimeout == 0 {
		opts.StopTimeout = StopTimeoutDefault
	}
	c := newCompleter(opts, f.jobs, s.settled)
	if err := c.Start(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(c.Stop)
	return c
}

func TestCompleter(t *testing.T) {
	t.Parallel()

	t.Run("a full batch is written at once, without waiting for the delay", func(t *testing.T) {
		f := newComponentFixture(t, 10, time.Minute)
		var s settlements
		c := f.completer(Options{RecordBatch: 10, RecordDelay: time.Hour}, &s)
		for i := range 10 {
			c.add(f.job(i, "v"))
		}
		waitfor.True(t, "the batch of 10 recorded", func() bool { return s.count() == 10 })
		if n := f.count("SELECT COUNT(*) FROM __result"); n != 10 {
			t.Errorf("%d target rows, want 10", n)
		}
	})

	t.Run("a partial batch is written once the delay has passed", func(t *testing.T) {
		f := newComponentFixture(t, 3, time.Minute)
		var s settlements
		c := f.completer(Options{RecordBatch: 1000, RecordDelay: 20 * time.Millisecond}, &s)
		for i := range 3 {
			c.add(f.job(i, "v"))
		}
		waitfor.True(t, "3 outcomes recorded after the delay", func() bool { return s.count() == 3 })
		if n := f.count("SELECT COUNT(*) FROM `~~result`"); n != 0 {
			t.Errorf("%d jobs left, want all completed", n)
		}
	})

	t.Run("add blocks while the buffer is full, and the jobs are recorded once the database answers", func(t *testing.T) {
		const batch = 2
		n := batch + completerBuffer*batch + 1 // one batch in flight, a full buffer, one more
		f := newComponentFixture(t, n, time.Minute)
		release := f.lockJobs()
		defer release()
		var s settlements
		c := f.completer(Options{RecordBatch: batch, RecordDelay: time.Millisecond}, &s)
		added := make(chan struct{})
		go func() {
			for i := range n {
				c.add(f.job(i, "v"))
			}
			close(added)
		}()
		waitfor.True(t, "the buffer to fill while the first batch waits for the lock", func() bool {
			return len(c.in) == cap(c.in)
		})
		select {
		case <-added:
			t.Fatal("add did not block with the buffer full")
		default:
		}
		release()
		<-added
		waitfor.True(t, "every job recorded", func() bool { return s.count() == n })
	})

	t.Run("a row that does not fit fails its own job, not the batch", func(t *testing.T) {
		f := newComponentFixture(t, 4, time.Minute)
		var s settlements
		c := f.completer(Options{RecordBatch: 4, RecordDelay: time.Hour}, &s)
		jobs := []*job{f.job(0, "a"), f.job(1, "b"), f.job(2, "c"), f.job(3, "d")}
		jobs[2].outcome.Rows = []jobsdb.Row{{"value": "this value is far longer than the sixty-four characters its column holds, so it fails"}}
		for _, j := range jobs {
			c.add(j)
		}
		waitfor.True(t, "the batch settled", func() bool { return s.count() == 4 })
		for i, j := range jobs {
			if err := s.of(j); err != nil {
				t.Errorf("job %d: %v", i, err)
			}
		}
		if jobs[2].outcome.Kind != jobsdb.OutcomeError || f.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'error' AND subject_id = 3") != 1 {
			t.Errorf("the job whose row did not fit is not recorded as an error (kind %v)", jobs[2].outcome.Kind)
		}
		if n := f.count("SELECT COUNT(*) FROM __result"); n != 3 {
			t.Errorf("%d target rows, want the 3 that fit", n)
		}
	})

	t.Run("a statement killed while it records is retried", func(t *testing.T) {
		f := newComponentFixture(t, 1, time.Minute)
		release := f.lockJobs()
		defer release()
		var s settlements
		c := f.completer(Options{RecordBatch: 1, RecordDelay: time.Millisecond}, &s)
		j := f.job(0, "v")
		c.add(j)
		var thread int64
		waitfor.True(t, "the recording to wait for the lock", func() bool {
			return f.db.SQL.QueryRow("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND INFO LIKE 'DELETE FROM%'", f.db.Name).Scan(&thread) == nil
		})
		if _, err := f.db.SQL.Exec("KILL QUERY " + strconv.FormatInt(thread, 10)); err != nil {
			t.Fatal(err)
		}
		release()
		waitfor.True(t, "the outcome settled", func() bool { return s.count() == 1 })
		if err := s.of(j); err != nil || j.outcome.Kind != jobsdb.OutcomeSuccess {
			t.Errorf("settled with %v as %v, want the success recorded", err, j.outcome.Kind)
		}
	})

	t.Run("after Stop an unanswered recording is given up after StopTimeout, leaving the lease", func(t *testing.T) {
		f := newComponentFixture(t, 1, time.Minute)
		release := f.lockJobs()
		defer release()
		var s settlements
		c := f.completer(Options{RecordBatch: 1, RecordDelay: time.Millisecond, StopTimeout: 100 * time.Millisecond}, &s)
		j := f.job(0, "v")
		j.outcome.Rows = nil
		c.add(j)
		c.Stop()
		if err := s.of(j); err == nil {
			t.Fatal("Stop returned, yet the outcome was neither recorded nor given up")
		}
		release()
		if n := f.count("SELECT COUNT(*) FROM `~~result` WHERE status = 'reserved'"); n != 1 {
			t.Errorf("the job given up on is not reserved any more: its lease must expire for the scheduler")
		}
	})
}

func TestKeeper(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// running starts keeping the fixture's i-th job and returns it with the cause its
	// context is cancelled with.
	running := func(f *componentFixture, k *keeper, i int) (*job, func() error) {
		j := f.job(i, "v")
		ctx, cancel := context.WithCancelCause(context.Background())
		j.cancel = cancel
		k.add(j)
		return j, func() error { return context.Cause(ctx) }
	}
	start := func(t *testing.T, f *componentFixture, interval time.Duration) *keeper {
		k := newKeeper(f.jobs, interval, quiet)
		if err := k.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Stop)
		return k
	}

	t.Run("renews the leases of running jobs", func(t *testing.T) {
		f := newComponentFixture(t, 2, 2*time.Second)
		k := start(t, f, 100*time.Millisecond)
		var before time.Time
		f.db.SQL.QueryRow("SELECT MAX(lease_expires) FROM `~~result`").Scan(&before)
		running(f, k, 0)
		running(f, k, 1)
		waitfor.True(t, "both leases renewed", func() bool {
			return f.count(fmt.Sprintf("SELECT COUNT(*) FROM `~~result` WHERE lease_expires > '%s'", before.Format("2006-01-02 15:04:05.000"))) == 2
		})
	})

	t.Run("cancels a job whose lease was taken over, not one that is finishing", func(t *testing.T) {
		f := newComponentFixture(t, 2, 2*time.Second)
		k := start(t, f, 50*time.Millisecond)
		_, cause := running(f, k, 0)
		finishing, finishingCause := running(f, k, 1)
		finishing.finishing.Store(true)
		f.db.Exec(t, "UPDATE `~~result` SET lease_token = 'someoneelse00000000000000000000'")
		waitfor.True(t, "the job cancelled", func() bool { return cause() != nil })
		if !errors.Is(cause(), jobsdb.ErrLeaseLost) {
			t.Errorf("cancelled by %v, want the lost lease", cause())
		}
		if finishingCause() != nil {
			t.Errorf("a finishing job was cancelled: %v", finishingCause())
		}
	})

	t.Run("cancels a job before its lease can expire when renewals fail", func(t *testing.T) {
		f := newComponentFixture(t, 1, time.Second)
		release := f.lockJobs() // every renewal waits for the lock, then times out
		defer release()
		k := start(t, f, 200*time.Millisecond)
		_, cause := running(f, k, 0)
		waitfor.True(t, "the job cancelled", func() bool { return cause() != nil })
		if !errors.Is(cause(), errLeaseUnrenewed) {
			t.Errorf("cancelled by %v, want the unrenewed lease (TestUnrenewableLeaseCancelsTheJobBeforeItExpires checks it against MySQL's clock)", cause())
		}
	})
}
