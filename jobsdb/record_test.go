package jobsdb

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestRecordSuccess(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 3, Options{})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, idRange(1, 3)...)

	applied := f.record(t,
		success(leases[0], Row{"value": 10, "note": "from a map"}),
		success(leases[1], Row{"id": 2, "value": 20}),
		success(leases[2]),
	)
	if !applied[0] || !applied[1] || !applied[2] {
		t.Fatalf("applied %v", applied)
	}
	t.Run("the jobs are deleted", func(t *testing.T) {
		if n := f.count(t, "{jobs}", "TRUE"); n != 0 {
			t.Fatalf("%d jobs left", n)
		}
	})
	t.Run("the rows are in the target, key columns filled from the job", func(t *testing.T) {
		if n := f.count(t, "{target}", "(`id` = 1 AND `value` = 10 AND `note` = 'from a map') OR (`id` = 2 AND `value` = 20)"); n != 2 {
			t.Fatalf("%d target rows match, want 2", n)
		}
		if n := f.count(t, "{target}", "`id` = 3"); n != 0 {
			t.Fatal("a success without rows inserted a row")
		}
	})
	t.Run("a recorded lease is spent", func(t *testing.T) {
		if applied := f.record(t, success(leases[0])); applied[0] {
			t.Fatal("a completion was recorded twice")
		}
	})
}

func TestRecordSuccessKeepCompleted(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 2, Options{KeepCompleted: true})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, ids(1, 2)...)
	f.record(t,
		Outcome{Lease: leases[0], Kind: OutcomeSuccess, Duration: 1500 * time.Millisecond, Rows: []Row{{"value": 1}}},
		Outcome{Lease: leases[1], Kind: OutcomeSuccess, Duration: 250 * time.Millisecond},
	)
	for i, want := range []float64{1.5, 0.25} {
		job := f.get(t, leases[i].Key)
		if job.Status != StatusSuccess || job.CompletedTime == nil || job.Duration == nil || *job.Duration != want ||
			job.LeaseExpires != nil || job.Attempts != 1 {
			t.Fatalf("job %v: %+v, want success with duration %v", job.Key, job, want)
		}
		if !f.truth(t, job.Key, "`lease_token` = ''") {
			t.Fatal("lease token kept")
		}
	}
	if n := f.count(t, "{target}", "`id` = 1"); n != 1 {
		t.Fatal("target row missing")
	}
}

func TestRecordError(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 4, Options{})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, idRange(1, 4)...)
	long := strings.Repeat("x", ErrorMessageLength+100)
	wide := strings.Repeat("é", ErrorMessageLength+1) // 2 bytes each: truncated by characters
	stack := strings.Repeat("Traceback line with some text\n", 3000)
	applied := f.record(t,
		Outcome{Lease: leases[0], Kind: OutcomeError, Message: "ValueError: bad input", Stack: "short stack", Duration: time.Second},
		Outcome{Lease: leases[1], Kind: OutcomeError, Message: long, Stack: stack},
		Outcome{Lease: leases[2], Kind: OutcomeError, Message: wide},
		Outcome{Lease: leases[3], Kind: OutcomeError, Message: strings.Repeat("y", 1023)},
	)
	for i, ok := range applied {
		if !ok {
			t.Fatalf("outcome %d not applied", i)
		}
	}

	t.Run("status, message, stack, duration and completion time are recorded", func(t *testing.T) {
		job := f.get(t, Key{1})
		if job.Status != StatusError || job.ErrorMessage != "ValueError: bad input" || job.ErrorStack != "short stack" ||
			job.CompletedTime == nil || job.Duration == nil || *job.Duration != 1 || job.LeaseExpires != nil {
			t.Fatalf("job %+v", job)
		}
	})
	t.Run("a long message is cut to 2047 characters ending in ...truncated", func(t *testing.T) {
		job := f.get(t, Key{2})
		if len(job.ErrorMessage) != ErrorMessageLength || !strings.HasSuffix(job.ErrorMessage, "...truncated") ||
			job.ErrorMessage[:100] != long[:100] {
			t.Fatalf("message of %d characters: ...%s", len(job.ErrorMessage), job.ErrorMessage[len(job.ErrorMessage)-20:])
		}
		if job.ErrorStack != stack {
			t.Fatalf("stack of %d bytes came back as %d bytes", len(stack), len(job.ErrorStack))
		}
	})
	t.Run("truncation counts characters, not bytes", func(t *testing.T) {
		job := f.get(t, Key{3})
		if utf8.RuneCountInString(job.ErrorMessage) != ErrorMessageLength || !strings.HasSuffix(job.ErrorMessage, "é...truncated") {
			t.Fatalf("message of %d characters", utf8.RuneCountInString(job.ErrorMessage))
		}
		if f.count(t, "{jobs}", "`id` = 3 AND CHAR_LENGTH(`error_message`) = 2047") != 1 {
			t.Fatal("stored message is not 2047 characters")
		}
	})
	t.Run("a message of 1023 characters is kept", func(t *testing.T) {
		if job := f.get(t, Key{4}); job.ErrorMessage != strings.Repeat("y", 1023) || job.ErrorStack != "" {
			t.Fatalf("message of %d characters, stack %q", len(job.ErrorMessage), job.ErrorStack)
		}
	})
	t.Run("the stack is stored in DataJoint's blob encoding", func(t *testing.T) {
		var short, compressed []byte
		if err := f.sql.QueryRowContext(f.ctx, f.expand("SELECT `error_stack` FROM {jobs} WHERE `id` = 1")).Scan(&short); err != nil {
			t.Fatal(err)
		}
		if err := f.sql.QueryRowContext(f.ctx, f.expand("SELECT `error_stack` FROM {jobs} WHERE `id` = 2")).Scan(&compressed); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(short, EncodeStack("short stack")) || !bytes.HasPrefix(compressed, []byte("ZL123\x00")) {
			t.Fatalf("stacks stored as %q and %q…", short, compressed[:10])
		}
	})
	t.Run("an error job is not reserved again", func(t *testing.T) {
		if leases := f.reserve(t, idRange(1, 4)...); len(leases) != 0 {
			t.Fatalf("reserved %d error jobs", len(leases))
		}
	})
}

