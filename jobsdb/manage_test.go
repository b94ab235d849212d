package jobsdb

import (
	"testing"
	"time"
)

// setupExpired has jobs 1..4 reserved at priority -3, all published and created long ago:
// 1 with its lease expired, 2 with a live lease, 3 and 4 reserved by DataJoint (no lease) two
// hours and one minute ago.
func setupExpired(t *testing.T) *fixture {
	t.Helper()
	f := setupSimple(t, 4, Options{})
	f.refresh(t, RefreshOptions{Priority: -3})
	f.reserve(t, idRange(1, 4)...)
	f.exec(t,
		"UPDATE {jobs} SET `dispatched_time` = NOW(3), `created_time` = '2020-01-02 03:04:05.678'",
		"UPDATE {jobs} SET `lease_expires` = NOW(3) - INTERVAL 1 SECOND WHERE `id` = 1",
		"UPDATE {jobs} SET `lease_expires` = NULL, `lease_token` = '', `reserved_time` = NOW(3) - INTERVAL 2 HOUR WHERE `id` = 3",
		"UPDATE {jobs} SET `lease_expires` = NULL, `lease_token` = '', `reserved_time` = NOW(3) - INTERVAL 1 MINUTE WHERE `id` = 4")
	return f
}

// recoverExpired runs RecoverExpired and wants n jobs recovered.
func (f *fixture) recoverExpired(t *testing.T, orphanTimeout time.Duration, want int64) {
	t.Helper()
	if n, err := f.jobs.RecoverExpired(f.ctx, orphanTimeout); err != nil || n != want {
		t.Fatalf("recovered %d, %v; want %d", n, err, want)
	}
}

func TestRecoverExpired(t *testing.T) {
	t.Parallel()

	t.Run("an expired lease returns to pending with its history", func(t *testing.T) {
		t.Parallel()
		f := setupExpired(t)
		f.recoverExpired(t, 0, 1)
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
		t.Parallel()
		f := setupExpired(t)
		f.recoverExpired(t, 0, 1)
		if f.get(t, Key{2}).Status != StatusReserved {
			t.Fatal("recovered a live lease")
		}
	})
	t.Run("a lease-less reservation older than the orphan timeout is recovered", func(t *testing.T) {
		t.Parallel()
		f := setupExpired(t)
		f.recoverExpired(t, 0, 1) // the expired lease, so that only DataJoint's reservations are left
		f.recoverExpired(t, time.Hour, 1)
		if f.get(t, Key{3}).Status != StatusPending || f.get(t, Key{4}).Status != StatusReserved {
			t.Fatalf("job 3 %s, job 4 %s; want pending, reserved", f.get(t, Key{3}).Status, f.get(t, Key{4}).Status)
		}
	})
}

// setupIgnored has jobs 1..4: 1 ignored before the table existed, 2 reserved (its lease is
// returned), 3 error, 4 pending.
func setupIgnored(t *testing.T) (*fixture, Lease) {
	t.Helper()
	f := setupSimple(t, 4, Options{})
	f.ignore(t, Key{1})
	f.refresh(t, RefreshOptions{})
	l := f.reserve(t, Key{2})[0]
	f.record(t, Outcome{Lease: f.reserve(t, Key{3})[0], Kind: OutcomeError, Message: "x"})
	return f, l
}

