package jobsdb

import (
	"testing"
	"time"
)

// The pipeline of setupPipeline(t, 3, 2, 2): subjects 1..3 × sessions 1..2 × paramsets 1..2 =
// 12 keys (subject_id, session_id, param_id).

// setupRefreshAdds is the pipeline of 12 keys, two of them (subject 1, session 1) in the
// target. With refreshed, the first refresh has run: 10 jobs of priority 3, due in an hour.
func setupRefreshAdds(t *testing.T, refreshed bool) *fixture {
	t.Helper()
	f := setupPipeline(t, 3, 2, 2, Options{})
	f.db.Exec(t, "INSERT INTO __analysis (subject_id, session_id, param_id) VALUES (1, 1, 1), (1, 1, 2)")
	if refreshed {
		if res := f.refresh(t, RefreshOptions{Priority: 3, Delay: time.Hour}); res.Added != 10 {
			t.Fatalf("the first refresh added %d, want 10", res.Added)
		}
	}
	return f
}

func TestRefreshAdds(t *testing.T) {
	t.Parallel()

	t.Run("the first refresh declares the table and adds key source − target", func(t *testing.T) {
		t.Parallel()
		f := setupRefreshAdds(t, false)
		res, err := f.jobs.Refresh(f.ctx, RefreshOptions{Priority: 3, Delay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if res != (RefreshResult{Added: 10}) {
			t.Fatalf("result %+v, want 10 added", res)
		}
		if n := f.count(t, "{jobs}", "`status` = 'pending' AND `priority` = 3 AND `attempts` = 0 AND `lease_token` = '' "+
			"AND `dispatched_time` IS NULL AND `scheduled_time` > NOW(3) + INTERVAL 59 MINUTE"); n != 10 {
			t.Fatalf("%d jobs as expected, want 10", n)
		}
		if n := f.count(t, "{jobs}", "`subject_id` = 1 AND `session_id` = 1"); n != 0 {
			t.Fatal("a key already in the target was added")
		}
	})

	t.Run("a second refresh adds nothing", func(t *testing.T) {
		t.Parallel()
		f := setupRefreshAdds(t, true)
		if res := f.refresh(t, RefreshOptions{}); res != (RefreshResult{}) {
			t.Fatalf("result %+v", res)
		}
	})

	t.Run("error and ignore rows block re-adding, a deleted job comes back", func(t *testing.T) {
		t.Parallel()
		f := setupRefreshAdds(t, true)
		f.exec(t,
			"UPDATE {jobs} SET `status` = 'error' WHERE `subject_id` = 2 AND `session_id` = 1",
			"UPDATE {jobs} SET `status` = 'ignore' WHERE `subject_id` = 2 AND `session_id` = 2",
			"DELETE FROM {jobs} WHERE `subject_id` = 3")
		if res := f.refresh(t, RefreshOptions{Delay: time.Hour}); res.Added != 4 {
			t.Fatalf("added %d, want the 4 deleted jobs of subject 3", res.Added)
		}
	})

	t.Run("new parent rows give new jobs, due at once with a negative delay", func(t *testing.T) {
		t.Parallel()
		f := setupRefreshAdds(t, true)
		f.db.Exec(t, "INSERT INTO paramset (id) VALUES (3)")
		res := f.refresh(t, RefreshOptions{Delay: -time.Second})
		if res.Added != 6 {
			t.Fatalf("added %d, want 6 (3 subjects × 2 sessions)", res.Added)
		}
		due, err := f.jobs.FetchPending(f.ctx, 0, nil, nil)
		if err != nil || len(due) != 6 {
			t.Fatalf("%d due jobs (%v), want the 6 new ones", len(due), err)
		}
	})

	t.Run("a priority out of the column's range is refused", func(t *testing.T) {
		t.Parallel()
		f := setupRefreshAdds(t, false)
		for _, p := range []int{128, -129, 255} {
			if _, err := f.jobs.Refresh(f.ctx, RefreshOptions{Priority: p}); err == nil {
				t.Fatalf("priority %d accepted", p)
			}
		}
		if p, err := f.jobs.Progress(f.ctx); err != nil || p.Total != 0 {
			t.Fatalf("progress %+v, %v: a refused refresh added jobs", p, err)
		}
	})
}

func TestRefreshRestricted(t *testing.T) {
	t.Parallel()

	t.Run("a SQL restriction adds only its keys", func(t *testing.T) {
		t.Parallel()
		f := setupPipeline(t, 3, 2, 2, Options{})
		res := f.refresh(t, RefreshOptions{Restrictions: []Restriction{{SQL: "subject_id = 1"}}})
		if res.Added != 4 || f.count(t, "{jobs}", "`subject_id` != 1") != 0 {
			t.Fatalf("added %d", res.Added)
		}
	})
	t.Run("an Equal restriction adds only its keys", func(t *testing.T) {
		t.Parallel()
		f := setupPipeline(t, 3, 2, 2, Options{})
		res := f.refresh(t, RefreshOptions{Restrictions: []Restriction{{Equal: map[string]any{"subject_id": 2, "param_id": "2"}}}})
		if res.Added != 2 || f.count(t, "{jobs}", "`subject_id` = 2 AND `param_id` = 2") != 2 {
			t.Fatalf("added %d", res.Added)
		}
	})
	t.Run("restrictions are ANDed", func(t *testing.T) {
		t.Parallel()
		f := setupPipeline(t, 3, 2, 2, Options{})
		res := f.refresh(t, RefreshOptions{Restrictions: []Restriction{{SQL: "subject_id = 3"}, {Equal: map[string]any{"session_id": 1}}}})
		if res.Added != 2 || f.count(t, "{jobs}", "`subject_id` = 3 AND `session_id` = 1") != 2 {
			t.Fatalf("added %d, want 2", res.Added)
		}
	})
	t.Run("an Equal restriction on an unknown column adds nothing", func(t *testing.T) {
		t.Parallel()
		f := setupPipeline(t, 3, 2, 2, Options{})
		f.refresh(t, RefreshOptions{Restrictions: []Restriction{{SQL: "subject_id = 1"}}}) // 4 jobs
		for _, r := range []Restriction{
			{Equal: map[string]any{"result": 1}},
			{Equal: map[string]any{"subject_id = 1 OR 1": 1}},
			{Equal: map[string]any{"subject_id": "1 OR 1=1"}},
		} {
			_, err := f.jobs.Refresh(f.ctx, RefreshOptions{Priority: 5, Restrictions: []Restriction{r}})
			wantErrIs(t, err, ErrBadKey)
		}
		if n := f.count(t, "{jobs}", "TRUE"); n != 4 {
			t.Fatalf("%d jobs, want 4", n)
		}
	})
}

// setupStale has 6 jobs (subject, session, 1), created two hours ago. (1,1): its key left the
// key source. (1,2): its target row appeared. (2,1): reserved, (2,2): error, (3,1): ignore,
// all with keys that left the key source. (3,2): still valid.
func setupStale(t *testing.T) *fixture {
	t.Helper()
	f := setupPipeline(t, 3, 2, 1, Options{})
	f.refresh(t, RefreshOptions{})
	f.exec(t, "UPDATE {jobs} SET `created_time` = NOW(3) - INTERVAL 2 HOUR")
	f.exec(t,
		"UPDATE {jobs} SET `status` = 'reserved' WHERE `subject_id` = 2 AND `session_id` = 1",
		"UPDATE {jobs} SET `status` = 'error' WHERE `subject_id` = 2 AND `session_id` = 2",
		"UPDATE {jobs} SET `status` = 'ignore' WHERE `subject_id` = 3 AND `session_id` = 1")
	f.db.Exec(t,
		"DELETE FROM session WHERE (subject_id, session_id) IN ((1, 1), (2, 1), (2, 2), (3, 1))",
		"INSERT INTO __analysis (subject_id, session_id, param_id) VALUES (1, 2, 1)")
	return f
}

func TestRefreshRemovesStaleJobs(t *testing.T) {
	t.Parallel()

	t.Run("young jobs are not checked", func(t *testing.T) {
		t.Parallel()
		f := setupStale(t)
		if res := f.refresh(t, RefreshOptions{StaleTimeout: 3 * time.Hour}); res.Removed != 0 {
			t.Fatalf("removed %d", res.Removed)
		}
	})
	t.Run("old pending jobs out of the key source or in the target are removed", func(t *testing.T) {
		t.Parallel()
		f := setupStale(t)
		if res := f.refresh(t, RefreshOptions{StaleTimeout: time.Hour}); res.Removed != 2 {
			t.Fatalf("removed %d, want 2", res.Removed)
		}
		if n := f.count(t, "{jobs}", "`subject_id` = 1"); n != 0 {
			t.Fatal("a stale job of subject 1 is left")
		}
	})
	t.Run("reserved, error and ignore jobs and valid jobs stay", func(t *testing.T) {
		t.Parallel()
		f := setupStale(t)
		f.refresh(t, RefreshOptions{StaleTimeout: time.Hour})
		if n := f.count(t, "{jobs}", "TRUE"); n != 4 {
			t.Fatalf("%d jobs left, want 4", n)
		}
		if n := f.count(t, "{jobs}", "`status` IN ('reserved', 'error', 'ignore') OR (`subject_id`, `session_id`) = (3, 2)"); n != 4 {
			t.Fatalf("%d of the reserved, error, ignore and valid jobs left, want 4", n)
		}
	})
	t.Run("a zero stale timeout disables the step", func(t *testing.T) {
		t.Parallel()
		f := setupStale(t)
		f.exec(t, "UPDATE {jobs} SET `status` = 'pending'")
		if res := f.refresh(t, RefreshOptions{}); res.Removed != 0 {
			t.Fatalf("removed %d", res.Removed)
		}
	})
}

// TestRestrictedRefreshLeavesOtherJobsAlone: DataJoint's restricted refresh deletes every old
// job outside its restriction; jetjobs' removes nothing outside it.
func TestRestrictedRefreshLeavesOtherJobsAlone(t *testing.T) {
	t.Parallel()
	only1 := []Restriction{{SQL: "`subject_id` = 1"}}
	// setup: jobs (1,1) (1,2) (2,1) (2,2), created two hours ago.
	setup := func(t *testing.T) *fixture {
		t.Helper()
		f := setupPipeline(t, 2, 2, 1, Options{})
		f.refresh(t, RefreshOptions{})
		f.exec(t, "UPDATE {jobs} SET `created_time` = NOW(3) - INTERVAL 2 HOUR")
		return f
	}
	// removeStale1 makes session 2 leave the key source, then removes the stale jobs of
	// subject 1 only: one job.
	removeStale1 := func(t *testing.T, f *fixture) {
		t.Helper()
		f.db.Exec(t, "DELETE FROM session WHERE session_id = 2")
		res := f.refresh(t, RefreshOptions{Restrictions: []Restriction{{Equal: map[string]any{"subject_id": 1}}}, StaleTimeout: time.Hour})
		if res.Removed != 1 {
			t.Fatalf("removed %d, want 1", res.Removed)
		}
	}

	t.Run("old jobs outside the restriction whose key is valid stay", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		if res := f.refresh(t, RefreshOptions{Restrictions: only1, StaleTimeout: time.Hour}); res.Removed != 0 {
			t.Fatalf("removed %d", res.Removed)
		}
	})
	t.Run("only the restriction's stale jobs are removed", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		removeStale1(t, f)
		if f.count(t, "{jobs}", "`subject_id` = 2 AND `session_id` = 2") != 1 {
			t.Fatal("the stale job of subject 2 was removed by a refresh restricted to subject 1")
		}
		if f.count(t, "{jobs}", "`subject_id` = 1 AND `session_id` = 2") != 0 {
			t.Fatal("the stale job of subject 1 is still there")
		}
	})
	t.Run("an unrestricted refresh removes the rest", func(t *testing.T) {
		t.Parallel()
		f := setup(t)
		removeStale1(t, f)
		if res := f.refresh(t, RefreshOptions{StaleTimeout: time.Hour}); res.Removed != 1 {
			t.Fatalf("removed %d, want 1", res.Removed)
		}
	})
}

