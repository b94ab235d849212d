package jobsdb

import (
	"fmt"
	"strings"
	"testing"
)

// pageAll pages through f's jobs n at a time and returns them in order, failing on a page
// that says more follow but is empty.
func pageAll(t *testing.T, j *Jobs, f Filter, n int) []Job {
	t.Helper()
	var all []Job
	var after *Cursor
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
		jobs, more, err := j.Page(testContext(t), f, after, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) > n {
			t.Fatalf("page of %d jobs, asked for %d", len(jobs), n)
		}
		all = append(all, jobs...)
		if !more {
			return all
		}
		if len(jobs) == 0 {
			t.Fatal("an empty page says more follow")
		}
		c := CursorOf(jobs[len(jobs)-1])
		after = &c
	}
}

func TestPage(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 40, Options{})
	f.refresh(t, RefreshOptions{})
	// Ties everywhere: several jobs share a priority and a scheduled time, across statuses.
	f.exec(t,
		"UPDATE {jobs} SET `scheduled_time` = '2024-01-01 00:00:00.000' WHERE `id` % 3 = 0",
		"UPDATE {jobs} SET `scheduled_time` = '2024-01-01 00:00:00.500' WHERE `id` % 3 = 1",
		"UPDATE {jobs} SET `priority` = `id` % 4 - 1",
		"UPDATE {jobs} SET `status` = 'error', `error_message` = IF(`id` % 2, 'odd', 'even') WHERE `id` % 5 = 0",
		"UPDATE {jobs} SET `status` = 'ignore' WHERE `id` % 7 = 0",
		"UPDATE {jobs} SET `status` = 'success' WHERE `id` IN (11, 13)")
	odd := "odd"
	for _, filter := range []Filter{
		{},
		{Statuses: []Status{StatusPending}},
		{Statuses: []Status{StatusError, StatusIgnore, StatusError}},
		{MaxPriority: intPtr(0)},
		{DueOnly: true, Restrictions: []Restriction{{SQL: "id > 7"}}},
		{Statuses: []Status{StatusError}, ErrorMessage: &odd},
	} {
		want, err := f.jobs.List(f.ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{1, 3, 7, 100} {
			if got := pageAll(t, f.jobs, filter, n); listedIDs(got) != listedIDs(want) {
				t.Errorf("filter %+v, pages of %d: %s\nwant (List)   %s", filter, n, listedIDs(got), listedIDs(want))
			}
		}
	}
	t.Run("a page carries the job's columns", func(t *testing.T) {
		jobs, more, err := f.jobs.Page(f.ctx, Filter{Statuses: []Status{StatusError}, ErrorMessage: &odd}, nil, 1)
		if err != nil || !more || len(jobs) != 1 || jobs[0].ErrorMessage != "odd" || jobs[0].Status != StatusError {
			t.Fatalf("jobs %+v, more %v, %v", jobs, more, err)
		}
	})
	t.Run("a jobs table without the status index is paged all the same", func(t *testing.T) {
		g := setupSimple(t, 12, Options{})
		g.refresh(t, RefreshOptions{})
		g.exec(t, "UPDATE {jobs} SET `status` = 'error' WHERE `id` % 3 = 0", "ALTER TABLE {jobs} DROP INDEX `status`")
		want, err := g.jobs.List(g.ctx, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if got := pageAll(t, g.jobs, Filter{}, 5); listedIDs(got) != listedIDs(want) {
			t.Fatalf("paged %s, listed %s", listedIDs(got), listedIDs(want))
		}
	})
	t.Run("bad input", func(t *testing.T) {
		if _, _, err := f.jobs.Page(f.ctx, Filter{}, nil, 0); err == nil {
			t.Error("a page of 0 jobs was accepted")
		}
		if _, _, err := f.jobs.Page(f.ctx, Filter{}, &Cursor{Key: Key{"x"}}, 5); err == nil {
			t.Error("a cursor with a mistyped key was accepted")
		}
		if _, _, err := f.jobs.Page(f.ctx, Filter{Statuses: []Status{"done"}}, nil, 5); err == nil {
			t.Error("an unknown status was accepted")
		}
	})
}

// TestPageFollowsTheCollation pages string keys whose order under the column's collation
// (case-insensitive) differs from their byte order: the server merges the statuses, so a
// page boundary never skips or repeats a job.
func TestPageFollowsTheCollation(t *testing.T) {
	t.Parallel()
	f := setup(t, "__greeting", Options{},
		"CREATE TABLE person (name varchar(20) NOT NULL, PRIMARY KEY (name))",
		"CREATE TABLE __greeting (name varchar(20) NOT NULL, PRIMARY KEY (name), FOREIGN KEY (name) REFERENCES person (name))",
		"INSERT INTO person VALUES ('b'), ('A'), ('c'), ('D'), ('e'), ('F')")
	f.refresh(t, RefreshOptions{})
	f.exec(t,
		"UPDATE {jobs} SET `scheduled_time` = '2024-01-01 00:00:00'",
		"UPDATE {jobs} SET `status` = 'error' WHERE `name` IN ('A', 'D', 'e')")
	want, err := f.jobs.List(f.ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if listedIDs(want) != "A,b,c,D,e,F" {
		t.Fatalf("List %s", listedIDs(want))
	}
	for n := 1; n <= 6; n++ {
		if got := pageAll(t, f.jobs, Filter{}, n); listedIDs(got) != listedIDs(want) {
			t.Errorf("pages of %d: %s", n, listedIDs(got))
		}
	}
}

func TestErrorGroups(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 10, Options{})
	f.refresh(t, RefreshOptions{})
	f.exec(t,
		"UPDATE {jobs} SET `status` = 'error', `error_message` = 'ValueError: bad', `completed_time` = '2024-01-01 00:00:00' WHERE `id` <= 5",
		"UPDATE {jobs} SET `completed_time` = '2024-02-01 00:00:00' WHERE `id` = 3",
		"UPDATE {jobs} SET `status` = 'error', `error_message` = '<script>alert(1)</script>' WHERE `id` IN (6, 7)",
		"UPDATE {jobs} SET `error_message` = 'stale message of a pending job' WHERE `id` = 8")
	groups, err := f.jobs.ErrorGroups(f.ctx, Filter{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range groups {
		last := "-"
		if g.LastFailed != nil {
			last = g.LastFailed.Format("2006-01-02")
		}
		got = append(got, fmt.Sprintf("%s:%d:%s", g.Message, g.Count, last))
	}
	if want := "ValueError: bad:5:2024-02-01 <script>alert(1)</script>:2:-"; strings.Join(got, " ") != want {
		t.Fatalf("groups %q\nwant %q", strings.Join(got, " "), want)
	}
	if groups, err = f.jobs.ErrorGroups(f.ctx, Filter{Restrictions: []Restriction{{SQL: "id > 5"}}}, 1); err != nil || len(groups) != 1 || groups[0].Count != 2 {
		t.Fatalf("restricted groups %+v, %v", groups, err)
	}
	if err := f.jobs.Drop(f.ctx); err != nil {
		t.Fatal(err)
	}
	_, err = f.jobs.ErrorGroups(f.ctx, Filter{}, 10)
	wantErrIs(t, err, ErrNoJobsTable)
}
