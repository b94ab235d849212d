//go:build datajoint

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/internal/djtest"
	"github.com/jetjobs/jetjobs/internal/mysqltest"
	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/worker"
)

// djBenchSetup declares the pipeline with DataJoint and enters its sessions: keys of them,
// numbered from 100 so that none fails. With "refresh", DataJoint's jobs table is filled too.
const djBenchSetup = `import sys
from djpipeline import Analysis, Session, Subject

keys = int(sys.argv[1])
Subject.insert({"subject_id": s} for s in range(1, keys // 100 + 2))
Session.insert({"subject_id": i // 100 + 1, "session_id": 100 + i % 100} for i in range(keys))
if sys.argv[2:] == ["refresh"]:
    Analysis.jobs.refresh(delay=-1)
`

// djBenchPopulate times DataJoint's own distributed populate, as a user calls it.
const djBenchPopulate = `import json, sys, time
from djpipeline import Analysis

refresh = sys.argv[1] != "refresh"  # refreshed already in the setup
began = time.perf_counter()
result = Analysis.populate(reserve_jobs=True, processes=2, refresh=refresh)
print(json.dumps({"seconds": time.perf_counter() - began, "success_count": result["success_count"]}))
`

// BenchmarkDataJoint compares, on one DataJoint pipeline with a trivial make() (one row
// inserted) over JETJOBS_BENCH_KEYS keys (default 2,000), in one sitting:
//
//   - populate/processes=2: DataJoint's own populate(reserve_jobs=True, processes=2) as a user
//     calls it (its refresh included);
//   - populate-refreshed/processes=2: the same after Table.jobs.refresh(), so only the
//     computing is timed;
//   - adapter/j=2 and adapter/j=8: a jetjobs worker with the DataJoint adapter, its programs
//     started and every job published before the timing (the scheduler's part), until the last
//     job was recorded.
//
// Every key must be computed once (make() logs its calls). It reports jobs/s, and prints the
// adapter's speed relative to DataJoint's.
func BenchmarkDataJoint(b *testing.B) {
	keys := djtest.BenchKeys(b)
	rates := map[string]float64{}
	for _, mode := range []string{"", "refresh"} {
		name := "populate/processes=2"
		if mode == "refresh" {
			name = "populate-refreshed/processes=2"
		}
		b.Run(name, func(b *testing.B) {
			var elapsed time.Duration
			for range b.N {
				dir, env, db := djBench(b, keys, mode)
				out, err := djtest.Python(b, dir, env, djBenchPopulate, mode)
				if err != nil {
					b.Fatalf("populate: %v\n%s", err, out)
				}
				lines := strings.Split(strings.TrimSpace(out), "\n")
				var res struct {
					Seconds      float64 `json:"seconds"`
					SuccessCount int     `json:"success_count"`
				}
				if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil || res.SuccessCount != keys {
					b.Fatalf("populate computed %d of %d keys (%v):\n%s", res.SuccessCount, keys, err, out)
				}
				checkComputedOnce(b, dir, db, keys)
				elapsed += time.Duration(res.Seconds * float64(time.Second))
			}
			rates[name] = float64(keys*b.N) / elapsed.Seconds()
			b.ReportMetric(rates[name], "jobs/s")
		})
	}
	for _, concurrency := range []int{2, 8} {
		name := fmt.Sprintf("adapter/j=%d", concurrency)
		b.Run(name, func(b *testing.B) {
			var elapsed time.Duration
			for range b.N {
				b.StopTimer()
				dir, env, db := djBench(b, keys, "")
				for _, kv := range env { // the adapter's programs inherit the environment
					name, value, _ := strings.Cut(kv, "=")
					b.Setenv(name, value)
				}
				w := djBenchWorker(b, db, concurrency, keys)
				b.StartTimer()
				began := time.Now()
				sum, err := w.Run(context.Background())
				elapsed += time.Since(began)
				if err != nil || sum.SuccessCount != keys {
					b.Fatalf("computed %d of %d keys: %v", sum.SuccessCount, keys, err)
				}
				checkComputedOnce(b, dir, db, keys)
			}
			rates[name] = float64(keys*b.N) / elapsed.Seconds()
			b.ReportMetric(rates[name], "jobs/s")
		})
	}
	if base := rates["populate/processes=2"]; base > 0 {
		fmt.Printf("DataJoint, %d keys: adapter j=2 %.2f×, j=8 %.2f× populate(reserve_jobs=True, processes=2); %.2f×, %.2f× its computing alone\n",
			keys, rates["adapter/j=2"]/base, rates["adapter/j=8"]/base,
			rates["adapter/j=2"]/rates["populate-refreshed/processes=2"], rates["adapter/j=8"]/rates["populate-refreshed/processes=2"])
	}
}

