package worker_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/worker"
)

// lockJobs locks every row of the bundle's jobs table in a transaction of its own, as a
// long-running statement of another client would, and returns the function that releases them.
func (b *bundle) lockJobs() (release func()) {
	b.t.Helper()
	tx, err := b.db.SQL.BeginTx(context.Background(), nil)
	if err != nil {
		b.t.Fatal(err)
	}
	rows, err := tx.Query("SELECT * FROM `~~result` FOR UPDATE")
	if err != nil {
		b.t.Fatal(err)
	}
	rows.Close()
	return func() { tx.Commit() }
}

// recordingStatement returns the connection id of a statement of the worker's, other than a
// lease renewal, that writes the test's jobs table and started less than newerThan ago.
func (b *bundle) recordingStatement(newerThan time.Duration) (id int64, ok bool) {
	b.t.Helper()
	err := b.db.SQL.QueryRow("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND TIME_MS < ?"+
		" AND (INFO LIKE 'DELETE FROM%' OR INFO LIKE 'UPDATE%') AND INFO NOT LIKE '%SET `lease_expires` =%' LIMIT 1",
		b.db.Name, newerThan.Milliseconds()).Scan(&id)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		b.t.Fatal(err)
	}
	return id, err == nil
}

// A statement killed while it records a finished job (KILL QUERY, error 1317) is transient:
// the outcome is recorded again, not turned into an error that discards the job's result.
func TestInterruptedRecordingIsRecordedAgain(t *testing.T) {
	b := setup(t, 1, nil)
	started, proceed := make(chan struct{}), make(chan struct{})
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		close(started)
		<-proceed
		return worker.Result{Rows: []jobsdb.Row{{"value": "computed"}}}, nil
	}, nil)
	done := make(chan worker.Summary, 1)
	go func() { sum, _ := b.run(w); done <- sum }()

	<-started
	release := b.lockJobs()
	defer release()
	close(proceed)
	var thread int64
	waitfor.True(t, "the recording to wait for the row lock", func() bool {
		var ok bool
		thread, ok = b.recordingStatement(time.Hour)
		return ok
	})
	if _, err := b.db.SQL.Exec("KILL QUERY " + strconv.FormatInt(thread, 10)); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// The worker's next attempt, whatever it is, waits for the lock too.
	waitfor.True(t, "the next attempt after the killed statement", func() bool {
		_, ok := b.recordingStatement(time.Since(killed))
		return ok
	})
	release()

	sum := <-done
	if sum.SuccessCount != 1 || len(sum.ErrorList) != 0 {
		t.Errorf("summary %+v, want the job succeeded", sum)
	}
	if n := b.count("SELECT COUNT(*) FROM `~~result`"); n != 0 {
		t.Errorf("%d job rows left (an error row?), want the job completed", n)
	}
	if n := b.count("SELECT COUNT(*) FROM __result WHERE value = 'computed'"); n != 1 {
		t.Errorf("%d target rows, want the job's result", n)
	}
}

// A worker that cannot renew a lease (MySQL unreachable, or a statement stuck behind a lock)
// cancels the job before the lease can have expired as MySQL sees it: by then the scheduler
// may give the key to another worker, and two computations must never overlap.
func TestUnrenewableLeaseCancelsTheJobBeforeItExpires(t *testing.T) {
	b := setup(t, 1, nil)
	started := make(chan struct{})
	var calls atomic.Int32
	var beforeExpiry atomic.Value
	locked := make(chan func(), 1)
	w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		if calls.Add(1) > 1 {
			return worker.Result{}, nil // released and taken again
		}
		close(started)
		<-ctx.Done()
		// Is the lease MySQL holds still unexpired? (A consistent read: the lock does not block it.)
		var valid bool
		err := b.db.SQL.QueryRow("SELECT NOW(3) < lease_expires FROM `~~result`").Scan(&valid)
		beforeExpiry.Store(err == nil && valid)
		(<-locked)()
		return worker.Result{}, ctx.Err()
	}, nil)
	done := make(chan worker.Summary, 1)
	go func() { sum, _ := b.run(w); done <- sum }()

	<-started
	locked <- b.lockJobs() // every heartbeat now waits for the lock and times out
	sum := <-done
	if v, _ := beforeExpiry.Load().(bool); !v {
		t.Error("the job was cancelled after its lease could have expired, or never")
	}
	if sum.SuccessCount != 1 || len(sum.ErrorList) != 0 || calls.Load() != 2 {
		t.Errorf("summary %+v after %d calls, want the job released, then run again and completed", sum, calls.Load())
	}
}

// A supervisor that stops a service signals every process of it at once (systemd, Kubernetes,
// kill -TERM -PGID): a handler killed by that signal while its worker stops is released, as
// for a signal to the worker alone, not recorded as failed.
func TestHandlerKilledWithTheWorkersStopSignalIsReleased(t *testing.T) {
	b := setup(t, 1, nil)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	script := filepath.Join(dir, "handler.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho $$ > "+pidFile+".tmp && mv "+pidFile+".tmp "+pidFile+"\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b.stopWithTheHandlersGroup(worker.Exec(worker.ExecOptions{Command: script}), func() int {
		var pid int
		waitfor.True(t, "the handler to start", func() bool {
			data, err := os.ReadFile(pidFile)
			pid, _ = strconv.Atoi(strings.TrimSpace(string(data)))
			return err == nil && pid > 0
		})
		return pid
	})
}

// A handler that exits while something it started in the background still holds its stdout
// (sleep 600 & echo …) finishes its job: the worker stops waiting for the output shortly after
// the handler exits and ends the process group.
func TestBackgroundChildDoesNotHoldTheJob(t *testing.T) {
	b := setup(t, 1, nil)
	pidFile := filepath.Join(t.TempDir(), "pid")
	w := b.worker(worker.Exec(worker.ExecOptions{
		Command: `sleep 600 & echo $! > ` + pidFile + `; echo '{"value": "done"}'`,
	}), nil)
	sum, err := b.run(w)
	if err != nil || sum.SuccessCount != 1 {
		t.Fatalf("summary %+v, %v", sum, err)
	}
	if n := b.count("SELECT COUNT(*) FROM __result WHERE value = 'done'"); n != 1 {
		t.Errorf("the handler's row was not inserted")
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	waitfor.True(t, "the background child to be killed with its handler's process group", func() bool { return !alive(pid) })
}

// A handler that returns two rows with the same primary key fails its job with a message
// saying so, instead of losing one of them silently.
func TestTwoRowsWithOnePrimaryKeyFailTheJob(t *testing.T) {
	b := setup(t, 1, nil)
	w := b.worker(worker.Exec(worker.ExecOptions{Command: `echo '[{"value": "a"}, {"value": "b"}]'`}),
		func(o *worker.Options) { o.SuppressErrors = true })
	sum, err := b.run(w)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.ErrorList) != 1 || !strings.Contains(sum.ErrorList[0].Error, "same primary key") {
		t.Fatalf("errors %+v, want the job failed for two rows with one primary key", sum.ErrorList)
	}
	if n := b.count("SELECT COUNT(*) FROM __result"); n != 0 {
		t.Errorf("%d target rows inserted, want none", n)
	}
}
