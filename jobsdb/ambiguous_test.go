package jobsdb

import (
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/waitfor"
)

// A reservation whose connection broke after the statement was sent (here: the client gave up
// on a statement stuck behind a row lock, which the server then ran and committed) is settled
// by running it again with the same token and reading back: the caller holds every job the
// first attempt reserved, and knows it, instead of leaving them reserved under a token nobody
// holds until the lease expires.
func TestReserveSettlesAnAmbiguousReservation(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 3, Options{StatementTimeout: 300 * time.Millisecond})
	f.refresh(t, RefreshOptions{})
	lock, err := f.sql.BeginTx(f.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.Exec(f.expand("SELECT * FROM {jobs} WHERE `id` = 2 FOR UPDATE")); err != nil {
		t.Fatal(err)
	}

	type result struct {
		leases []Lease
		err    error
	}
	done := make(chan result, 1)
	go func() {
		leases, err := f.jobs.Reserve(f.ctx, idRange(1, 3))
		done <- result{leases, err}
	}()
	// The first attempt timed out on the client and still waits on the server; a second one
	// waits behind it.
	waitfor.True(t, "two reservation attempts waiting for the lock", func() bool {
		select {
		case r := <-done:
			t.Fatalf("Reserve gave up after its first attempt: %d leases, %v", len(r.leases), r.err)
		default:
		}
		return f.count(t, "information_schema.PROCESSLIST", "DB = ? AND INFO LIKE 'UPDATE%SET `status` = ''reserved''%'", f.db.Name) >= 2
	})
	if err := lock.Commit(); err != nil {
		t.Fatal(err)
	}

	r := <-done
	if r.err != nil {
		t.Fatalf("Reserve: %v", r.err)
	}
	if len(r.leases) != 3 {
		t.Fatalf("Reserve returned %d leases, want all 3 jobs the first attempt reserved", len(r.leases))
	}
	for _, l := range r.leases {
		if !f.truth(t, l.Key, "`status` = 'reserved' AND `attempts` = 1 AND `lease_token` = '"+l.Token+"'") {
			t.Errorf("job %v is not reserved once under the returned token %s", l.Key, l.Token)
		}
	}
}

// An outcome whose commit may have landed (Record failed with ErrAmbiguous) is recorded again
// with MaybeRecorded: a job no longer reserved by anyone counts as recorded by that commit and
// is not written twice; a job still held is written now; a job another lease holds is not.
func TestRecordAfterAnAmbiguousCommit(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 3, Options{})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, idRange(1, 3)...)
	// The first attempt's commit landed for job 1 alone (the others were in another batch).
	f.record(t, success(leases[0], Row{"value": 1}))
	// Job 3's lease expired and was taken over meanwhile.
	f.exec(t, "UPDATE {jobs} SET `lease_token` = 'someoneelse00000000000000000000' WHERE `id` = 3")

	applied := f.record(t,
		Outcome{Lease: leases[0], Kind: OutcomeSuccess, Rows: []Row{{"value": 1}}, MaybeRecorded: true},
		Outcome{Lease: leases[1], Kind: OutcomeError, Message: "boom", MaybeRecorded: true},
		Outcome{Lease: leases[2], Kind: OutcomeSuccess, Rows: []Row{{"value": 3}}, MaybeRecorded: true},
	)
	if want := []bool{true, true, false}; !equalBools(applied, want) {
		t.Fatalf("applied %v, want %v", applied, want)
	}
	if f.count(t, "{jobs}", "`id` = 2 AND `status` = 'error' AND `error_message` = 'boom'") != 1 {
		t.Error("the held job's error was not recorded")
	}
	if f.count(t, "{jobs}", "`id` = 3 AND `status` = 'reserved' AND `lease_token` = 'someoneelse00000000000000000000'") != 1 {
		t.Error("the job another lease holds was changed")
	}
	if f.count(t, "{target}", "`id` = 3") != 0 {
		t.Error("the row of a job another lease holds was inserted")
	}
}