func TestRecordRetry(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 3, Options{})
	f.refresh(t, RefreshOptions{})
	f.exec(t, "UPDATE {jobs} SET `dispatched_time` = NOW(3)")
	leases := f.reserve(t, idRange(1, 3)...)
	f.record(t,
		Outcome{Lease: leases[0], Kind: OutcomeRetry, RetryAfter: time.Hour, Message: "TimeoutError"},
		Outcome{Lease: leases[1], Kind: OutcomeRetry, RetryAfter: 10 * time.Hour},
		Outcome{Lease: leases[2], Kind: OutcomeRetry},
	)
	t.Run("each job is pending again, due after its own delay", func(t *testing.T) {
		for _, c := range []struct {
			id   int
			cond string
		}{
			{1, "`scheduled_time` BETWEEN NOW(3) + INTERVAL 50 MINUTE AND NOW(3) + INTERVAL 61 MINUTE"},
			{2, "`scheduled_time` BETWEEN NOW(3) + INTERVAL 9 HOUR AND NOW(3) + INTERVAL 601 MINUTE"},
			{3, "`scheduled_time` <= NOW(3)"},
		} {
			if !f.truth(t, Key{c.id}, "`status` = 'pending' AND `lease_token` = '' AND `lease_expires` IS NULL AND "+
				"`dispatched_time` IS NULL AND `attempts` = 1 AND "+c.cond) {
				t.Fatalf("job %d: %+v", c.id, f.get(t, Key{c.id}))
			}
		}
	})
	t.Run("a job retried later is not due", func(t *testing.T) {
		if got := f.reserve(t, idRange(1, 3)...); len(got) != 1 || got[0].Key[0] != int64(3) || got[0].Attempts != 2 {
			t.Fatalf("reserved %+v, want only job 3 with 2 attempts", got)
		}
	})
}

func TestRecordRelease(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 1, Options{})
	f.refresh(t, RefreshOptions{})
	f.exec(t, "UPDATE {jobs} SET `dispatched_time` = NOW(3)")
	l := f.reserve(t, Key{1})[0]
	f.record(t, Outcome{Lease: l, Kind: OutcomeRelease})
	if !f.truth(t, Key{1}, "`status` = 'pending' AND `attempts` = 0 AND `lease_token` = '' AND `lease_expires` IS NULL "+
		"AND `dispatched_time` IS NULL AND `scheduled_time` <= NOW(3) AND `error_message` = ''") {
		t.Fatalf("released job %+v", f.get(t, Key{1}))
	}
}

