package worker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/djtest"
	"github.com/jetjobs/jetjobs/worker"
)

// BenchmarkHandlers measures no-op handlers through the whole worker path (fetch, reserve,
// run, record, ack) over JETJOBS_BENCH_KEYS jobs (default 2,000): per-process --exec (a
// shell script per job), and persistent handlers — the shell example of
// docs/handler-protocol.md and jetjobs.serve(lambda job: None) — started before the timing,
// as the worker program starts them.
// It reports jobs/s.
func BenchmarkHandlers(b *testing.B) {
	keys := djtest.BenchKeys(b)
	shell, _ := docHandlers(b)
	dir := b.TempDir()
	perJob, python := filepath.Join(dir, "noop.sh"), filepath.Join(dir, "noop.py")
	if err := os.WriteFile(perJob, []byte("#!/bin/sh\ncat > /dev/null\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	noop := "import sys\nsys.path.insert(0, " + pyString(pythonDir(b)) + ")\nimport jetjobs\njetjobs.serve(lambda job: None)\n"
	if err := os.WriteFile(python, []byte(noop), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, command string
		persistent    bool
		concurrency   int
	}{
		{"exec-sh", perJob, false, 8},
		{"persistent-sh", shell, true, 8},
		{"persistent-python", "python3 " + python, true, 8},
		{"persistent-python", "python3 " + python, true, 64},
		{"persistent-python", "python3 " + python, true, 128},
	} {
		b.Run(fmt.Sprintf("%s/j=%d", bc.name, bc.concurrency), func(b *testing.B) {
			var elapsed time.Duration
			for range b.N {
				b.StopTimer()
				bun := newBundle(b, keys, nil)
				opts := bun.opts
				opts.Concurrency, opts.MaxCalls = bc.concurrency, keys // stop at the last job
				opts.Handler = worker.Exec(worker.ExecOptions{Command: bc.command})
				if bc.persistent {
					p, _ := persistent(b, worker.PersistentOptions{Command: bc.command})
					if err := p.Start(context.Background(), bc.concurrency); err != nil {
						b.Fatal(err)
					}
					opts.Handler = p.Handle
				}
				elapsed += timedRun(b, opts, keys)
			}
			b.ReportMetric(float64(keys*b.N)/elapsed.Seconds(), "jobs/s")
		})
	}
}

// timedRun runs a worker with opts until it stops by itself, timing only that, and checks that
// it computed keys jobs.
func timedRun(b *testing.B, opts worker.Options, keys int) time.Duration {
	b.Helper()
	w, err := worker.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	began := time.Now()
	sum, err := w.Run(context.Background())
	elapsed := time.Since(began)
	b.StopTimer()
	if err != nil || sum.SuccessCount != keys {
		b.Fatalf("ran %d of %d jobs: %v", sum.SuccessCount, keys, err)
	}
	return elapsed
}
