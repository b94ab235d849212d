package jobsdb

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func listedIDs(jobs []Job) string {
	var s []string
	for _, j := range jobs {
		s = append(s, fmt.Sprint(j.Key[0]))
	}
	return strings.Join(s, ",")
}

func TestList(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 6, Options{})
	f.refresh(t, RefreshOptions{})
	f.exec(t,
		"UPDATE {jobs} SET `scheduled_time` = '2024-01-01 00:00:00' WHERE `id` IN (1, 2, 3)",
		"UPDATE {jobs} SET `priority` = 1 WHERE `id` IN (5, 6)",
		"UPDATE {jobs} SET `scheduled_time` = '2023-01-01 00:00:00' WHERE `id` = 3",
		"UPDATE {jobs} SET `scheduled_time` = NOW(3) + INTERVAL 1 HOUR WHERE `id` = 6",
		"UPDATE {jobs} SET `status` = 'error', `error_message` = 'broke' WHERE `id` = 2")

	for _, c := range []struct {
		name   string
		filter Filter
		want   string
	}{
		{"all, by priority, scheduled time, key", Filter{}, "5,6,3,1,2,4"},
		{"by status", Filter{Statuses: []Status{StatusError}}, "2"},
		{"by priority", Filter{MaxPriority: intPtr(1)}, "5,6"},
		{"due only", Filter{DueOnly: true}, "5,3,1,2,4"},
		{"limited", Filter{Limit: 2}, "5,6"},
		{"restricted", Filter{Restrictions: []Restriction{{SQL: "id > 2"}, {SQL: "id < 6"}}}, "5,3,4"},
	} {
		t.Run(c.name, func(t *testing.T) {
			jobs, err := f.jobs.List(f.ctx, c.filter)
			if err != nil || listedIDs(jobs) != c.want {
				t.Fatalf("listed %s, %v; want %s", listedIDs(jobs), err, c.want)
			}
		})
	}
	t.Run("fetch pending: due pending jobs in worker order", func(t *testing.T) {
		jobs, err := f.jobs.FetchPending(f.ctx, 0, nil, nil)
		if err != nil || listedIDs(jobs) != "5,3,1,4" {
			t.Fatalf("fetched %s, %v", listedIDs(jobs), err)
		}
		jobs, err = f.jobs.FetchPending(f.ctx, 2, intPtr(5), []Restriction{{Equal: map[string]any{"id": 1}}, {SQL: "TRUE"}})
		if err != nil || listedIDs(jobs) != "1" {
			t.Fatalf("fetched %s, %v", listedIDs(jobs), err)
		}
	})
	t.Run("listed jobs carry their columns, not the stack", func(t *testing.T) {
		jobs, err := f.jobs.List(f.ctx, Filter{Statuses: []Status{StatusError}})
		if err != nil || len(jobs) != 1 || jobs[0].ErrorMessage != "broke" || jobs[0].CreatedTime.IsZero() ||
			jobs[0].ScheduledTime.Format(time.DateTime) != "2024-01-01 00:00:00" || jobs[0].ReservedTime != nil {
			t.Fatalf("jobs %+v, %v", jobs, err)
		}
	})
}

func TestGet(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 2, Options{})
	f.refresh(t, RefreshOptions{})
	l := f.reserve(t, Key{1})[0]
	f.record(t, Outcome{Lease: l, Kind: OutcomeError, Message: "KeyError: 'x'", Stack: "Traceback\n  line 1"})

	t.Run("with the decoded stack", func(t *testing.T) {
		job := f.get(t, Key{"1"})
		if job.ErrorStack != "Traceback\n  line 1" || job.ErrorMessage != "KeyError: 'x'" || job.Key[0] != int64(1) {
			t.Fatalf("job %+v", job)
		}
	})
	t.Run("a stack written as plain text is read as is", func(t *testing.T) {
		f.exec(t, "UPDATE {jobs} SET `error_stack` = 'plain stack' WHERE `id` = 1")
		if job := f.get(t, Key{1}); job.ErrorStack != "plain stack" {
			t.Fatalf("stack %q", job.ErrorStack)
		}
	})
	t.Run("no row is ErrNotFound", func(t *testing.T) {
		_, err := f.jobs.Get(f.ctx, Key{3})
		wantErrIs(t, err, ErrNotFound)
	})
}

// setupDispatch has pending jobs 1..5, never published: 1 and 2 due at priority 5, 3 due at
// priority 0, 4 and 5 due in one and two hours.
func setupDispatch(t *testing.T) *fixture {
	t.Helper()
	f := setupSimple(t, 5, Options{})
	f.refresh(t, RefreshOptions{})
	f.exec(t,
		"UPDATE {jobs} SET `scheduled_time` = NOW(3) + INTERVAL 1 HOUR WHERE `id` = 4",
		"UPDATE {jobs} SET `scheduled_time` = NOW(3) + INTERVAL 2 HOUR WHERE `id` = 5",
		"UPDATE {jobs} SET `priority` = 0 WHERE `id` = 3")
	return f
}

