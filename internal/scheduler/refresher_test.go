package scheduler

import (
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/jobsdb"
)

func TestRefresher(t *testing.T) {
	t.Parallel()

	t.Run("adds the new keys at the configured priority and tells the dispatcher", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 3)
		priority := 2
		o := b.options(func(o *Options) { o.Refresh.Priority = &priority })
		var refreshed atomic.Int32
		r := newRefresher(o, b.table, b.log, b.jobs, func() { refreshed.Add(1) })
		start := time.Now()
		next, err := r.runOnce(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range seq(1, 3) {
			if job := b.job(t, id); job.Status != jobsdb.StatusPending || job.Priority != priority {
				t.Errorf("job %d: status %s, priority %d; want pending at %d", id, job.Status, job.Priority, priority)
			}
		}
		if n := refreshed.Load(); n != 1 {
			t.Errorf("refreshed called %d times after one refresh", n)
		}
		if d := next.Sub(start); d < o.Refresh.Interval || d > o.Refresh.Interval+5*time.Second {
			t.Errorf("next refresh %v after this one, want the refresh interval %v", d, o.Refresh.Interval)
		}
		if lines := b.logs.matching("msg=refreshed", "added=3"); len(lines) != 1 {
			t.Errorf("refresh logged as %q, want one line with added=3", lines)
		}
	})

	t.Run("backs off and logs on a broken key source without holding up dispatch", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2)
		b.db.Exec(t, "CREATE TABLE keysrc (subject_id INT NOT NULL, PRIMARY KEY (subject_id))",
			"INSERT INTO keysrc SELECT subject_id FROM subject")
		b.start(t, func(o *Options) {
			o.Tables = []Table{{Name: b.table, KeySource: "SELECT subject_id FROM keysrc"}}
		})
		rcv := b.receiver(t)
		if got := rcv.fetch(2, 20*time.Second); !slices.Equal(got, seq(1, 2)) {
			t.Fatalf("fetched %v, want 1..2", got)
		}

		b.db.Exec(t, "RENAME TABLE keysrc TO keysrc_gone")
		failures := func() []string { return b.logs.matching(`msg="refresh failed; retrying"`, "table="+b.table) }
		waitfor.Within(t, 20*time.Second, "four failed refreshes logged", func() bool { return len(failures()) >= 4 })
		// Jobs from elsewhere (jobsctl, DataJoint) are still published while refreshes fail.
		b.addSubjects(t, 3, 3)
		b.refresh(t)
		if got := rcv.fetch(1, 5*time.Second); !slices.Equal(got, []int{3}) {
			t.Fatalf("while refreshes failed, fetched %v, want the new job 3", got)
		}

		lines := failures()
		var waits []time.Duration
		for _, l := range lines {
			if !strings.Contains(l, "keysrc") {
				t.Errorf("the failure does not say what failed: %s", l)
			}
			d, err := time.ParseDuration(attr(l, "retry_in"))
			if err != nil {
				t.Fatalf("a failure without its wait: %s", l)
			}
			waits = append(waits, d)
		}
		// 100 ms ± 50 % first (PollInterval), then ×1.5 each time: the fourth wait is longer
		// than the first can be.
		if waits[3] <= waits[0] {
			t.Errorf("waits after failed refreshes %v, want them growing", waits)
		}

		refreshes := len(b.logs.matching("msg=refreshed"))
		b.db.Exec(t, "RENAME TABLE keysrc_gone TO keysrc")
		waitfor.Within(t, 20*time.Second, "a refresh succeeds once the key source is back", func() bool {
			return len(b.logs.matching("msg=refreshed")) > refreshes
		})
	})
}
