package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/worker"
)

// BenchmarkWorkerThroughput measures the whole hot path in one process: fetch from JetStream
// (embedded server), reserve a fetch's jobs in one statement, run a no-op Go handler, record
// outcomes in batches and ack. It reports jobs/s over 20,000 jobs per iteration, by the number
// of jobs the worker runs at once (which bounds the fetch and reservation batch).
func BenchmarkWorkerThroughput(b *testing.B) {
	const jobs = 20000
	for _, concurrency := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("concurrency=%d", concurrency), func(b *testing.B) {
			var elapsed time.Duration
			for range b.N {
				b.StopTimer()
				bun := newBundle(b, jobs, nil)
				opts := bun.opts
				opts.Handler = func(context.Context, *worker.Job) (worker.Result, error) { return worker.Result{}, nil }
				opts.Concurrency, opts.MaxCalls = concurrency, jobs // stop at the last job, not after an idle wait
				elapsed += timedRun(b, opts, jobs)
			}
			b.ReportMetric(float64(jobs*b.N)/elapsed.Seconds(), "jobs/s")
		})
	}
}