func TestDispatch(t *testing.T) {
	t.Parallel()

	t.Run("due jobs never published are due for dispatch, by priority", func(t *testing.T) {
		t.Parallel()
		f := setupDispatch(t)
		jobs, err := f.jobs.DueForDispatch(f.ctx, DueFilter{Limit: 10, RedispatchAfter: time.Hour})
		if err != nil || listedIDs(jobs) != "3,1,2" {
			t.Fatalf("due %s, %v", listedIDs(jobs), err)
		}
		if jobs, _ = f.jobs.DueForDispatch(f.ctx, DueFilter{Limit: 1, RedispatchAfter: time.Hour}); listedIDs(jobs) != "3" {
			t.Fatalf("limited to %s", listedIDs(jobs))
		}
	})
	t.Run("published jobs are not, until redispatchAfter has passed", func(t *testing.T) {
		t.Parallel()
		f := setupDispatch(t)
		l := f.reserve(t, Key{2})
		if err := f.jobs.MarkDispatched(f.ctx, ids(1, 2, 3), 0); err != nil {
			t.Fatal(err)
		}
		if f.count(t, "{jobs}", "`dispatched_time` IS NOT NULL") != 2 {
			t.Fatal("a reserved job was marked dispatched")
		}
		if jobs, err := f.jobs.DueForDispatch(f.ctx, DueFilter{RedispatchAfter: time.Hour}); err != nil || len(jobs) != 0 {
			t.Fatalf("due %s, %v", listedIDs(jobs), err)
		}
		f.exec(t, "UPDATE {jobs} SET `dispatched_time` = NOW(3) - INTERVAL 2 HOUR WHERE `id` = 1")
		if jobs, _ := f.jobs.DueForDispatch(f.ctx, DueFilter{RedispatchAfter: time.Hour}); listedIDs(jobs) != "1" {
			t.Fatalf("due %s, want 1 (its message may be lost)", listedIDs(jobs))
		}
		if jobs, _ := f.jobs.DueForDispatch(f.ctx, DueFilter{}); len(jobs) != 0 {
			t.Fatalf("due %s with redispatch disabled", listedIDs(jobs))
		}
		f.record(t, Outcome{Lease: l[0], Kind: OutcomeRelease})
		if jobs, _ := f.jobs.DueForDispatch(f.ctx, DueFilter{RedispatchAfter: time.Hour}); listedIDs(jobs) != "1,2" {
			t.Fatalf("due %s, want the released job again", listedIDs(jobs))
		}
	})
	t.Run("a job reserved since it was read for publishing is not marked", func(t *testing.T) {
		t.Parallel()
		f := setupDispatch(t)
		// Read a minute ago; job 1 was reserved and given back since: its message is gone.
		l := f.reserve(t, Key{1})
		f.record(t, Outcome{Lease: l[0], Kind: OutcomeRelease})
		if err := f.jobs.MarkDispatched(f.ctx, ids(1, 2), time.Minute); err != nil {
			t.Fatal(err)
		}
		if f.count(t, "{jobs}", "`dispatched_time` IS NOT NULL") != 1 ||
			f.count(t, "{jobs}", "`id` = 2 AND `dispatched_time` BETWEEN NOW(3) - INTERVAL 70 SECOND AND NOW(3) - INTERVAL 50 SECOND") != 1 {
			t.Fatal("want job 2 alone marked, as published a minute ago")
		}
		if jobs, _ := f.jobs.DueForDispatch(f.ctx, DueFilter{RedispatchAfter: time.Hour}); listedIDs(jobs) != "3,1" {
			t.Fatalf("due %s, want the given-back job 1 (and 3, never published)", listedIDs(jobs))
		}
	})
	t.Run("published jobs of priorities with nothing in the stream are published again", func(t *testing.T) {
		t.Parallel()
		f := setupDispatch(t)
		// Jobs 1 and 2 (priority 5) and 3 (priority 0) are published a minute ago.
		if err := f.jobs.MarkDispatched(f.ctx, ids(1, 2, 3), 0); err != nil {
			t.Fatal(err)
		}
		f.exec(t, "UPDATE {jobs} SET `dispatched_time` = NOW(3) - INTERVAL 1 MINUTE WHERE `id` IN (1, 2, 3)")
		filter := DueFilter{RedispatchAfter: time.Hour, LostAfter: time.Second}
		if jobs, _ := f.jobs.DueForDispatch(f.ctx, filter); len(jobs) != 0 {
			t.Fatalf("due %s without knowing the stream", listedIDs(jobs))
		}
		filter.Busy = []int{0, 5}
		if jobs, _ := f.jobs.DueForDispatch(f.ctx, filter); len(jobs) != 0 {
			t.Fatalf("due %s while both priorities hold messages", listedIDs(jobs))
		}
		filter.Busy = []int{0}
		if jobs, _ := f.jobs.DueForDispatch(f.ctx, filter); listedIDs(jobs) != "1,2" {
			t.Fatalf("due %s, want the priority 5 jobs, whose messages are gone", listedIDs(jobs))
		}
		filter.Busy = []int{}
		if jobs, _ := f.jobs.DueForDispatch(f.ctx, filter); listedIDs(jobs) != "3,1,2" {
			t.Fatalf("due %s, want every published job of an empty stream", listedIDs(jobs))
		}
		filter.LostAfter = 2 * time.Minute
		if jobs, _ := f.jobs.DueForDispatch(f.ctx, filter); len(jobs) != 0 {
			t.Fatalf("due %s published within LostAfter", listedIDs(jobs))
		}
	})
	t.Run("next due is the earliest future scheduled time", func(t *testing.T) {
		t.Parallel()
		f := setupDispatch(t)
		next, ok, err := f.jobs.NextDue(f.ctx)
		if err != nil || !ok {
			t.Fatalf("next %v, %v, %v", next, ok, err)
		}
		want := f.get(t, Key{4}).ScheduledTime
		if !next.Equal(want) {
			t.Fatalf("next due %v, want %v", next, want)
		}
		f.exec(t, "UPDATE {jobs} SET `scheduled_time` = NOW(3) - INTERVAL 1 SECOND")
		if _, ok, err := f.jobs.NextDue(f.ctx); ok || err != nil {
			t.Fatalf("ok %v, %v with nothing in the future", ok, err)
		}
	})
}
