package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/notify"
)

// hourly is a scheduler whose periodic refresh comes once, when it takes the lead: any later
// key reaches the jobs table only through events.
func hourly(o *Options) { o.Refresh.Interval = time.Hour }

// eventLog records the refreshes for events of a scheduler.
type eventLog struct {
	mu   sync.Mutex
	runs []EventRefresh
}

func (l *eventLog) record(ev EventRefresh) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.runs = append(l.runs, ev)
}

func (l *eventLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.runs)
}

// jobIDs lists the subject ids that have a job.
func (b *bundle) jobIDs(t *testing.T) []int {
	t.Helper()
	jobs, err := b.jobs.List(t.Context(), jobsdb.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for _, j := range jobs {
		ids = append(ids, int(j.Key[0].(int64)))
	}
	slices.Sort(ids)
	return ids
}

// checksum fingerprints the jobs table and the parent table.
func (b *bundle) checksum(t *testing.T) string {
	t.Helper()
	var out []string
	for _, table := range []string{"`" + jobsName + "`", "subject", "`" + targetName + "`"} {
		var name string
		var sum *int64
		if err := b.db.SQL.QueryRow("CHECKSUM TABLE "+table).Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		if sum == nil {
			out = append(out, table+" missing")
			continue
		}
		out = append(out, fmt.Sprintf("%s %d", table, *sum))
	}
	return strings.Join(out, ", ")
}

func TestEvents(t *testing.T) {
	t.Parallel()

	t.Run("a notify adds its keys' jobs and publishes them at once", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 3)
		var events eventLog
		b.start(t, func(o *Options) { hourly(o); o.OnEventRefresh = events.record })
		rcv := b.receiver(t)
		if got := rcv.fetch(3, 20*time.Second); !slices.Equal(got, seq(1, 3)) {
			t.Fatalf("fetched %v, want 1..3 from the refresh on taking the lead", got)
		}
		waitfor.Within(t, 20*time.Second, "the events subscription", func() bool {
			return len(b.logs.matching(`msg="following events"`)) > 0
		})

		b.addSubjects(t, 4, 6)
		start := time.Now()
		// A whole key, a key given twice, and a key of a subject that is not in the key
		// source: only 4 and 5 become jobs.
		if err := notify.Keys(t.Context(), b.nc, "", b.table,
			map[string]any{"subject_id": 4}, map[string]any{"subject_id": 5}, map[string]any{"subject_id": 4},
			map[string]any{"subject_id": 99}); err != nil {
			t.Fatal(err)
		}
		if got := rcv.fetch(2, 10*time.Second); !slices.Equal(got, []int{4, 5}) {
			t.Fatalf("after the notify fetched %v, want 4 and 5", got)
		}
		t.Logf("notify → message fetched: %v", time.Since(start))
		if ids := b.jobIDs(t); !slices.Equal(ids, seq(1, 5)) {
			t.Errorf("jobs %v, want 1..5: subject 6 was not notified", ids)
		}
		// A string is read as the column's text, as on jobsctl's command line.
		if err := notify.Keys(t.Context(), b.nc, "", b.table, map[string]any{"subject_id": "6"}); err != nil {
			t.Fatal(err)
		}
		if got := rcv.fetch(1, 10*time.Second); !slices.Equal(got, []int{6}) {
			t.Fatalf("after the notify of \"6\" fetched %v, want 6", got)
		}
		if lines := b.logs.matching(`msg="refreshed for events"`, "added=2"); len(lines) != 1 {
			t.Errorf("the refresh for the first notify logged as %q, want one line with added=2", lines)
		}
	})

	t.Run("an insert into the parent adds the keys it renames along the foreign key", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 1)
		b.start(t, hourly)
		waitfor.Within(t, 20*time.Second, "the first refresh and the subscriptions", func() bool {
			return len(b.jobIDs(t)) == 1 && len(b.logs.matching(`msg="following events"`, ".subject.inserted")) > 0
		})
		b.addSubjects(t, 2, 3)
		if err := notify.Inserted(t.Context(), b.nc, "", b.db.Name+".subject",
			map[string]any{"subject_id": 2}, map[string]any{"subject_id": 3}); err != nil {
			t.Fatal(err)
		}
		waitfor.Within(t, 10*time.Second, "the jobs of the inserted subjects", func() bool {
			return slices.Equal(b.jobIDs(t), seq(1, 3))
		})
	})

	t.Run("an insert into a parent reached through a renamed foreign key", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2)
		b.db.Exec(t,
			"CREATE TABLE paramset (id INT NOT NULL, PRIMARY KEY (id))",
			"CREATE TABLE __fit (subject_id INT NOT NULL, param_id INT NOT NULL, PRIMARY KEY (subject_id, param_id), "+
				"FOREIGN KEY (subject_id) REFERENCES subject (subject_id), FOREIGN KEY (param_id) REFERENCES paramset (id))",
			"INSERT INTO paramset VALUES (1)")
		fit := b.db.Name + ".__fit"
		b.table = fit // the table of the dispatch events
		b.start(t, func(o *Options) { hourly(o); o.Tables = []Table{{Name: fit}} })
		jobs := func() int {
			var n int
			if err := b.db.SQL.QueryRow("SELECT COUNT(*) FROM `~~fit`").Scan(&n); err != nil {
				return -1
			}
			return n
		}
		waitfor.Within(t, 20*time.Second, "the first refresh and the subscriptions", func() bool {
			return jobs() == 2 && len(b.logs.matching(`msg="following events"`, ".paramset.inserted")) > 0
		})
		b.db.Exec(t, "INSERT INTO paramset VALUES (2)")
		if err := notify.Inserted(t.Context(), b.nc, "", b.db.Name+".paramset", map[string]any{"id": 2}); err != nil {
			t.Fatal(err)
		}
		waitfor.Within(t, 10*time.Second, "a job per subject for the new paramset", func() bool { return jobs() == 4 })
	})

	t.Run("a configured key source follows the tables of DependsOn", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 1)
		b.db.Exec(t, "CREATE TABLE good (subject_id INT NOT NULL, PRIMARY KEY (subject_id))", "INSERT INTO good VALUES (1)")
		b.start(t, func(o *Options) {
			hourly(o)
			o.Tables = []Table{{Name: b.table, KeySource: "SELECT subject_id FROM good", DependsOn: []string{b.db.Name + ".good"}}}
		})
		waitfor.Within(t, 20*time.Second, "the first refresh and the subscriptions", func() bool {
			return len(b.jobIDs(t)) == 1 && len(b.logs.matching(`msg="following events"`, ".good.inserted")) > 0
		})
		if lines := b.logs.matching(`msg="following events"`, ".subject.inserted"); len(lines) > 0 {
			t.Errorf("follows the foreign key's parent, which the configured key source does not read: %q", lines)
		}
		b.addSubjects(t, 2, 2)
		b.db.Exec(t, "INSERT INTO good VALUES (2)")
		if err := notify.Inserted(t.Context(), b.nc, "", b.db.Name+".good", map[string]any{"subject_id": 2}); err != nil {
			t.Fatal(err)
		}
		waitfor.Within(t, 10*time.Second, "the job of the key inserted into good", func() bool { return slices.Equal(b.jobIDs(t), seq(1, 2)) })
	})

	t.Run("bad payloads are logged and change no row", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 2)
		var events eventLog
		b.start(t, func(o *Options) { hourly(o); o.OnEventRefresh = events.record })
		waitfor.Within(t, 20*time.Second, "the first jobs published, and the subscriptions", func() bool {
			return b.dispatched(t) == 2 && len(b.logs.matching(`msg="following events"`)) > 0
		})
		b.addSubjects(t, 3, 3) // in the key source: a refresh that went through would add it
		before := b.checksum(t)
		subj, err := notify.Subject("", b.table)
		if err != nil {
			t.Fatal(err)
		}
		parent, err := notify.InsertedSubject("", b.db.Name+".subject")
		if err != nil {
			t.Fatal(err)
		}
		bad := []struct{ subject, payload, says string }{
			{subj, `not json`, "not JSON"},
			{subj, `[{"subject_id": 3}`, "not JSON"},
			{subj, `42`, "want a JSON array of objects"},
			{subj, `[[3]]`, "key 0: want an object"},
			{subj, `[{}]`, "key 0 names no column"},
			{subj, `[{"subject_id": 3, "subject_id": 3}]`, "given twice"},
			{subj, `[{"subject_id": null}]`, "want a number or a string, got null"},
			{subj, `[{"subject_id": {"$gt": 0}}]`, "want a number or a string, got an object"},
			{subj, `[{"session_id": 3}]`, "session_id: not a key column"},
			{subj, `[{"subject_id": 3}, {"result": 1}]`, "key 1: bad key"},
			{subj, `[{"subject_id": 3.5}]`, "subject_id"},
			{subj, `[{"subject_id": 99999999999}]`, "subject_id"},
			{subj, `[{"subject_id": "3 OR 1=1"}]`, "subject_id"},
			{subj, `[{"subject_id": "3; DROP TABLE subject"}]`, "subject_id"},
			{subj, `[{"subject_id) OR (1": 1}]`, "not a key column"},
			{subj, "[{\"`subject_id`\": 3}]", "not a key column"},
			{parent, `[{"subject_id": "x"}]`, "renamed along the foreign key"},
		}
		for _, c := range bad {
			if err := b.nc.Publish(c.subject, []byte(c.payload)); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		waitfor.Within(t, 10*time.Second, "every bad payload logged", func() bool {
			return len(b.logs.matching(`msg="refused an event; no job changed"`)) >= len(bad)
		})
		lines := b.logs.matching(`msg="refused an event; no job changed"`)
		for _, c := range bad {
			if !slices.ContainsFunc(lines, func(l string) bool {
				return strings.Contains(l, c.says) && strings.Contains(l, "subject="+c.subject)
			}) {
				t.Errorf("payload %s: no log line says %q; logged:\n%s", c.payload, c.says, strings.Join(lines, "\n"))
			}
		}
		if n := events.count(); n != 0 {
			t.Errorf("%d refreshes for events ran, want none", n)
		}
		if after := b.checksum(t); after != before {
			t.Errorf("the tables changed: %s, then %s", before, after)
		}
		// A notify that names an unknown table reaches nobody.
		if err := notify.Keys(t.Context(), b.nc, "", b.db.Name+".nosuchtable", map[string]any{"subject_id": 3}); err != nil {
			t.Fatal(err)
		}
		// The leader still takes good notifies.
		if err := notify.Keys(t.Context(), b.nc, "", b.table, map[string]any{"subject_id": 3}); err != nil {
			t.Fatal(err)
		}
		waitfor.Within(t, 10*time.Second, "the job of the good notify", func() bool {
			return slices.Equal(b.jobIDs(t), seq(1, 3))
		})
	})

	t.Run("a storm of notifies is coalesced into a few refreshes", func(t *testing.T) {
		t.Parallel()
		const n = 1000
		b := setup(t, 0)
		var events eventLog
		var statements atomic.Int64
		b.start(t, func(o *Options) {
			hourly(o)
			o.OnEventRefresh = func(ev EventRefresh) {
				events.record(ev)
				statements.Add(int64((ev.Keys + maxKeysPerRefresh - 1) / maxKeysPerRefresh))
			}
		})
		waitfor.Within(t, 20*time.Second, "the subscriptions", func() bool {
			return len(b.logs.matching(`msg="following events"`)) > 0
		})
		b.db.Exec(t, fmt.Sprintf("INSERT INTO subject SELECT seq FROM seq_1_to_%d", n))
		start := time.Now()
		for i := 1; i <= n; i++ {
			if err := notify.Keys(t.Context(), b.nc, "", b.table, map[string]any{"subject_id": i}); err != nil {
				t.Fatal(err)
			}
		}
		sent := time.Since(start)
		waitfor.Within(t, 20*time.Second, "a job per notified key", func() bool { return len(b.jobIDs(t)) == n })
		runs := events.count()
		t.Logf("%d notifies sent in %v (one flush each) became %d refreshes (%d statements)", n, sent, runs, statements.Load())
		// At most one refresh per Coalesce (5 ms) while they arrive, and a last one.
		if limit := int(sent/CoalesceDefault) + 2; runs > limit || runs > n/4 {
			t.Errorf("%d notifies in %v became %d refreshes, want at most %d", n, sent, runs, min(limit, n/4))
		}
	})

	t.Run("a notify sent while no scheduler runs is found by the refresh", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 1)
		if err := notify.Keys(t.Context(), b.nc, "", b.table, map[string]any{"subject_id": 1}); err != nil {
			t.Fatal(err)
		}
		// The scheduler starts later: the notify is lost, the key is not.
		b.start(t, hourly)
		rcv := b.receiver(t)
		if got := rcv.fetch(1, 20*time.Second); !slices.Equal(got, []int{1}) {
			t.Fatalf("fetched %v, want the key of the lost notify", got)
		}
	})

	t.Run("off: no subscription", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 1)
		b.start(t, func(o *Options) { hourly(o); o.Events.Disabled = true })
		waitfor.Within(t, 20*time.Second, "the first refresh", func() bool { return len(b.jobIDs(t)) == 1 })
		if lines := b.logs.matching(`msg="following events"`); len(lines) > 0 {
			t.Errorf("follows events while they are off: %q", lines)
		}
	})
}

