package jobsdb

import (
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"
)

// setupReserve has jobs 1..6: 1 pending and due; 2 pending, due in an hour; 3 error; 4
// ignore; 5 reserved; 6 success.
func setupReserve(t *testing.T) *fixture {
	t.Helper()
	f := setupSimple(t, 6, Options{Identity: Identity{Host: "worker-1", PID: 4242, Version: "v1.2.3"}})
	f.refresh(t, RefreshOptions{})
	f.exec(t,
		"UPDATE {jobs} SET `scheduled_time` = NOW(3) + INTERVAL 1 HOUR WHERE `id` = 2",
		"UPDATE {jobs} SET `status` = 'error' WHERE `id` = 3",
		"UPDATE {jobs} SET `status` = 'ignore' WHERE `id` = 4",
		"UPDATE {jobs} SET `status` = 'reserved', `lease_token` = 'x' WHERE `id` = 5",
		"UPDATE {jobs} SET `status` = 'success' WHERE `id` = 6",
	)
	return f
}

func TestReserve(t *testing.T) {
	t.Parallel()

	t.Run("only a pending and due job is reserved", func(t *testing.T) {
		t.Parallel()
		f := setupReserve(t)
		leases := f.reserve(t, idRange(1, 6)...)
		if len(leases) != 1 || leases[0].Key[0] != int64(1) {
			t.Fatalf("leases %+v, want only id 1", leases)
		}
		l := leases[0]
		if !validToken(l.Token) || l.Attempts != 1 || l.Priority != PriorityDefault || l.ReservedTime.IsZero() || l.ScheduledTime.IsZero() {
			t.Fatalf("lease %+v", l)
		}
		job := f.get(t, Key{1})
		if job.Status != StatusReserved || job.Attempts != 1 || job.Host != "worker-1" || job.PID != 4242 ||
			job.Version != "v1.2.3" || job.ConnectionID == 0 || !strings.Contains(job.User, "@") ||
			job.ReservedTime == nil || job.CompletedTime != nil || job.LeaseExpires == nil {
			t.Fatalf("reserved job %+v", job)
		}
		if !f.truth(t, Key{1}, "`lease_expires` > NOW(3) AND `lease_token` = '"+l.Token+"'") {
			t.Fatal("lease_expires is not in the future, or the token differs")
		}
		for id := 2; id <= 6; id++ {
			if f.count(t, "{jobs}", "`id` = ? AND `status` = 'reserved' AND `lease_token` != ''", id) > 0 && id != 5 {
				t.Fatalf("job %d was reserved", id)
			}
		}
	})

	t.Run("a reserved job is not reserved again", func(t *testing.T) {
		t.Parallel()
		f := setupReserve(t)
		if leases := f.reserve(t, Key{1}); len(leases) != 1 {
			t.Fatalf("first reservation: %+v", leases)
		}
		if leases := f.reserve(t, Key{1}); len(leases) != 0 {
			t.Fatalf("reserved twice: %+v", leases)
		}
	})

	t.Run("a job becomes reservable when it is due", func(t *testing.T) {
		t.Parallel()
		f := setupReserve(t)
		if leases := f.reserve(t, Key{2}); len(leases) != 0 {
			t.Fatalf("reserved a job not due yet: %+v", leases)
		}
		f.exec(t, "UPDATE {jobs} SET `scheduled_time` = NOW(3) - INTERVAL 1 SECOND WHERE `id` = 2")
		if _, ok, err := f.jobs.ReserveOne(f.ctx, Key{2}); err != nil || !ok {
			t.Fatalf("ReserveOne: %v, %v", ok, err)
		}
	})

	t.Run("a key without a job is skipped", func(t *testing.T) {
		t.Parallel()
		f := setupReserve(t)
		if leases := f.reserve(t, Key{99}); len(leases) != 0 {
			t.Fatalf("leases %+v", leases)
		}
	})

	t.Run("a bad key reserves nothing", func(t *testing.T) {
		t.Parallel()
		f := setupReserve(t)
		_, err := f.jobs.Reserve(f.ctx, []Key{{int64(1)}, {"seven"}})
		wantErrIs(t, err, ErrBadKey)
		_, err = f.jobs.Reserve(f.ctx, []Key{{int64(1), int64(2)}})
		wantErrIs(t, err, ErrBadKey)
		if f.get(t, Key{1}).Status != StatusPending {
			t.Fatal("job 1 was reserved by a batch with a bad key")
		}
	})
}

