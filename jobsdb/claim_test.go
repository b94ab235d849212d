package jobsdb

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestClaim(t *testing.T) {
	t.Parallel()

	t.Run("due pending jobs in priority then scheduled order, reserved with one lease", func(t *testing.T) {
		t.Parallel()
		f := setupReserve(t) // 1 due; 2 due in an hour; 3 error; 4 ignore; 5 reserved; 6 success
		f.exec(t, "INSERT INTO item (id) SELECT seq FROM seq_7_to_12")
		f.refresh(t, RefreshOptions{})
		f.exec(t,
			"UPDATE {jobs} SET `priority` = 1, `scheduled_time` = NOW(3) - INTERVAL `id` SECOND WHERE `id` IN (9, 10)",
			"UPDATE {jobs} SET `priority` = 0, `scheduled_time` = NOW(3) + INTERVAL 1 HOUR WHERE `id` = 11",
			"UPDATE {jobs} SET `priority` = 9 WHERE `id` = 12",
		)
		leases, err := f.jobs.Claim(f.ctx, 4, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Priority 1 first (10 is older than 9), then priority 5 by scheduled time; 11 is not due.
		var got []string
		for _, l := range leases {
			got = append(got, fmt.Sprint(l.Key[0]))
			if l.Token != leases[0].Token || !validToken(l.Token) || l.Attempts != 1 || l.ReservedTime.IsZero() || l.Index < 0 {
				t.Errorf("lease %+v", l)
			}
		}
		if len(leases) != 4 || got[0] != "10" || got[1] != "9" || leases[2].Priority != 5 || leases[3].Priority != 5 {
			t.Fatalf("claimed %v (priorities %v), want 10, 9, then two of priority 5", got, leases)
		}
		job := f.get(t, leases[0].Key)
		if job.Status != StatusReserved || job.Host != "worker-1" || job.PID != 4242 || job.ConnectionID == 0 || job.LeaseExpires == nil {
			t.Fatalf("claimed job %+v", job)
		}
		rest, err := f.jobs.Claim(f.ctx, 100, nil)
		if err != nil {
			t.Fatal(err)
		}
		claimed := map[int64]bool{}
		for _, l := range append(leases, rest...) {
			claimed[l.Key[0].(int64)] = true
		}
		for _, id := range []int64{1, 7, 8, 9, 10, 12} {
			if !claimed[id] {
				t.Errorf("due job %d was not claimed", id)
			}
		}
		if len(claimed) != 6 {
			t.Errorf("claimed %v: jobs that are not pending and due were taken", claimed)
		}
		if again, err := f.jobs.Claim(f.ctx, 100, nil); err != nil || len(again) != 0 {
			t.Fatalf("a third claim got %v, %v", again, err)
		}
	})

	t.Run("max priority", func(t *testing.T) {
		t.Parallel()
		f := setupSimple(t, 4, Options{})
		f.refresh(t, RefreshOptions{})
		f.exec(t, "UPDATE {jobs} SET `priority` = `id`")
		limit := 2
		leases, err := f.jobs.Claim(f.ctx, 10, &limit)
		if err != nil || len(leases) != 2 || leases[0].Key[0] != int64(1) || leases[1].Key[0] != int64(2) {
			t.Fatalf("claimed %+v, %v; want jobs 1 and 2", leases, err)
		}
	})

	t.Run("claims at once get disjoint batches without waiting", func(t *testing.T) {
		t.Parallel()
		f := setupSimple(t, 2000, Options{})
		f.refresh(t, RefreshOptions{})
		var mu sync.Mutex
		owner := map[int64]int{}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Go(func() {
				for {
					leases, err := f.jobs.Claim(f.ctx, 37, nil)
					if err != nil {
						errs <- err
						return
					}
					if len(leases) == 0 {
						return
					}
					mu.Lock()
					for _, l := range leases {
						id := l.Key[0].(int64)
						if prev, ok := owner[id]; ok {
							errs <- fmt.Errorf("job %d claimed by %d and %d", id, prev, w)
						}
						owner[id] = w
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if len(owner) != 2000 || f.count(t, "{jobs}", "`status` = 'reserved'") != 2000 {
			t.Fatalf("%d jobs claimed, want 2000", len(owner))
		}
	})

	t.Run("a row locked by another transaction is skipped, not waited for", func(t *testing.T) {
		t.Parallel()
		f := setupSimple(t, 3, Options{StatementTimeout: 5 * time.Second})
		f.refresh(t, RefreshOptions{})
		tx, err := f.sql.BeginTx(f.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(f.ctx, f.expand("SELECT * FROM {jobs} WHERE `id` = 1 FOR UPDATE")); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		leases, err := f.jobs.Claim(f.ctx, 3, nil)
		if err != nil || len(leases) != 2 || leases[0].Key[0] != int64(2) {
			t.Fatalf("claimed %+v, %v; want jobs 2 and 3", leases, err)
		}
		if d := time.Since(began); d > 2*time.Second {
			t.Errorf("the claim waited %v for the locked row", d)
		}
	})

	t.Run("a locked urgent job keeps less urgent ones from being claimed before it", func(t *testing.T) {
		t.Parallel()
		f := setupSimple(t, 3, Options{})
		f.refresh(t, RefreshOptions{})
		f.exec(t, "UPDATE {jobs} SET `priority` = 1 WHERE `id` < 3")
		// A refresh's INSERT … SELECT reads the jobs table with shared locks for a moment:
		// as here, where job 1 is held by another transaction.
		tx, err := f.sql.BeginTx(f.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(f.ctx, f.expand("SELECT * FROM {jobs} WHERE `id` = 1 LOCK IN SHARE MODE")); err != nil {
			t.Fatal(err)
		}
		leases, err := f.jobs.Claim(f.ctx, 3, nil)
		if err != nil || len(leases) != 1 || leases[0].Key[0] != int64(2) {
			t.Fatalf("claimed %+v, %v; want job 2 only: job 3 (priority 5) must wait for job 1 (priority 1)", leases, err)
		}
		tx.Rollback()
		leases, err = f.jobs.Claim(f.ctx, 3, nil)
		if err != nil || len(leases) != 2 || leases[0].Key[0] != int64(1) || leases[1].Key[0] != int64(3) {
			t.Fatalf("claimed %+v, %v; want jobs 1 then 3", leases, err)
		}
	})

	t.Run("a claimed job's guarded reservation refuses a message's reserve", func(t *testing.T) {
		t.Parallel()
		f := setupSimple(t, 1, Options{})
		f.refresh(t, RefreshOptions{})
		leases, err := f.jobs.Claim(f.ctx, 1, nil)
		if err != nil || len(leases) != 1 {
			t.Fatalf("claim: %+v, %v", leases, err)
		}
		if again := f.reserve(t, Key{int64(1)}); len(again) != 0 {
			t.Fatalf("a reservation by key took a claimed job: %+v", again)
		}
		// And the other way round: a job reserved by key is not claimed.
		f.record(t, Outcome{Lease: leases[0], Kind: OutcomeRelease})
		if won := f.reserve(t, Key{int64(1)}); len(won) != 1 {
			t.Fatal("the released job was not reserved")
		}
		if claimed, err := f.jobs.Claim(f.ctx, 1, nil); err != nil || len(claimed) != 0 {
			t.Fatalf("a claim took a reserved job: %+v, %v", claimed, err)
		}
	})

	t.Run("no jobs table", func(t *testing.T) {
		t.Parallel()
		f := setupSimple(t, 1, Options{})
		if _, err := f.jobs.Claim(f.ctx, 1, nil); !errors.Is(err, ErrNoJobsTable) {
			t.Fatalf("claim without a jobs table: %v, want ErrNoJobsTable", err)
		}
	})
}

// The claim's locking read is a range of the (status, priority, scheduled_time) index, in the
// index's order (no filesort), whatever the size of the table: it never reads the pending jobs
// of other priorities, nor the jobs of its priority that are not due yet.
func TestClaimUsesTheIndex(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 0, Options{})
	f.refresh(t, RefreshOptions{})
	f.exec(t, "INSERT INTO {jobs} (`id`, `status`, `priority`, `scheduled_time`) "+
		"SELECT seq, IF(seq % 5 = 0, 'reserved', 'pending'), seq % 3, IF(seq % 2 = 0, NOW(3) - INTERVAL 1 MINUTE, NOW(3) + INTERVAL seq SECOND) FROM seq_1_to_30000",
		"ANALYZE TABLE {jobs}")
	for _, p := range []int{0, 1, 2} {
		rows, err := f.sql.QueryContext(f.ctx, "EXPLAIN "+f.jobs.stmt.claim, p, 100)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		var plans []map[string]string
		for rows.Next() {
			vals := make([]*string, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			plan := map[string]string{}
			for i, c := range cols {
				plan[c] = deref(vals[i])
			}
			plans = append(plans, plan)
		}
		rows.Close()
		if len(plans) != 1 {
			t.Fatalf("plan of %d rows: %v", len(plans), plans)
		}
		plan := plans[0]
		if plan["key"] != "status" || plan["type"] != "range" || strings.Contains(plan["Extra"], "filesort") {
			t.Errorf("priority %d: plan %v, want a range of the status index without a filesort\n%s", p, plan, f.jobs.stmt.claim)
		}
	}

	// And it reads only what it takes: a claim of 10 jobs reads about 10 index entries.
	conn, err := f.sql.Conn(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(f.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(f.ctx, "FLUSH STATUS"); err != nil {
		t.Fatal(err)
	}
	keys, err := f.jobs.lockDue(f.ctx, tx, 10, nil)
	if err != nil || len(keys) != 10 {
		t.Fatalf("locked %d keys, %v", len(keys), err)
	}
	var name string
	var read int
	if err := tx.QueryRowContext(f.ctx, "SHOW SESSION STATUS LIKE 'Handler_read_next'").Scan(&name, &read); err != nil {
		t.Fatal(err)
	}
	if read > 100 {
		t.Errorf("locking 10 due jobs read %d index entries: the claim scans instead of seeking", read)
	}
	ids := make([]int, len(keys))
	for i, k := range keys {
		ids[i] = int(k[0].(int64))
	}
	if !sort.IntsAreSorted(ids) {
		t.Errorf("locked %v, want the oldest due jobs of priority 0 in key order", ids)
	}
}
