package leadership_test

import (
	"context"
	"database/sql"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/mysqltest"
	"github.com/jetjobs/jetjobs/internal/waitfor"
)

func TestMain(m *testing.M) { mysqltest.Main(m) }

// fast intervals keep the tests short; the takeover delay stays CheckInterval + CheckTimeout.
var fast = leadership.Config{
	RetryInterval: 50 * time.Millisecond,
	CheckInterval: 50 * time.Millisecond,
	CheckTimeout:  500 * time.Millisecond,
}

// candidate is one started elector, with what its terms saw.
type candidate struct {
	name     string
	elector  *leadership.Elector
	leading  atomic.Bool
	terms    atomic.Int32  // terms begun
	lostTerm chan struct{} // closed when a term's context ended
	lostOnce sync.Once
}

// bundle is what a test needs around its candidates.
type bundle struct {
	db      *mysqltest.DB
	lock    string
	leaders atomic.Int32 // candidates currently inside their leader function
	maxSeen atomic.Int32
}

func setup(t *testing.T) *bundle {
	t.Helper()
	db := mysqltest.New(t)
	return &bundle{db: db, lock: leadership.LockName(db.Name + ".target")}
}

// candidate returns an elector on the test's lock, with its own pool, not yet started.
func (b *bundle) candidate(t *testing.T, name string) *candidate {
	t.Helper()
	pool, err := sql.Open("mysql", b.db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	c := &candidate{name: name, lostTerm: make(chan struct{})}
	c.elector = leadership.New(pool, b.lock, fast, func(ctx context.Context) {
		n := b.leaders.Add(1)
		for {
			m := b.maxSeen.Load()
			if n <= m || b.maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
		c.terms.Add(1)
		c.leading.Store(true)
		<-ctx.Done()
		c.leading.Store(false)
		b.leaders.Add(-1)
		c.lostOnce.Do(func() { close(c.lostTerm) })
	})
	t.Cleanup(c.elector.Stop) // before the pool closes: cleanups run last-registered first
	return c
}

// start returns a started candidate.
func (b *bundle) start(t *testing.T, name string) *candidate {
	t.Helper()
	c := b.candidate(t, name)
	if err := c.elector.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return c
}

func (c *candidate) stop() { c.elector.Stop() }

// sample watches the number of leaders until stop is called and fails the test if it ever
// exceeds one.
func (b *bundle) sample(t *testing.T) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	var worst atomic.Int32
	go func() {
		defer close(done)
		for {
			if n := b.leaders.Load(); n > worst.Load() {
				worst.Store(n)
			}
			select {
			case <-quit:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return func() {
		close(quit)
		<-done
		if w := max(worst.Load(), b.maxSeen.Load()); w > 1 {
			t.Errorf("%d candidates led at the same time", w)
		}
	}
}

func leaderOf(cs ...*candidate) []*candidate {
	var out []*candidate
	for _, c := range cs {
		if c.leading.Load() {
			out = append(out, c)
		}
	}
	return out
}

func TestLockName(t *testing.T) {
	t.Parallel()
	t.Run("short lower-case names are readable", func(t *testing.T) {
		if got := leadership.LockName("lab.__analysis"); got != "jetjobs:lab.__analysis" {
			t.Errorf("LockName = %q", got)
		}
	})
	t.Run("long names are hashed within 64 characters and stay distinct", func(t *testing.T) {
		a := leadership.LockName("s." + strings.Repeat("a", 80))
		b := leadership.LockName("s." + strings.Repeat("a", 79) + "b")
		if len(a) > 64 || len(b) > 64 {
			t.Errorf("lock names longer than 64: %d, %d", len(a), len(b))
		}
		if a == b {
			t.Errorf("two tables share lock name %q", a)
		}
		if !strings.HasPrefix(a, "jetjobs:s.aaa") {
			t.Errorf("hashed name %q lost its readable prefix", a)
		}
	})
	t.Run("names differing only in case get different locks", func(t *testing.T) {
		if a, b := leadership.LockName("s.Table"), leadership.LockName("s.table"); a == b {
			t.Errorf("s.Table and s.table share lock %q", a)
		}
	})
}

func TestElector(t *testing.T) {
	t.Parallel()

	t.Run("two candidates on one lock: exactly one leads", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		stopSampling := b.sample(t)
		a, c := b.start(t, "a"), b.start(t, "b")
		waitfor.Within(t, 10*time.Second, "one candidate leads", func() bool { return len(leaderOf(a, c)) == 1 })
		leader := leaderOf(a, c)[0]
		standby := a
		if leader == a {
			standby = c
		}
		waitfor.Within(t, 5*time.Second, "the other is standby", func() bool {
			return standby.elector.State() == leadership.StateStandby
		})
		if s := leader.elector.State(); s != leadership.StateLeader {
			t.Errorf("leader's state = %v", s)
		}
		// The standby keeps retrying; it must not lead while the leader holds the lock.
		time.Sleep(10 * fast.RetryInterval) // observation window, not synchronisation
		if got := leaderOf(a, c); len(got) != 1 || got[0] != leader {
			t.Errorf("leadership changed without a failure")
		}
		stopSampling()
	})

	t.Run("killing the leader's connection hands over to the standby and cancels the old leader", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		stopSampling := b.sample(t)
		a := b.start(t, "a")
		waitfor.Within(t, 10*time.Second, "a leads", func() bool { return a.leading.Load() })
		c := b.start(t, "b")
		waitfor.Within(t, 5*time.Second, "b is standby", func() bool { return c.elector.State() == leadership.StateStandby })

		var holder int64
		if err := b.db.SQL.QueryRow("SELECT IS_USED_LOCK(?)", b.lock).Scan(&holder); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		if _, err := b.db.SQL.Exec("KILL ?", holder); err != nil {
			t.Fatalf("kill leader connection %d: %v", holder, err)
		}
		select {
		case <-a.lostTerm:
		case <-time.After(5 * time.Second):
			t.Fatal("the old leader's context was not cancelled after its connection was killed")
		}
		waitfor.Within(t, 5*time.Second, "b leads", func() bool { return c.leading.Load() })
		t.Logf("takeover took %v", time.Since(killed).Round(time.Millisecond))
		// a lost its connection; it campaigns again, as a standby.
		waitfor.Within(t, 5*time.Second, "a is standby", func() bool { return a.elector.State() == leadership.StateStandby })
		if a.leading.Load() {
			t.Error("a leads again while b holds the lock")
		}
		stopSampling()
	})

	t.Run("a leader that stops releases the lock at once", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		stopSampling := b.sample(t)
		a := b.start(t, "a")
		waitfor.Within(t, 10*time.Second, "a leads", func() bool { return a.leading.Load() })
		c := b.start(t, "b")
		waitfor.Within(t, 5*time.Second, "b is standby", func() bool { return c.elector.State() == leadership.StateStandby })
		a.stop()
		if a.leading.Load() {
			t.Error("a still leads after Stop returned")
		}
		if s := a.elector.State(); s != leadership.StateUnknown {
			t.Errorf("a's state after Stop = %v, want unknown", s)
		}
		waitfor.Within(t, 5*time.Second, "b leads", func() bool { return c.leading.Load() })
		c.stop()
		var free int
		if err := b.db.SQL.QueryRow("SELECT IS_FREE_LOCK(?)", b.lock).Scan(&free); err != nil {
			t.Fatal(err)
		}
		if free != 1 {
			t.Error("the lock is still held after every elector stopped")
		}
		stopSampling()
	})

	t.Run("a lock taken by another session is noticed, and retaken once free", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.start(t, "a")
		waitfor.Within(t, 10*time.Second, "a leads", func() bool { return a.leading.Load() })
		// Kill a's connection and take the lock on a connection of our own before a retries.
		var holder int64
		if err := b.db.SQL.QueryRow("SELECT IS_USED_LOCK(?)", b.lock).Scan(&holder); err != nil {
			t.Fatal(err)
		}
		conn, err := b.db.SQL.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := b.db.SQL.Exec("KILL ?", holder); err != nil {
			t.Fatal(err)
		}
		var got sql.NullInt64
		if err := conn.QueryRowContext(context.Background(), "SELECT GET_LOCK(?, 5)", b.lock).Scan(&got); err != nil || got.Int64 != 1 {
			t.Fatalf("take the lock: %v %v", got, err)
		}
		select {
		case <-a.lostTerm:
		case <-time.After(5 * time.Second):
			t.Fatal("a kept leading after losing its lock")
		}
		waitfor.Within(t, 5*time.Second, "a is standby", func() bool { return a.elector.State() == leadership.StateStandby })
		if _, err := conn.ExecContext(context.Background(), "DO RELEASE_LOCK(?)", b.lock); err != nil {
			t.Fatal(err)
		}
		waitfor.Within(t, 5*time.Second, "a leads again", func() bool { return a.leading.Load() })
		if n := a.terms.Load(); n != 2 {
			t.Errorf("a led %d terms, want 2", n)
		}
	})

	t.Run("Start on a running elector does nothing; a stopped one starts again", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		stopSampling := b.sample(t)
		a := b.start(t, "a")
		waitfor.Within(t, 10*time.Second, "a leads", func() bool { return a.leading.Load() })
		if err := a.elector.Start(context.Background()); err != nil {
			t.Fatalf("second Start: %v", err)
		}
		// A second campaign would be a second connection asking for the lock: it would fail
		// to get it, and its state would flip to standby. Watch a few check intervals.
		time.Sleep(10 * fast.CheckInterval) // observation window, not synchronisation
		if n, s := a.terms.Load(), a.elector.State(); n != 1 || s != leadership.StateLeader {
			t.Errorf("after a second Start: %d terms, state %v; want 1 term, leader", n, s)
		}
		a.stop()
		select {
		case <-a.lostTerm:
		default:
			t.Fatal("Stop returned before the term's context ended")
		}
		if err := a.elector.Start(context.Background()); err != nil {
			t.Fatalf("Start after Stop: %v", err)
		}
		waitfor.Within(t, 10*time.Second, "a leads again", func() bool { return a.leading.Load() })
		if n := a.terms.Load(); n != 2 {
			t.Errorf("a led %d terms, want 2", n)
		}
		stopSampling()
	})

	t.Run("Stop before Start does nothing, and the end of Start's context stops the elector", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.candidate(t, "a")
		a.stop()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := a.elector.Start(ctx); err != nil {
			t.Fatal(err)
		}
		waitfor.Within(t, 10*time.Second, "a leads", func() bool { return a.leading.Load() })
		cancel()
		select {
		case <-a.elector.Stopped():
		case <-time.After(10 * time.Second):
			t.Fatal("the elector did not stop within 10s of its context ending")
		}
		if a.leading.Load() {
			t.Error("a still leads after its context ended")
		}
		var free int
		if err := b.db.SQL.QueryRow("SELECT IS_FREE_LOCK(?)", b.lock).Scan(&free); err != nil {
			t.Fatal(err)
		}
		if free != 1 {
			t.Error("the lock is still held after the elector's context ended")
		}
	})
}
