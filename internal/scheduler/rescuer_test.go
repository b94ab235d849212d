package scheduler

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/jobsdb"
)

// rescuerFixture is a table with two reserved jobs and a rescuer that counts its pokes.
func rescuerFixture(t *testing.T) (*rescuer, *bundle, *atomic.Int32) {
	t.Helper()
	b := setup(t, 2)
	b.refresh(t)
	b.reserve(t, 1, 2)
	var pokes atomic.Int32
	r := newRescuer(b.options(nil), b.table, b.log, b.jobs, func() { pokes.Add(1) })
	t.Cleanup(r.Stop)
	return r, b, &pokes
}

func TestRescuer(t *testing.T) {
	t.Parallel()

	t.Run("recovers an expired lease, leaves a live one, and pokes the dispatcher", func(t *testing.T) {
		t.Parallel()
		r, b, pokes := rescuerFixture(t)
		b.expire(t, 1)
		start := time.Now()
		next, err := r.runOnce(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if job := b.job(t, 1); job.Status != jobsdb.StatusPending || job.Attempts != 1 || job.Priority != jobsdb.PriorityDefault {
			t.Errorf("expired job: status %s, attempts %d, priority %d; want pending with its attempt and priority kept",
				job.Status, job.Attempts, job.Priority)
		}
		if job := b.job(t, 2); job.Status != jobsdb.StatusReserved {
			t.Errorf("job with a live lease: status %s, want reserved", job.Status)
		}
		if n := pokes.Load(); n != 1 {
			t.Errorf("the dispatcher was poked %d times, want once", n)
		}
		if d := next.Sub(start); d < r.o.RecoverInterval || d > r.o.RecoverInterval+5*time.Second {
			t.Errorf("next recovery %v after this one, want the recover interval %v", d, r.o.RecoverInterval)
		}

		if _, err := r.runOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := pokes.Load(); n != 1 {
			t.Errorf("a recovery that found nothing poked the dispatcher (%d pokes)", n)
		}
	})

	t.Run("a dropped jobs table is nothing to recover, not an error", func(t *testing.T) {
		t.Parallel()
		r, b, _ := rescuerFixture(t)
		b.db.Exec(t, "DROP TABLE `"+jobsName+"`")
		if _, err := r.runOnce(t.Context()); err != nil {
			t.Errorf("runOnce = %v, want nil", err)
		}
	})

	t.Run("started, it recovers every recover interval", func(t *testing.T) {
		t.Parallel()
		r, b, pokes := rescuerFixture(t)
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		b.expire(t, 1)
		waitfor.Within(t, 10*time.Second, "job 1 recovered", func() bool { return b.job(t, 1).Status == jobsdb.StatusPending })
		b.expire(t, 2)
		waitfor.Within(t, 10*time.Second, "job 2 recovered", func() bool { return b.job(t, 2).Status == jobsdb.StatusPending })
		// The poke follows the recovery's commit: wait for it.
		waitfor.Within(t, 10*time.Second, "a poke per recovery", func() bool { return pokes.Load() >= 2 })
		if n := pokes.Load(); n != 2 {
			t.Errorf("the dispatcher was poked %d times for two recoveries", n)
		}
	})
}