// djBench makes a database with the pipeline and keys sessions, and returns the pipeline's
// directory, the environment of its Python and the database.
func djBench(b *testing.B, keys int, mode string) (dir string, env []string, db *mysqltest.DB) {
	b.Helper()
	db = mysqltest.New(b)
	dir = b.TempDir()
	env = append(djtest.Env(b, db.ServerDSN, dir), "MAKE_LOG="+filepath.Join(dir, "make.log"))
	djtest.Require(b, env)
	writePipeline(b, dir, db.Name, false)
	if out, err := djtest.Python(b, dir, env, djBenchSetup, fmt.Sprint(keys), mode); err != nil {
		b.Fatalf("declaring the pipeline: %v\n%s", err, out)
	}
	return dir, env, db
}

// djBenchWorker returns a worker with the DataJoint adapter, its programs started and every
// job published, which stops after keys jobs.
func djBenchWorker(b *testing.B, db *mysqltest.DB, concurrency, keys int) *worker.Worker {
	b.Helper()
	ctx := context.Background()
	pool, err := jobsdb.Open(ctx, db.DSN)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pool.Close() })
	target, err := jobsdb.Inspect(ctx, pool, db.Name+".__analysis", "")
	if err != nil {
		b.Fatal(err)
	}
	jobs := jobsdb.New(pool, target, jobsdb.Options{})
	if _, err := jobs.Refresh(ctx, jobsdb.RefreshOptions{Priority: jobsdb.PriorityDefault, Delay: -time.Second}); err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(natstest.Embedded(b).ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	q, err := queue.Open(ctx, nc, db.Name, "__analysis", queue.Config{Prefix: "djbench"})
	if err != nil {
		b.Fatal(err)
	}
	natstest.PublishDue(b, jobs, q)
	adapter := worker.Persistent(worker.PersistentOptions{Command: "python3 -m jetjobs.datajoint djpipeline.Analysis"})
	b.Cleanup(adapter.Stop)
	if err := adapter.Start(ctx, concurrency); err != nil {
		b.Fatal(err)
	}
	w, err := worker.New(worker.Options{
		DB: pool, NATS: nc, Tables: []worker.Table{{Name: target.FullName()}}, Handler: adapter.Handle,
		Concurrency: concurrency, MaxCalls: keys, Queue: queue.Config{Prefix: "djbench"},
	})
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// checkComputedOnce checks that make() ran once for each of the keys and their rows are there.
func checkComputedOnce(b *testing.B, dir string, db *mysqltest.DB, keys int) {
	b.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "make.log"))
	if err != nil {
		b.Fatal(err)
	}
	calls := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		key, _, _ := strings.Cut(line, " ")
		if calls[key] {
			b.Fatalf("make(%s) ran twice", key)
		}
		calls[key] = true
	}
	var rows int
	if err := db.SQL.QueryRow("SELECT COUNT(*) FROM __analysis").Scan(&rows); err != nil || len(calls) != keys || rows != keys {
		b.Fatalf("make() ran for %d keys, %d rows (%v); want %d", len(calls), rows, err, keys)
	}
}
