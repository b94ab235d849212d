package jobsdb

import (
	"testing"
	"time"
)

func TestRecoverExpired(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 4, Options{})
	f.refresh(t, RefreshOptions{Priority: -3})
	f.reserve(t, idRange(1, 4)...)
	f.exec(t,
		"UPDATE {jobs} SET `dispatched_time` = NOW(3), `created_time` = '2020-01-02 03:04:05.678'",
		"UPDATE {jobs} SET `lease_expires` = NOW(3) - INTERVAL 1 SECOND WHERE `id` = 1",
		// 3: DataJoint's reservation (no lease) 2 hours old; 4: DataJoint's, 1 minute old.
		"UPDATE {jobs} SET `lease_expires` = NULL, `lease_token` = '', `reserved_time` = NOW(3) - INTERVAL 2 HOUR WHERE `id` = 3",
		"UPDATE {jobs} SET `lease_expires` = NULL, `lease_token` = '', `reserved_time` = NOW(3) - INTERVAL 1 MINUTE WHERE `id` = 4")

	t.Run("an expired lease returns to pending with its history", func(t *testing.T) {
		n, err := f.jobs.RecoverExpired(f.ctx, 0)
		if err != nil || n != 1 {
			t.Fatalf("recovered %d, %v", n, err)
		}
		job := f.get(t, Key{1})
		if job.Status != StatusPending || job.Priority != -3 || job.Attempts != 1 || job.ReservedTime == nil ||
			job.CreatedTime.Format("2006-01-02 15:04:05.000") != "2020-01-02 03:04:05.678" || job.LeaseExpires != nil ||
			job.DispatchedTime != nil || job.Host == "" {
			t.Fatalf("recovered job %+v", job)
		}
		if !f.truth(t, Key{1}, "`lease_token` = ''") {
			t.Fatal("token kept")
		}
	})
	t.Run("a live lease stays", func(t *testing.T) {
		if f.get(t, Key{2}).Status != StatusReserved {
			t.Fatal("recovered a live lease")
		}
	})
	t.Run("a lease-less reservation older than the orphan timeout is recovered", func(t *testing.T) {
		n, err := f.jobs.RecoverExpired(f.ctx, time.Hour)
		if err != nil || n != 1 || f.get(t, Key{3}).Status != StatusPending || f.get(t, Key{4}).Status != StatusReserved {
			t.Fatalf("recovered %d, %v", n, err)
		}
	})
}

func TestIgnore(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 4, Options{})

	t.Run("a key without a job gets an ignore row (declaring the table)", func(t *testing.T) {
		if err := f.jobs.Ignore(f.ctx, Key{1}); err != nil {
			t.Fatal(err)
		}
		if job := f.get(t, Key{1}); job.Status != StatusIgnore || job.Priority != PriorityDefault {
			t.Fatalf("job %+v", job)
		}
	})
	f.refresh(t, RefreshOptions{})
	l := f.reserve(t, Key{2})[0]
	f.record(t, Outcome{Lease: f.reserve(t, Key{3})[0], Kind: OutcomeError, Message: "x"})

	t.Run("existing jobs of any status become ignore", func(t *testing.T) {
		for _, id := range []int{2, 3, 4} {
			if err := f.jobs.Ignore(f.ctx, Key{id}); err != nil {
				t.Fatal(err)
			}
		}
		if n := f.count(t, "{jobs}", "`status` = 'ignore'"); n != 4 {
			t.Fatalf("%d ignored, want 4", n)
		}
	})
	t.Run("the ignored job's worker cannot complete it", func(t *testing.T) {
		if applied := f.record(t, success(l)); applied[0] {
			t.Fatal("completion applied")
		}
	})
	t.Run("refresh does not re-add ignored keys, nor reserve them", func(t *testing.T) {
		if res := f.refresh(t, RefreshOptions{}); res.Added != 0 {
			t.Fatalf("added %d", res.Added)
		}
		if leases := f.reserve(t, idRange(1, 4)...); len(leases) != 0 {
			t.Fatal("reserved an ignored job")
		}
	})
	t.Run("a bad key is refused", func(t *testing.T) {
		wantErrIs(t, f.jobs.Ignore(f.ctx, Key{"1; DROP TABLE item"}), ErrBadKey)
	})
}