// setupRePend has keep_completed and two success jobs, (1,1,1) and (2,1,1), completed a day
// ago with their target rows, and published.
func setupRePend(t *testing.T) *fixture {
	t.Helper()
	f := setupPipeline(t, 2, 1, 1, Options{KeepCompleted: true})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, Key{1, 1, 1}, Key{2, 1, 1})
	f.record(t, success(leases[0], Row{"result": 1.5}), success(leases[1], Row{"result": 2.5}))
	f.exec(t, "UPDATE {jobs} SET `dispatched_time` = NOW(3), `created_time` = NOW(3) - INTERVAL 1 DAY")
	return f
}

func TestRefreshRePends(t *testing.T) {
	t.Parallel()

	t.Run("success jobs whose target row exists stay", func(t *testing.T) {
		t.Parallel()
		f := setupRePend(t)
		if res := f.refresh(t, RefreshOptions{}); res != (RefreshResult{}) {
			t.Fatalf("result %+v", res)
		}
	})
	// rePend2 deletes the target rows and re-pends the job of subject 2 only.
	rePend2 := func(t *testing.T, f *fixture) {
		t.Helper()
		f.db.Exec(t, "DELETE FROM __analysis")
		res := f.refresh(t, RefreshOptions{Restrictions: []Restriction{{SQL: "subject_id = 2"}}, Priority: 2})
		if res != (RefreshResult{RePended: 1}) {
			t.Fatalf("result %+v", res)
		}
	}
	t.Run("a restricted refresh re-pends only inside the restriction", func(t *testing.T) {
		t.Parallel()
		f := setupRePend(t)
		rePend2(t, f)
		if !f.truth(t, Key{2, 1, 1}, "`status` = 'pending' AND `priority` = 2 AND `attempts` = 0 AND `dispatched_time` IS NULL "+
			"AND `completed_time` IS NULL AND `duration` IS NULL AND `created_time` > NOW(3) - INTERVAL 1 HOUR") {
			t.Fatalf("re-pended job %+v", f.get(t, Key{2, 1, 1}))
		}
		if f.get(t, Key{1, 1, 1}).Status != StatusSuccess {
			t.Fatal("a job outside the restriction was re-pended")
		}
	})
	t.Run("a success job whose key left the key source stays", func(t *testing.T) {
		t.Parallel()
		f := setupRePend(t)
		rePend2(t, f)
		f.db.Exec(t, "DELETE FROM session WHERE subject_id = 1")
		if res := f.refresh(t, RefreshOptions{}); res != (RefreshResult{}) {
			t.Fatalf("result %+v", res)
		}
		if f.get(t, Key{1, 1, 1}).Status != StatusSuccess {
			t.Fatal("the success job of a key that left the key source changed")
		}
	})
}

func TestRefreshRecoversOrphans(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 3, Options{})
	f.refresh(t, RefreshOptions{})
	f.reserve(t, idRange(1, 3)...)
	f.exec(t,
		"UPDATE {jobs} SET `lease_expires` = NOW(3) - INTERVAL 1 SECOND WHERE `id` = 1",
		// Reserved by DataJoint: no lease, reserved two hours ago.
		"UPDATE {jobs} SET `lease_expires` = NULL, `lease_token` = '', `reserved_time` = NOW(3) - INTERVAL 2 HOUR WHERE `id` = 2")
	if res := f.refresh(t, RefreshOptions{}); res.Orphaned != 1 {
		t.Fatalf("orphaned %d, want the expired lease only", res.Orphaned)
	}
	if res := f.refresh(t, RefreshOptions{OrphanTimeout: time.Hour}); res.Orphaned != 1 {
		t.Fatalf("orphaned %d, want DataJoint's reservation", res.Orphaned)
	}
	if n := f.count(t, "{jobs}", "`status` = 'pending'"); n != 2 {
		t.Fatalf("%d pending, want 2", n)
	}
}