func TestReserveBatchOrderAndDuplicates(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 2500, Options{})
	f.refresh(t, RefreshOptions{})

	t.Run("leases come back in the caller's order, repeated keys once", func(t *testing.T) {
		leases := f.reserve(t, Key{30}, Key{10}, Key{int(20)}, Key{"10"}, Key{5000})
		var got []string
		for _, l := range leases {
			got = append(got, fmt.Sprint(l.Key[0]))
		}
		if strings.Join(got, ",") != "30,10,20" {
			t.Fatalf("leases for %v, want 30,10,20", got)
		}
		for i, want := range []int{0, 1, 2} {
			if leases[i].Index != want {
				t.Errorf("lease of %v has Index %d, want %d (its key's first place among the keys given)", leases[i].Key, leases[i].Index, want)
			}
		}
	})

	t.Run("a batch larger than one statement is split", func(t *testing.T) {
		leases := f.reserve(t, idRange(100, 2500)...)
		if len(leases) != 2401 {
			t.Fatalf("%d leases, want 2401", len(leases))
		}
		for i, l := range leases {
			if l.Index != i {
				t.Fatalf("lease %d has Index %d across statements", i, l.Index)
			}
		}
		tokens := map[string]int{}
		for _, l := range leases {
			tokens[l.Token]++
		}
		if len(tokens) != 3 {
			t.Fatalf("%d tokens, want one per statement of %d keys (3)", len(tokens), maxKeysPerStatement)
		}
		outcomes := make([]Outcome, len(leases))
		for i, l := range leases {
			outcomes[i] = success(l, Row{"value": i})
			if i%2 == 1 {
				outcomes[i] = Outcome{Lease: l, Kind: OutcomeRetry, RetryAfter: time.Hour + time.Duration(i)*time.Second} // each its own delay, none due before the count below
			}
		}
		for i, ok := range f.record(t, outcomes...) {
			if !ok {
				t.Fatalf("outcome %d not applied", i)
			}
		}
		if n := f.count(t, "{target}", "TRUE"); n != 1201 {
			t.Fatalf("%d target rows, want 1201", n)
		}
		if n := f.count(t, "{jobs}", "`status` = 'pending' AND `scheduled_time` > NOW(3)"); n != 1200 {
			t.Fatalf("%d retried jobs, want 1200", n)
		}
	})
}

func TestAttempts(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 2, Options{})
	f.refresh(t, RefreshOptions{})

	t.Run("a retry keeps the attempt, the next reservation counts another", func(t *testing.T) {
		l := f.reserve(t, Key{1})[0]
		f.record(t, Outcome{Lease: l, Kind: OutcomeRetry})
		if l = f.reserve(t, Key{1})[0]; l.Attempts != 2 {
			t.Fatalf("attempts %d after a retry, want 2", l.Attempts)
		}
	})

	t.Run("a release gives the attempt back", func(t *testing.T) {
		l := f.reserve(t, Key{2})[0]
		f.record(t, Outcome{Lease: l, Kind: OutcomeRelease})
		if job := f.get(t, Key{2}); job.Attempts != 0 {
			t.Fatalf("attempts %d after a release, want 0", job.Attempts)
		}
		if l = f.reserve(t, Key{2})[0]; l.Attempts != 1 {
			t.Fatalf("attempts %d, want 1", l.Attempts)
		}
	})
}