// ignore ignores keys and fails the test on error.
func (f *fixture) ignore(t *testing.T, keys ...Key) {
	t.Helper()
	for _, k := range keys {
		if err := f.jobs.Ignore(f.ctx, k); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIgnore(t *testing.T) {
	t.Parallel()

	t.Run("a key without a job gets an ignore row (declaring the table)", func(t *testing.T) {
		t.Parallel()
		f := setupSimple(t, 4, Options{})
		f.ignore(t, Key{1})
		if job := f.get(t, Key{1}); job.Status != StatusIgnore || job.Priority != PriorityDefault {
			t.Fatalf("job %+v", job)
		}
	})
	t.Run("existing jobs of any status become ignore", func(t *testing.T) {
		t.Parallel()
		f, _ := setupIgnored(t)
		f.ignore(t, ids(2, 3, 4)...)
		if n := f.count(t, "{jobs}", "`status` = 'ignore'"); n != 4 {
			t.Fatalf("%d ignored, want 4", n)
		}
	})
	t.Run("the ignored job's worker cannot complete it", func(t *testing.T) {
		t.Parallel()
		f, l := setupIgnored(t)
		f.ignore(t, Key{2})
		if applied := f.record(t, success(l)); applied[0] {
			t.Fatal("completion applied")
		}
	})
	t.Run("refresh does not re-add ignored keys, nor reserve them", func(t *testing.T) {
		t.Parallel()
		f, _ := setupIgnored(t)
		f.ignore(t, ids(2, 3, 4)...)
		if res := f.refresh(t, RefreshOptions{}); res.Added != 0 {
			t.Fatalf("added %d", res.Added)
		}
		if leases := f.reserve(t, idRange(1, 4)...); len(leases) != 0 {
			t.Fatal("reserved an ignored job")
		}
	})
	t.Run("a bad key is refused", func(t *testing.T) {
		t.Parallel()
		f := setupSimple(t, 4, Options{})
		wantErrIs(t, f.jobs.Ignore(f.ctx, Key{"1; DROP TABLE item"}), ErrBadKey)
	})
}

// setupDelete has the 8 jobs of 2 subjects × 2 sessions × 2 paramsets, those of paramset 2
// (4 jobs) in error.
func setupDelete(t *testing.T) *fixture {
	t.Helper()
	f := setupPipeline(t, 2, 2, 2, Options{})
	f.refresh(t, RefreshOptions{})
	f.exec(t, "UPDATE {jobs} SET `status` = 'error' WHERE `param_id` = 2")
	return f
}

func TestDelete(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		filter Filter
		want   int64
	}{
		{"by status and restriction", Filter{Statuses: []Status{StatusError}, Restrictions: []Restriction{{SQL: "subject_id = 1"}}}, 2},
		{"by key", Filter{Restrictions: []Restriction{{Equal: map[string]any{"subject_id": 2, "session_id": 2, "param_id": 1}}}}, 1},
		{"by status", Filter{Statuses: []Status{StatusError}}, 4},
		{"nothing matching", Filter{Statuses: []Status{StatusReserved}}, 0},
		{"everything", Filter{}, 8},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := setupDelete(t)
			n, err := f.jobs.Delete(f.ctx, c.filter)
			if err != nil || n != c.want {
				t.Fatalf("deleted %d, %v; want %d", n, err, c.want)
			}
			if left := f.count(t, "{jobs}", "TRUE"); int64(left) != 8-c.want {
				t.Fatalf("%d jobs left, want %d", left, 8-c.want)
			}
		})
	}
	t.Run("a bad filter deletes nothing", func(t *testing.T) {
		t.Parallel()
		f := setupDelete(t)
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

// setupErrors has jobs 1..3 reserved, 1 and 2 then failed (1 with a stack), all published
// and scheduled a day ago.
func setupErrors(t *testing.T) *fixture {
	t.Helper()
	f := setupSimple(t, 3, Options{})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, idRange(1, 3)...)
	f.record(t,
		Outcome{Lease: leases[0], Kind: OutcomeError, Message: "one", Stack: "stack"},
		Outcome{Lease: leases[1], Kind: OutcomeError, Message: "two"},
	)
	f.exec(t, "UPDATE {jobs} SET `dispatched_time` = NOW(3), `scheduled_time` = NOW(3) - INTERVAL 1 DAY")
	return f
}

// retryErrors runs RetryErrors and wants n jobs retried.
func (f *fixture) retryErrors(t *testing.T, filter Filter, want int64) {
	t.Helper()
	if n, err := f.jobs.RetryErrors(f.ctx, filter); err != nil || n != want {
		t.Fatalf("retried %d, %v; want %d", n, err, want)
	}
}

func TestRetryErrors(t *testing.T) {
	t.Parallel()

	t.Run("restricted", func(t *testing.T) {
		t.Parallel()
		f := setupErrors(t)
		f.retryErrors(t, Filter{Restrictions: []Restriction{{SQL: "id = 1"}}}, 1)
		if !f.truth(t, Key{1}, "`status` = 'pending' AND `error_message` = '' AND `error_stack` IS NULL AND `attempts` = 0 "+
			"AND `dispatched_time` IS NULL AND `scheduled_time` > NOW(3) - INTERVAL 1 MINUTE AND `completed_time` IS NULL") {
			t.Fatalf("retried job %+v", f.get(t, Key{1}))
		}
		if f.get(t, Key{2}).Status != StatusError {
			t.Fatal("a job outside the restriction was retried")
		}
	})
	t.Run("only error jobs move", func(t *testing.T) {
		t.Parallel()
		f := setupErrors(t)
		f.retryErrors(t, Filter{Statuses: []Status{StatusReserved, StatusError}}, 2)
		if f.get(t, Key{3}).Status != StatusReserved || f.get(t, Key{1}).Status != StatusPending || f.get(t, Key{2}).Status != StatusPending {
			t.Fatalf("jobs %s, %s, %s; want pending, pending, reserved",
				f.get(t, Key{1}).Status, f.get(t, Key{2}).Status, f.get(t, Key{3}).Status)
		}
	})
	t.Run("a retried job can be reserved", func(t *testing.T) {
		t.Parallel()
		f := setupErrors(t)
		f.retryErrors(t, Filter{}, 2)
		if leases := f.reserve(t, ids(1, 2)...); len(leases) != 2 || leases[0].Attempts != 1 {
			t.Fatalf("leases %+v", leases)
		}
	})
}

// setupProgress has 10 keys: after a refresh, jobs 1..5 reserved, then 1 completed (deleted,
// no target row) and 2 failed; job 6 ignored.
func setupProgress(t *testing.T) *fixture {
	t.Helper()
	f := setupSimple(t, 10, Options{})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, idRange(1, 5)...)
	f.record(t, success(leases[0]), Outcome{Lease: leases[1], Kind: OutcomeError})
	f.ignore(t, Key{6})
	return f
}