func TestDelete(t *testing.T) {
	t.Parallel()
	f := setupPipeline(t, 2, 2, 2, Options{})
	f.refresh(t, RefreshOptions{})
	f.exec(t, "UPDATE {jobs} SET `status` = 'error' WHERE `param_id` = 2")

	steps := []struct {
		name   string
		filter Filter
		want   int64
	}{
		{"by status and restriction", Filter{Statuses: []Status{StatusError}, Restrictions: []Restriction{{SQL: "subject_id = 1"}}}, 2},
		{"by key", Filter{Restrictions: []Restriction{{Equal: map[string]any{"subject_id": 2, "session_id": 2, "param_id": 1}}}}, 1},
		{"by status", Filter{Statuses: []Status{StatusError}}, 2},
		{"nothing matching", Filter{Statuses: []Status{StatusReserved}}, 0},
		{"everything", Filter{}, 3},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			n, err := f.jobs.Delete(f.ctx, s.filter)
			if err != nil || n != s.want {
				t.Fatalf("deleted %d, %v; want %d", n, err, s.want)
			}
		})
	}
	t.Run("a bad filter deletes nothing", func(t *testing.T) {
		f.refresh(t, RefreshOptions{})
		_, err := f.jobs.Delete(f.ctx, Filter{Statuses: []Status{"pending' OR '1"}})
		if err == nil {
			t.Fatal("unknown status accepted")
		}
		_, err = f.jobs.Delete(f.ctx, Filter{Restrictions: []Restriction{{Equal: map[string]any{"status": "pending"}}}})
		wantErrIs(t, err, ErrBadKey)
		if n := f.count(t, "{jobs}", "TRUE"); n != 8 {
			t.Fatalf("%d jobs, want 8", n)
		}
	})
}

func TestRetryErrors(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 3, Options{})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, idRange(1, 3)...)
	f.record(t,
		Outcome{Lease: leases[0], Kind: OutcomeError, Message: "one", Stack: "stack"},
		Outcome{Lease: leases[1], Kind: OutcomeError, Message: "two"},
	)
	f.exec(t, "UPDATE {jobs} SET `dispatched_time` = NOW(3), `scheduled_time` = NOW(3) - INTERVAL 1 DAY")

	t.Run("restricted", func(t *testing.T) {
		n, err := f.jobs.RetryErrors(f.ctx, Filter{Restrictions: []Restriction{{SQL: "id = 1"}}})
		if err != nil || n != 1 {
			t.Fatalf("retried %d, %v", n, err)
		}
		if !f.truth(t, Key{1}, "`status` = 'pending' AND `error_message` = '' AND `error_stack` IS NULL AND `attempts` = 0 "+
			"AND `dispatched_time` IS NULL AND `scheduled_time` > NOW(3) - INTERVAL 1 MINUTE AND `completed_time` IS NULL") {
			t.Fatalf("retried job %+v", f.get(t, Key{1}))
		}
	})
	t.Run("only error jobs move", func(t *testing.T) {
		n, err := f.jobs.RetryErrors(f.ctx, Filter{Statuses: []Status{StatusReserved, StatusError}})
		if err != nil || n != 1 || f.get(t, Key{3}).Status != StatusReserved || f.get(t, Key{2}).Status != StatusPending {
			t.Fatalf("retried %d, %v", n, err)
		}
	})
	t.Run("a retried job can be reserved", func(t *testing.T) {
		if leases := f.reserve(t, ids(1, 2)...); len(leases) != 2 || leases[0].Attempts != 1 {
			t.Fatalf("leases %+v", leases)
		}
	})
}

func TestProgressAndDrop(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 10, Options{})

	t.Run("no jobs table: all zeros", func(t *testing.T) {
		p, err := f.jobs.Progress(f.ctx)
		if err != nil || p != (Progress{}) {
			t.Fatalf("progress %+v, %v", p, err)
		}
		_, err = f.jobs.List(f.ctx, Filter{})
		wantErrIs(t, err, ErrNoJobsTable)
	})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, idRange(1, 5)...)
	f.record(t, success(leases[0]), Outcome{Lease: leases[1], Kind: OutcomeError})
	if err := f.jobs.Ignore(f.ctx, Key{6}); err != nil {
		t.Fatal(err)
	}

	t.Run("counts per status", func(t *testing.T) {
		p, err := f.jobs.Progress(f.ctx)
		want := Progress{Pending: 4, Reserved: 3, Error: 1, Ignore: 1, Total: 9}
		if err != nil || p != want {
			t.Fatalf("progress %+v, %v; want %+v", p, err, want)
		}
	})
	t.Run("drop removes the table; dropping again is fine", func(t *testing.T) {
		for range 2 {
			if err := f.jobs.Drop(f.ctx); err != nil {
				t.Fatal(err)
			}
		}
		if p, err := f.jobs.Progress(f.ctx); err != nil || p != (Progress{}) {
			t.Fatalf("progress %+v, %v", p, err)
		}
	})
	t.Run("refresh declares it again", func(t *testing.T) {
		if res := f.refresh(t, RefreshOptions{}); res.Added != 10 {
			t.Fatalf("added %d", res.Added)
		}
	})
	t.Run("a table dropped behind the handle's back is declared again by refresh", func(t *testing.T) {
		f.exec(t, "DROP TABLE {jobs}")
		if res := f.refresh(t, RefreshOptions{}); res.Added != 10 {
			t.Fatalf("added %d", res.Added)
		}
	})
}