// TestReserveRace: 16 workers race to reserve the same 10,000 keys in batches; every key is
// reserved exactly once (invariant 1).
func TestReserveRace(t *testing.T) {
	t.Parallel()
	const n, workers = 10000, 16
	f := setupSimple(t, n, Options{})
	if res := f.refresh(t, RefreshOptions{}); res.Added != n {
		t.Fatalf("added %d", res.Added)
	}
	keys := idRange(1, n)
	won := make([][]Lease, workers)
	errs := make([]error, workers)
	var start, wg sync.WaitGroup
	start.Add(1)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			order := append([]Key{}, keys...)
			rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
			start.Wait()
			for len(order) > 0 {
				size := min(len(order), 50+rng.Intn(450))
				leases, err := f.jobs.Reserve(f.ctx, order[:size])
				if err != nil {
					errs[w] = err
					return
				}
				won[w] = append(won[w], leases...)
				order = order[size:]
			}
		}()
	}
	start.Done()
	wg.Wait()
	owner := map[int64]string{}
	for w := range workers {
		if errs[w] != nil {
			t.Fatalf("worker %d: %v", w, errs[w])
		}
		for _, l := range won[w] {
			id := l.Key[0].(int64)
			if prev, dup := owner[id]; dup {
				t.Fatalf("key %d reserved twice (tokens %s and %s)", id, prev, l.Token)
			}
			owner[id] = l.Token
		}
	}
	if len(owner) != n {
		t.Fatalf("%d keys reserved, want %d", len(owner), n)
	}
	// The table agrees: every row reserved once, by the token its winner holds.
	rows, err := f.sql.QueryContext(f.ctx, f.expand("SELECT `id`, `lease_token`, `attempts`, `status` FROM {jobs}"))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var id int64
		var token, status string
		var attempts int
		if err := rows.Scan(&id, &token, &attempts, &status); err != nil {
			t.Fatal(err)
		}
		if status != "reserved" || attempts != 1 || owner[id] != token {
			t.Fatalf("row %d: %s, attempts %d, token %s; winner's token %s", id, status, attempts, token, owner[id])
		}
		seen++
	}
	if err := rows.Err(); err != nil || seen != n {
		t.Fatalf("%d rows (%v), want %d", seen, err, n)
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 4, Options{LeaseDuration: time.Hour})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, idRange(1, 4)...)
	f.exec(t, "UPDATE {jobs} SET `lease_expires` = NOW(3) + INTERVAL 1 SECOND")

	t.Run("held leases are renewed", func(t *testing.T) {
		lost, err := f.jobs.Heartbeat(f.ctx, leases)
		if err != nil || len(lost) != 0 {
			t.Fatalf("lost %v, %v", lost, err)
		}
		if n := f.count(t, "{jobs}", "`lease_expires` > NOW(3) + INTERVAL 50 MINUTE"); n != 4 {
			t.Fatalf("%d leases renewed, want 4", n)
		}
	})

	t.Run("a renewal within the same millisecond is not a loss", func(t *testing.T) {
		for range 3 {
			if lost, err := f.jobs.Heartbeat(f.ctx, leases); err != nil || len(lost) != 0 {
				t.Fatalf("lost %v, %v", lost, err)
			}
		}
	})

	t.Run("deleted and taken-over leases are reported lost and not renewed", func(t *testing.T) {
		if _, err := f.jobs.Delete(f.ctx, Filter{Restrictions: []Restriction{{Equal: map[string]any{"id": 1}}}}); err != nil {
			t.Fatal(err)
		}
		f.exec(t, "UPDATE {jobs} SET `lease_expires` = NOW(3) - INTERVAL 1 SECOND WHERE `id` = 2")
		if n, err := f.jobs.RecoverExpired(f.ctx, 0); err != nil || n != 1 {
			t.Fatalf("recovered %d, %v", n, err)
		}
		taken := f.reserve(t, Key{2})[0]
		f.exec(t, "UPDATE {jobs} SET `lease_expires` = NOW(3) + INTERVAL 1 SECOND WHERE `id` = 2")
		for i := range leases {
			leases[i].Index = 10 + i // the caller's numbering comes back with the lost leases
		}
		lost, err := f.jobs.Heartbeat(f.ctx, leases)
		if err != nil {
			t.Fatal(err)
		}
		if len(lost) != 2 || lost[0].Key[0] != int64(1) || lost[1].Key[0] != int64(2) || lost[0].Index != 10 || lost[1].Index != 11 {
			t.Fatalf("lost %+v, want keys 1 and 2 numbered 10 and 11", lost)
		}
		if f.truth(t, Key{2}, "`lease_expires` > NOW(3) + INTERVAL 10 SECOND") {
			t.Fatal("the old holder's heartbeat renewed the new holder's lease")
		}
		if !f.truth(t, Key{2}, "`lease_token` = '"+taken.Token+"'") {
			t.Fatal("the new holder's token changed")
		}
	})

	t.Run("a lease without a token is refused", func(t *testing.T) {
		_, err := f.jobs.Heartbeat(f.ctx, []Lease{{Key: Key{3}}})
		if err == nil {
			t.Fatal("no error")
		}
	})
}
