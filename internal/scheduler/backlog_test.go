package scheduler

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/worker"
)

// A backlog far larger than the dispatch window is computed completely and in priority order
// (every urgent job before any other), and the stream never holds more than the window.
func TestBacklogLargerThanTheWindow(t *testing.T) {
	t.Parallel()
	const keys, urgent, window = 3000, 500, 100
	b := setup(t, 0)
	b.db.Exec(t, "INSERT INTO subject SELECT seq FROM seq_1_to_3000")
	b.refresh(t)
	b.db.Exec(t, "UPDATE `~~analysis` SET priority = 1 WHERE subject_id > 2500")

	b.start(t, func(o *Options) { o.DispatchWindow = window })
	var (
		mu       sync.Mutex
		order    []int
		deepest  atomic.Uint64
		sampling = make(chan struct{})
	)
	go func() { // the stream's depth, all along
		for {
			select {
			case <-sampling:
				return
			default:
			}
			if n, err := b.stream.Messages(context.Background()); err == nil && n > deepest.Load() {
				deepest.Store(n)
			}
			time.Sleep(time.Millisecond) // a sampling rate, not a synchronisation
		}
	}()
	defer close(sampling)
	w, err := worker.New(worker.Options{
		DB: b.pool, NATS: b.nc, Tables: []worker.Table{{Name: b.table}}, Concurrency: 10, MaxCalls: keys,
		Handler: func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			mu.Lock()
			order = append(order, job.Priority)
			mu.Unlock()
			return worker.Result{Rows: []jobsdb.Row{{"result": 1}}}, nil
		},
		Logger: b.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := w.Run(t.Context())
	if err != nil || sum.SuccessCount != keys {
		t.Fatalf("computed %d of %d keys: %v", sum.SuccessCount, keys, err)
	}
	waitfor.True(t, "every target row", func() bool {
		var n int
		return b.db.SQL.QueryRow("SELECT COUNT(*) FROM "+targetName).Scan(&n) == nil && n == keys
	})
	mu.Lock()
	defer mu.Unlock()
	for i, p := range order {
		if (i < urgent) != (p == 1) {
			t.Fatalf("call %d ran a job of priority %d; the %d urgent jobs must come first", i, p, urgent)
		}
	}
	if d := deepest.Load(); d > window {
		t.Errorf("the stream held %d messages, more than the window of %d", d, window)
	}
}
