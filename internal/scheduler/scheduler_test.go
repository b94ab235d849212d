package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

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
		b.start(t, func(o *Options) { o.DispatchWindow = 10 })
		waitfor.Within(t, 30*time.Second, "the first window published and marked", func() bool {
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
		const delay = 2 * time.Second
		b.addSubjects(t, 1, 1)
		begin := time.Now()
		if _, err := b.jobs.Refresh(t.Context(), jobsdb.RefreshOptions{Delay: delay, Priority: 5}); err != nil {
			t.Fatal(err)
		}
		b.addSubjects(t, 2, 2)
		b.refresh(t)
		b.start(t, func(o *Options) { o.Refresh.Disabled = true })
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
		b.refresh(t)
		begin := time.Now()
		b.db.Exec(t, "UPDATE `"+jobsName+"` SET scheduled_time = NOW(3) + INTERVAL 1500000 MICROSECOND")
		b.start(t, func(o *Options) { o.Refresh.Disabled = true })
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
		b.reserve(t, 2)
		rcv.ack(2)
		b.expire(t, 2)
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
		r := b.start(t, func(o *Options) { o.RedispatchAfter = time.Second })
		rcv := b.receiver(t)
		if got := rcv.fetch(3, 20*time.Second); !slices.Equal(got, seq(1, 3)) {
			t.Fatalf("fetched %v, want 1..3", got)
		}
		rcv.ack(3) // dropped without touching MySQL: the job stays pending
		if got := rcv.fetch(1, 20*time.Second); !slices.Equal(got, []int{3}) {
			t.Fatalf("after dropping 3's message, fetched %v, want 3", got)
		}
		// 1 and 2 kept their messages: their republishes found them there.
		waitfor.Within(t, 10*time.Second, "a republish reports messages already queued", func() bool { return r.already.Load() > 0 })
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
		waitfor.Within(t, 5*time.Second, "one leader and one standby", func() bool {
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
		// A pass reports what it published once it marked it, which may be just after the
		// messages arrived.
		waitfor.Within(t, 10*time.Second, "the leader's passes reported", func() bool { return leader.published.Load() >= 10 })
		if n := leader.published.Load(); n != 10 {
			t.Errorf("the leader published %d messages for 10 keys", n)
		}
	})

	t.Run("when the leader stops, the standby takes over and publishes new keys", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2)
		r1 := b.start(t, nil)
		waitfor.Within(t, 10*time.Second, "the first scheduler leads", func() bool { return r1.state(b.table) == leadership.StateLeader })
		r2 := b.start(t, nil)
		rcv := b.receiver(t)
		if got := rcv.fetch(2, 20*time.Second); !slices.Equal(got, seq(1, 2)) {
			t.Fatalf("fetched %v, want 1..2", got)
		}
		waitfor.Within(t, 10*time.Second, "the second scheduler is standby", func() bool { return r2.state(b.table) == leadership.StateStandby })
		r1.stop(t)
		b.addSubjects(t, 3, 5)
		if got := rcv.fetch(3, 20*time.Second); !slices.Equal(got, seq(3, 5)) {
			t.Fatalf("after failover, fetched %v, want 3..5", got)
		}
		if s := r2.state(b.table); s != leadership.StateLeader {
			t.Errorf("second scheduler state %v, want leader", s)
		}
		waitfor.Within(t, 10*time.Second, "the new leader's passes reported", func() bool { return r2.published.Load() >= 3 })
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
		waitfor.Within(t, 10*time.Second, "the scheduler leads again", func() bool { return r.state(b.table) == leadership.StateLeader })
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
		waitfor.Within(t, 10*time.Second, "the client sees the disconnect", func() bool { return !b.nc.IsConnected() })
		b.addSubjects(t, 3, 4)
		srv, err = queue.StartEmbedded(queue.EmbeddedOptions{Listen: strings.TrimPrefix(url, "nats://"), StoreDir: store})
		if err != nil {
			t.Fatalf("restart NATS on %s: %v", url, err)
		}
		if got := rcv.fetch(2, 30*time.Second); !slices.Equal(got, seq(3, 4)) {
			t.Fatalf("after the NATS restart, fetched %v, want 3..4", got)
		}
	})

	t.Run("an unknown table stops the scheduler with a TableError", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 0)
		name := b.db.Name + ".no_such_table"
		s := New(Options{Tables: []Table{{Name: name}}, DB: b.pool, NATS: b.nc, Logger: b.log})
		if err := s.Start(t.Context()); err != nil {
			t.Fatalf("Start = %v, want the inspection to fail in the background", err)
		}
		defer s.Stop()
		select {
		case <-s.Stopped():
		case <-time.After(20 * time.Second):
			t.Fatal("the scheduler did not stop by itself within 20s")
		}
		err := s.Err()
		var terr *TableError
		if !errors.As(err, &terr) || terr.Table != name || !errors.Is(err, jobsdb.ErrUnknownTable) {
			t.Fatalf("Err = %v, want a *TableError for %s wrapping jobsdb.ErrUnknownTable", err, name)
		}
		if !strings.Contains(err.Error(), "no_such_table") {
			t.Errorf("error %q does not name the table", err)
		}
	})

	t.Run("a table without key columns stops the scheduler with a TableError", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 0)
		b.db.Exec(t, "CREATE TABLE lonely (id INT NOT NULL, PRIMARY KEY (id))")
		name := b.db.Name + ".lonely"
		s := New(Options{Tables: []Table{{Name: b.table}, {Name: name}}, DB: b.pool, NATS: b.nc, Logger: b.log})
		if err := s.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer s.Stop()
		select {
		case <-s.Stopped():
		case <-time.After(20 * time.Second):
			t.Fatal("the scheduler did not stop by itself within 20s")
		}
		var terr *TableError
		if err := s.Err(); !errors.As(err, &terr) || terr.Table != name || !errors.Is(err, jobsdb.ErrNoKeyColumns) {
			t.Fatalf("Err = %v, want a *TableError for %s wrapping jobsdb.ErrNoKeyColumns", err, name)
		}
		if st := s.States()[b.table]; st != leadership.StateUnknown {
			t.Errorf("the schedulable table is %v after the scheduler stopped, want unknown", st)
		}
	})

	t.Run("options that cannot work are refused by Start", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 0)
		for _, tc := range []struct {
			name   string
			tables []Table
			want   string
		}{
			{"no table", nil, ""},
			{"a table without schema", []Table{{Name: "analysis"}}, "analysis"},
			{"a table listed twice", []Table{{Name: b.table}, {Name: b.table}}, b.table},
		} {
			s := New(Options{Tables: tc.tables, DB: b.pool, NATS: b.nc, Logger: b.log})
			err := s.Start(t.Context())
			s.Stop()
			var terr *TableError
			switch {
			case tc.want == "" && !errors.Is(err, ErrNoTables):
				t.Errorf("%s: Start = %v, want ErrNoTables", tc.name, err)
			case tc.want != "" && (!errors.As(err, &terr) || terr.Table != tc.want):
				t.Errorf("%s: Start = %v, want a *TableError for %s", tc.name, err, tc.want)
			}
		}
	})

	t.Run("a stopped scheduler starts again and leads again", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 1)
		r := b.start(t, nil)
		rcv := b.receiver(t)
		if got := rcv.fetch(1, 20*time.Second); !slices.Equal(got, []int{1}) {
			t.Fatalf("fetched %v, want 1", got)
		}
		if err := r.s.Start(t.Context()); err != nil {
			t.Errorf("Start while running = %v, want nil (nothing to do)", err)
		}
		r.stop(t)
		if st := r.state(b.table); st != leadership.StateUnknown {
			t.Errorf("state after Stop %v, want unknown", st)
		}
		b.addSubjects(t, 2, 2)
		if err := r.s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := rcv.fetch(1, 20*time.Second); !slices.Equal(got, []int{2}) {
			t.Fatalf("after a restart, fetched %v, want 2", got)
		}
	})
}

