package worker_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/notify"
	"github.com/jetjobs/jetjobs/worker"
)

// Once its outcomes commit, a worker announces the keys of its successes on the table's
// inserted subject, and the delay of its retries on the due subject; with NoEvents, nothing.
func TestCompletionsAndRetriesAreAnnounced(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		t.Run("NoEvents="+strconv.FormatBool(quiet), func(t *testing.T) {
			b := setup(t, 6, func(o *worker.Options) { o.MaxAttempts = 1; o.RetryBackoff = time.Hour })
			subj, err := notify.InsertedSubject("wt", b.table)
			if err != nil {
				t.Fatal(err)
			}
			inserted, err := b.nc.SubscribeSync(subj)
			if err != nil {
				t.Fatal(err)
			}
			due, err := b.nc.SubscribeSync("wt." + b.db.Name + ".__result.due")
			if err != nil {
				t.Fatal(err)
			}
			b.nc.Flush()
			// 1..5 succeed; 6 asks for a retry once (MaxAttempts 2), then waits an hour.
			w := b.worker(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
				if subjectID(job) == 6 {
					return worker.Result{}, worker.Retryable(errors.New("later"))
				}
				return worker.Result{}, nil
			}, func(o *worker.Options) { o.MaxAttempts, o.MaxCalls, o.Once, o.NoEvents = 2, 6, false, quiet })
			if _, err := b.run(w); err != nil {
				t.Fatal(err)
			}
			var ids []int
			for {
				m, err := inserted.NextMsg(500 * time.Millisecond)
				if errors.Is(err, nats.ErrTimeout) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				keys, err := notify.Decode(m.Data)
				if err != nil {
					t.Fatalf("inserted payload %s: %v", m.Data, err)
				}
				for _, k := range keys {
					id, _ := strconv.Atoi(k["subject_id"].(interface{ String() string }).String())
					ids = append(ids, id)
				}
			}
			slices.Sort(ids)
			m, derr := due.NextMsg(500 * time.Millisecond)
			if quiet {
				if len(ids) > 0 || derr == nil {
					t.Errorf("with NoEvents, announced inserted keys %v and a due time (%v)", ids, derr)
				}
				return
			}
			if !slices.Equal(ids, []int{1, 2, 3, 4, 5}) {
				t.Errorf("announced inserted keys %v, want the successes 1..5", ids)
			}
			if derr != nil {
				t.Fatalf("no due time announced for the retry: %v", derr)
			}
			us, err := strconv.ParseInt(string(m.Data), 10, 64)
			if err != nil || us < int64(30*time.Minute/time.Microsecond) || us > int64(2*time.Hour/time.Microsecond) {
				t.Errorf("due payload %q, want the retry's delay, about an hour in µs", m.Data)
			}
		})
	}
}