func TestRecordMixedBatchWithLostLease(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 5, Options{})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, idRange(1, 5)...)
	// Job 5's reservation is deleted under its worker (jobsctl delete).
	f.exec(t, "DELETE FROM {jobs} WHERE `id` = 5")
	applied := f.record(t,
		success(leases[0], Row{"value": 1}),
		Outcome{Lease: leases[1], Kind: OutcomeError, Message: "boom"},
		Outcome{Lease: leases[2], Kind: OutcomeRetry, RetryAfter: time.Minute},
		Outcome{Lease: leases[3], Kind: OutcomeRelease},
		success(leases[4], Row{"value": 5}),
	)
	if want := []bool{true, true, true, true, false}; !equalBools(applied, want) {
		t.Fatalf("applied %v, want %v", applied, want)
	}
	if f.count(t, "{target}", "`id` = 5") != 0 {
		t.Fatal("the row of a lost lease was inserted")
	}
	if f.count(t, "{target}", "`id` = 1") != 1 {
		t.Fatal("the row of a held lease is missing")
	}
	if got := f.count(t, "{jobs}", "(`id` = 2 AND `status` = 'error') OR (`id` IN (3, 4) AND `status` = 'pending')"); got != 3 {
		t.Fatalf("%d jobs in their new state, want 3", got)
	}
}

// TestLateCompletionAfterOrphanRecovery: a worker whose lease expired and was taken over
// completes late; nothing changes, and the new holder's completion works (invariant 1).
func TestLateCompletionAfterOrphanRecovery(t *testing.T) {
	t.Parallel()
	// setup returns job 1's old lease, expired and recovered, and the current one, reserved since.
	setup := func(t *testing.T) (f *fixture, old, current Lease) {
		t.Helper()
		f = setupSimple(t, 1, Options{})
		f.refresh(t, RefreshOptions{})
		old = f.reserve(t, Key{1})[0]
		f.exec(t, "UPDATE {jobs} SET `lease_expires` = NOW(3) - INTERVAL 1 SECOND")
		if n, err := f.jobs.RecoverExpired(f.ctx, 0); err != nil || n != 1 {
			t.Fatalf("recovered %d, %v", n, err)
		}
		current = f.reserve(t, Key{1})[0]
		if current.Token == old.Token || current.Attempts != 2 {
			t.Fatalf("new lease %+v", current)
		}
		return f, old, current
	}

	for _, kind := range []OutcomeKind{OutcomeSuccess, OutcomeError, OutcomeRetry, OutcomeRelease} {
		t.Run("a late "+kind.String()+" changes nothing", func(t *testing.T) {
			t.Parallel()
			f, old, current := setup(t)
			o := Outcome{Lease: old, Kind: kind, Message: "late"}
			if kind == OutcomeSuccess {
				o.Rows = []Row{{"value": 666}}
			}
			if applied := f.record(t, o); applied[0] {
				t.Fatal("applied")
			}
			err := f.jobs.RecordOne(f.ctx, o)
			wantErrIs(t, err, ErrLeaseLost)
			if !f.truth(t, Key{1}, "`status` = 'reserved' AND `lease_token` = '"+current.Token+"' AND `error_message` = ''") {
				t.Fatalf("job changed: %+v", f.get(t, Key{1}))
			}
			if f.count(t, "{target}", "TRUE") != 0 {
				t.Fatal("the late completion inserted its row")
			}
		})
	}

	t.Run("the new holder's completion works", func(t *testing.T) {
		t.Parallel()
		f, old, current := setup(t)
		if applied := f.record(t, success(old, Row{"value": 666})); applied[0] {
			t.Fatal("the late completion was applied")
		}
		if err := f.jobs.RecordOne(f.ctx, success(current, Row{"value": 7})); err != nil {
			t.Fatal(err)
		}
		if f.count(t, "{jobs}", "TRUE") != 0 || f.count(t, "{target}", "`value` = 7") != 1 {
			t.Fatal("completion not recorded")
		}
	})
}