func TestHandler(t *testing.T) {
	t.Parallel()
	get := func(h http.Handler, path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		body, _ := io.ReadAll(rec.Result().Body)
		return rec.Code, string(body)
	}

	t.Run("not ready before the leadership state is known", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 0)
		s := New(b.fastOptions())
		h := s.Handler()
		if code, _ := get(h, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz = %d", code)
		}
		if code, body := get(h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "unknown") {
			t.Errorf("/readyz before Start = %d %q, want 503 naming the unknown state", code, body)
		}
		if code, _ := get(h, "/metrics"); code != http.StatusNotFound {
			t.Errorf("/metrics without a handler = %d, want 404", code)
		}
	})

	t.Run("ready while running, with the metrics hook served", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 0)
		r := b.start(t, func(o *Options) {
			o.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "jetjobs_up 1\n") })
		})
		h := r.s.Handler()
		waitfor.Within(t, 10*time.Second, "/readyz answers 200", func() bool {
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
		t.Parallel()
		b := setup(t, 0)
		nc := connect(t, natstest.Embedded(t).ClientURL())
		opts := b.fastOptions()
		opts.NATS = nc
		nc.Close()
		if code, body := get(New(opts).Handler(), "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "nats") {
			t.Errorf("/readyz with a closed NATS connection = %d %q", code, body)
		}
	})
}

func testPublishesOnce(t *testing.T, b *bundle) {
	r := b.start(t, nil)
	rcv := b.receiver(t)
	if got := rcv.fetch(25, 20*time.Second); !slices.Equal(got, seq(1, 25)) {
		t.Fatalf("fetched keys %v, want 1..25 once each", got)
	}
	// Workers are woken as soon as the messages are stored, before the jobs are marked.
	for _, id := range []int{1, 25} {
		waitfor.Within(t, 5*time.Second, fmt.Sprintf("job %d marked dispatched", id), func() bool {
			return b.job(t, id).DispatchedTime != nil
		})
		if job := b.job(t, id); job.Status != jobsdb.StatusPending {
			t.Errorf("job %d: status %s; want pending", id, job.Status)
		}
	}
	// Later passes must not publish the same keys again: add a key, and once it arrives
	// (which proves refreshes and dispatches ran meanwhile), count the publishes.
	b.addSubjects(t, 26, 26)
	if got := rcv.fetch(1, 20*time.Second); !slices.Equal(got, []int{26}) {
		t.Fatalf("after adding subject 26, fetched %v", got)
	}
	// The pass that published 26 reports it once it has marked it dispatched, which may be
	// just after the message arrived.
	waitfor.Within(t, 10*time.Second, "the pass that published 26 reported", func() bool { return r.published.Load() >= 26 })
	if n := r.published.Load(); n != 26 {
		t.Errorf("scheduler published %d messages for 26 keys", n)
	}
}

func testStreamDeleted(t *testing.T, b *bundle) {
	b.start(t, func(o *Options) { o.RedispatchAfter = time.Second })
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
	b.start(t, func(o *Options) { o.RedispatchAfter = time.Hour })
	waitfor.Within(t, 20*time.Second, "the four jobs published", func() bool { return b.dispatched(t) == 4 })
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