// A retry that a worker announces (queue's PublishDue) is published when it becomes due: not
// before, and not at the next poll.
func TestDueAnnounced(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	b.start(t, func(o *Options) { hourly(o); o.PollInterval = time.Minute })
	rcv := b.receiver(t)
	if got := rcv.fetch(2, 20*time.Second); !slices.Equal(got, seq(1, 2)) {
		t.Fatalf("fetched %v, want 1..2", got)
	}
	// Done, as a worker leaves them: no job, no message.
	b.db.Exec(t, "INSERT INTO `"+targetName+"` (subject_id) VALUES (1), (2)", "DELETE FROM `"+jobsName+"`")
	rcv.ack(1)
	rcv.ack(2)
	// The dispatcher sleeps for its poll interval (a minute) now. A job becomes due in 300 ms,
	// as a worker's retry does, and is announced.
	b.addSubjects(t, 3, 3)
	delay := 300 * time.Millisecond
	if _, err := b.jobs.Refresh(t.Context(), jobsdb.RefreshOptions{Priority: jobsdb.PriorityDefault, Delay: delay}); err != nil {
		t.Fatal(err)
	}
	if err := b.stream.PublishDue(delay); err != nil {
		t.Fatal(err)
	}
	got := rcv.fetch(1, 5*time.Second)
	fetched := time.Now()
	if !slices.Equal(got, []int{3}) {
		t.Fatalf("fetched %v, want the announced job 3 before the poll", got)
	}
	// The job is marked dispatched later (MarkDelay): judge by when its message arrived.
	job := b.job(t, 3)
	late := fetched.Sub(job.ScheduledTime)
	t.Logf("fetched %v after its scheduled time", late)
	if late < -2*time.Millisecond { // scheduled_time has milliseconds
		t.Fatalf("job 3 fetched %v before its scheduled time %v: published early", -late, job.ScheduledTime)
	}
	if late > time.Second {
		t.Errorf("fetched %v after its scheduled time, want at it (the poll interval is a minute)", late)
	}
}