func TestRecordRejectsBadRows(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 2, Options{})
	f.refresh(t, RefreshOptions{})
	leases := f.reserve(t, ids(1, 2)...)
	for name, rows := range map[string][]Row{
		"an unknown column":                {{"value": 1, "nope": 2}},
		"an injected column name":          {{"value` = 1; DROP TABLE item; --": 1}},
		"a key column of another key":      {{"id": 2}},
		"a key column of the wrong type":   {{"id": "one"}},
		"a row with a null key":            {{"id": nil}},
		"a good row next to a bad one":     {{"value": 1}, {"missing": 1}},
		"a key column given as bad string": {{"id": "1 OR 1=1"}},
	} {
		t.Run(name+" writes nothing", func(t *testing.T) {
			_, err := f.jobs.Record(f.ctx, []Outcome{success(leases[1]), success(leases[0], rows...)})
			wantErrIs(t, err, ErrBadKey)
			if f.count(t, "{jobs}", "`status` = 'reserved'") != 2 || f.count(t, "{target}", "TRUE") != 0 {
				t.Fatal("something was written")
			}
			if err := f.target.CheckRows(leases[0].Key, rows); err == nil {
				t.Fatal("CheckRows accepted the rows")
			}
		})
	}
	t.Run("an error outcome with rows is refused", func(t *testing.T) {
		_, err := f.jobs.Record(f.ctx, []Outcome{{Lease: leases[0], Kind: OutcomeError, Rows: []Row{{"value": 1}}}})
		if err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("two outcomes for one key are refused", func(t *testing.T) {
		_, err := f.jobs.Record(f.ctx, []Outcome{success(leases[0]), success(leases[0])})
		if err == nil {
			t.Fatal("no error")
		}
	})
}

func TestRecordTx(t *testing.T) {
	t.Parallel()
	// setup returns the leases of jobs 1..3; job 3 was deleted since.
	setup := func(t *testing.T) (*fixture, []Lease) {
		t.Helper()
		f := setupSimple(t, 3, Options{})
		f.refresh(t, RefreshOptions{})
		leases := f.reserve(t, idRange(1, 3)...)
		f.exec(t, "DELETE FROM {jobs} WHERE `id` = 3")
		return f, leases
	}

	t.Run("LockLeases tells which leases are held before anything is written", func(t *testing.T) {
		t.Parallel()
		f, leases := setup(t)
		tx, err := f.sql.BeginTx(f.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		held, err := f.jobs.LockLeases(f.ctx, tx, leases)
		if err != nil || !equalBools(held, []bool{true, true, false}) {
			t.Fatalf("held %v, %v", held, err)
		}
	})

	t.Run("a rolled back transaction records nothing", func(t *testing.T) {
		t.Parallel()
		f, leases := setup(t)
		tx, err := f.sql.BeginTx(f.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.jobs.RecordTx(f.ctx, tx, []Outcome{success(leases[0], Row{"value": 1})}); err != nil {
			t.Fatal(err)
		}
		tx.Rollback()
		if f.count(t, "{jobs}", "`id` = 1 AND `status` = 'reserved'") != 1 || f.count(t, "{target}", "TRUE") != 0 {
			t.Fatal("the rollback did not undo the completion")
		}
	})

	t.Run("the caller's writes commit with the completion", func(t *testing.T) {
		t.Parallel()
		f, leases := setup(t)
		tx, err := f.sql.BeginTx(f.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(f.ctx, f.expand("INSERT INTO {target} (`id`, `value`) VALUES (2, 42)")); err != nil {
			t.Fatal(err)
		}
		applied, err := f.jobs.RecordTx(f.ctx, tx, []Outcome{success(leases[1]), success(leases[0], Row{"value": 1})})
		if err != nil || !equalBools(applied, []bool{true, true}) {
			t.Fatalf("applied %v, %v", applied, err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if f.count(t, "{jobs}", "`id` IN (1, 2)") != 0 || f.count(t, "{target}", "`id` IN (1, 2)") != 2 {
			t.Fatal("not committed")
		}
	})
}

func TestRecordKeepsExistingTargetRow(t *testing.T) {
	t.Parallel()
	f := setupSimple(t, 1, Options{})
	f.refresh(t, RefreshOptions{})
	l := f.reserve(t, Key{1})[0]
	f.exec(t, "INSERT INTO {target} (`id`, `value`) VALUES (1, 99)")
	if applied := f.record(t, success(l, Row{"value": 1})); !applied[0] {
		t.Fatal("not applied")
	}
	if f.count(t, "{target}", "`id` = 1 AND `value` = 99") != 1 || f.count(t, "{jobs}", "TRUE") != 0 {
		t.Fatal("the existing row was changed, or the job kept")
	}
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