// drop drops the jobs table and fails the test on error.
func (f *fixture) drop(t *testing.T) {
	t.Helper()
	if err := f.jobs.Drop(f.ctx); err != nil {
		t.Fatal(err)
	}
}

func TestProgressAndDrop(t *testing.T) {
	t.Parallel()

	t.Run("no jobs table: all zeros", func(t *testing.T) {
		t.Parallel()
		f := setupSimple(t, 10, Options{})
		p, err := f.jobs.Progress(f.ctx)
		if err != nil || p != (Progress{}) {
			t.Fatalf("progress %+v, %v", p, err)
		}
		_, err = f.jobs.List(f.ctx, Filter{})
		wantErrIs(t, err, ErrNoJobsTable)
	})
	t.Run("counts per status", func(t *testing.T) {
		t.Parallel()
		f := setupProgress(t)
		p, err := f.jobs.Progress(f.ctx)
		want := Progress{Pending: 4, Reserved: 3, Error: 1, Ignore: 1, Total: 9}
		if err != nil || p != want {
			t.Fatalf("progress %+v, %v; want %+v", p, err, want)
		}
	})
	t.Run("drop removes the table; dropping again is fine", func(t *testing.T) {
		t.Parallel()
		f := setupProgress(t)
		f.drop(t)
		f.drop(t)
		if p, err := f.jobs.Progress(f.ctx); err != nil || p != (Progress{}) {
			t.Fatalf("progress %+v, %v", p, err)
		}
	})
	t.Run("refresh declares it again", func(t *testing.T) {
		t.Parallel()
		f := setupProgress(t)
		f.drop(t)
		if res := f.refresh(t, RefreshOptions{}); res.Added != 10 {
			t.Fatalf("added %d", res.Added)
		}
	})
	t.Run("a table dropped behind the handle's back is declared again by refresh", func(t *testing.T) {
		t.Parallel()
		f := setupProgress(t)
		f.exec(t, "DROP TABLE {jobs}")
		if res := f.refresh(t, RefreshOptions{}); res.Added != 10 {
			t.Fatalf("added %d", res.Added)
		}
	})
}
