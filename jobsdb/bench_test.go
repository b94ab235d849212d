package jobsdb

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchWorkers is how many goroutines reserve and complete at once: about the pool size a
// worker process would use for its jobs path (Open keeps MaxOpenConnsDefault connections).
const benchWorkers = 4

// BenchmarkReserveComplete reserves and completes jobs (a no-op computation: one target row
// each, inserted with the completion), one at a time and in batches: the figures of the
// README's Benchmarks table. One op is one job; run with -benchtime=Nx to fix the number of
// jobs, which the setup creates beforehand (untimed).
func BenchmarkReserveComplete(b *testing.B) {
	for _, bc := range []struct {
		name           string
		batch, workers int
	}{
		{"per_job/workers=1", 1, 1},
		{fmt.Sprintf("per_job/workers=%d", benchWorkers), 1, benchWorkers},
		{fmt.Sprintf("batch=100/workers=%d", benchWorkers), 100, benchWorkers},
		{fmt.Sprintf("batch=1000/workers=%d", benchWorkers), 1000, benchWorkers},
	} {
		batch := bc.batch
		b.Run(bc.name, func(b *testing.B) {
			f := setupSimple(b, b.N, Options{})
			f.refresh(b, RefreshOptions{})
			keys := idRange(1, b.N)
			var next atomic.Int64
			var done atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, bc.workers)
			b.ResetTimer()
			start := time.Now()
			for range bc.workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						lo := int(next.Add(int64(batch))) - batch
						if lo >= len(keys) {
							return
						}
						leases, err := f.jobs.Reserve(f.ctx, keys[lo:min(lo+batch, len(keys))])
						if err != nil {
							errs <- err
							return
						}
						outcomes := make([]Outcome, len(leases))
						for i, l := range leases {
							outcomes[i] = Outcome{Lease: l, Kind: OutcomeSuccess, Duration: time.Millisecond, Rows: []Row{{"value": 1}}}
						}
						if _, err := f.jobs.Record(f.ctx, outcomes); err != nil {
							errs <- err
							return
						}
						done.Add(int64(len(leases)))
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			if done.Load() != int64(b.N) {
				b.Fatalf("%d jobs done, want %d", done.Load(), b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
		})
	}
}

// BenchmarkRefresh1M adds 1,000,000 keys (1,000 subjects × 1,000 sessions) to an empty jobs
// table in one refresh, then rescans them finding nothing. One op is one refresh; it runs only
// when -bench selects it (the setup alone inserts a million parent rows).
func BenchmarkRefresh1M(b *testing.B) {
	const side = 1000
	f := setup(b, "__analysis", Options{},
		"CREATE TABLE subject (subject_id int NOT NULL, PRIMARY KEY (subject_id))",
		"CREATE TABLE session (subject_id int NOT NULL, session_id int NOT NULL, PRIMARY KEY (subject_id, session_id), "+
			"FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
		"CREATE TABLE __analysis (subject_id int NOT NULL, session_id int NOT NULL, result float NOT NULL DEFAULT 0, "+
			"PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id, session_id) REFERENCES session (subject_id, session_id))",
		fmt.Sprintf("INSERT INTO subject SELECT seq FROM seq_1_to_%d", side),
		fmt.Sprintf("INSERT INTO session SELECT s.seq, n.seq FROM seq_1_to_%d s JOIN seq_1_to_%d n", side, side))
	b.Run("add", func(b *testing.B) {
		b.StopTimer()
		var elapsed time.Duration
		for range b.N {
			if err := f.jobs.Drop(f.ctx); err != nil {
				b.Fatal(err)
			}
			if err := f.jobs.Declare(f.ctx); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			b.StartTimer()
			res, err := f.jobs.Refresh(f.ctx, RefreshOptions{Priority: PriorityDefault})
			b.StopTimer()
			elapsed += time.Since(start)
			if err != nil || res.Added != side*side {
				b.Fatalf("refresh %+v, %v", res, err)
			}
		}
		b.ReportMetric(float64(b.N*side*side)/elapsed.Seconds(), "keys/s")
	})
	b.Run("rescan", func(b *testing.B) {
		for range b.N {
			res, err := f.jobs.Refresh(f.ctx, RefreshOptions{Priority: PriorityDefault, StaleTimeout: time.Hour})
			if err != nil || res.Added != 0 {
				b.Fatalf("refresh %+v, %v", res, err)
			}
		}
		b.ReportMetric(float64(b.N*side*side)/b.Elapsed().Seconds(), "keys/s")
	})
}
