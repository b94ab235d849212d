package bench

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/notify"
	"github.com/jetjobs/jetjobs/worker"
)

// Defaults of LatencyOptions.
const (
	DefaultRate        = 1000
	DefaultDuration    = 10 * time.Second
	DefaultStages      = 3
	DefaultLatencySlot = 100
	// inserters are the goroutines that insert and notify at the paced rate.
	inserters = 16
	// latencyWait bounds the wait for the last key to reach the last stage.
	latencyWait = 5 * time.Minute
)

// LatencyOptions configure a latency run: keys arrive at Rate for Duration, each as a row
// INSERTed into a parent table and a notify; Stages computed tables follow one another
// (stage k's parent is stage k−1), and every table's refresh_interval is an hour, so only
// events move a key.
type LatencyOptions struct {
	MySQL, NATS, Bin, Self string
	Rate                   int
	Duration               time.Duration
	Stages                 int
	Concurrency            int
	// Coalesce is jobs.events_coalesce (0: its default).
	Coalesce time.Duration
	Log      func(format string, args ...any)
}

// Percentiles are p50, p90 and p99 of a set of latencies.
type Percentiles struct{ P50, P90, P99 time.Duration }

func (p Percentiles) String() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
	return ms(p.P50) + "/" + ms(p.P90) + "/" + ms(p.P99)
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return Percentiles{at(0.50), at(0.90), at(0.99)}
}

// LatencyResult is one latency run's figures, in milliseconds.
type LatencyResult struct {
	LatencyOptions
	Keys int
	// Notify: parent INSERT (before the statement) + notify → stage 1's handler starts.
	Notify Percentiles
	// Hops: stage k's handler starts → stage k+1's starts (the record, the completion event,
	// the restricted refresh, the dispatch, the fetch), one per hop.
	Hops []Percentiles
	// Flow: stage 1's handler starts → the last stage's starts.
	Flow Percentiles
	// Refreshes for events the scheduler made, over every stage, and how long they took.
	Refreshes   int
	RefreshTook Percentiles
}

// Line is the result as the benchmark prints it.
func (r LatencyResult) Line() string {
	var hops []string
	for i, h := range r.Hops {
		hops = append(hops, fmt.Sprintf("hop%d_ms=%s", i+1, h))
	}
	flow := ""
	if r.Stages > 1 {
		flow = fmt.Sprintf(" stage1_to_stage%d_ms=%s", r.Stages, r.Flow)
	}
	return fmt.Sprintf("jetjobs latency: keys=%d rate=%d/s stages=%d concurrency=%d coalesce=%v insert_notify_to_start_ms=%s%s%s event_refreshes=%d event_refresh_ms=%s (p50/p90/p99)",
		r.Keys, r.Rate, r.Stages, r.Concurrency, r.Coalesce, r.Notify, strings.Join(append([]string{""}, hops...), " "), flow, r.Refreshes, r.RefreshTook)
}

// stamp is the Go handler of the latency runs: the target row records when it started.
func stamp(context.Context, *worker.Job) (worker.Result, error) {
	return worker.Result{Rows: []jobsdb.Row{{"started_us": time.Now().UnixMicro()}}}, nil
}

// RunLatency runs the latency benchmark once.
func RunLatency(ctx context.Context, o LatencyOptions) (*LatencyResult, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	r := &run{o: Options{MySQL: o.MySQL, NATS: o.NATS, Bin: o.Bin, Self: o.Self}, res: &Result{}}
	defer r.cleanup()
	tables, err := r.setupLatency(ctx, o)
	if err != nil {
		return nil, err
	}
	if _, err := r.start("scheduler", filepath.Join(o.Bin, "scheduler"), "--config", r.config, "--log-level", "debug"); err != nil {
		return nil, err
	}
	if _, err := r.start("worker", o.Self, "latency-worker", "--config", r.config, "-j", fmt.Sprint(o.Concurrency), "--log-level", "warn"); err != nil {
		return nil, err
	}
	// The scheduler follows the events once it leads every table.
	o.Log("waiting for the scheduler to lead %d tables", len(tables))
	if err := r.until(ctx, time.Minute, func() (bool, error) {
		data, err := os.ReadFile(filepath.Join(r.dir, "scheduler.log"))
		return strings.Count(string(data), `msg="following events"`) >= len(tables), err
	}); err != nil {
		return nil, fmt.Errorf("the scheduler's subscriptions: %w", err)
	}
	n := int(float64(o.Rate) * o.Duration.Seconds())
	o.Log("%d keys at %d/s through %d stages", n, o.Rate, o.Stages)
	began, err := r.feed(ctx, o, tables[0], n)
	if err != nil {
		return nil, err
	}
	last := tables[len(tables)-1]
	if err := r.until(ctx, latencyWait, func() (bool, error) {
		var done int
		err := r.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM `"+last+"`").Scan(&done)
		return done >= n, err
	}); err != nil {
		return nil, fmt.Errorf("waiting for every key to reach %s: %w", last, err)
	}
	res := &LatencyResult{LatencyOptions: o, Keys: n}
	started := make([]map[int]int64, len(tables))
	for i, table := range tables {
		if started[i], err = r.startTimes(ctx, table); err != nil {
			return nil, err
		}
	}
	var notified, flow []time.Duration
	hops := make([][]time.Duration, len(tables)-1)
	for id, t0 := range began {
		notified = append(notified, time.Duration(started[0][id]-t0)*time.Microsecond)
		for k := range hops {
			hops[k] = append(hops[k], time.Duration(started[k+1][id]-started[k][id])*time.Microsecond)
		}
		flow = append(flow, time.Duration(started[len(tables)-1][id]-started[0][id])*time.Microsecond)
	}
	res.Notify, res.Flow = percentiles(notified), percentiles(flow)
	for _, h := range hops {
		res.Hops = append(res.Hops, percentiles(h))
	}
	data, _ := os.ReadFile(filepath.Join(r.dir, "scheduler.log"))
	var took []time.Duration
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, `msg="refreshed for events"`) {
			continue
		}
		res.Refreshes++
		if _, v, ok := strings.Cut(line, " took="); ok {
			if d, err := time.ParseDuration(strings.Fields(v)[0]); err == nil {
				took = append(took, d)
			}
		}
	}
	res.RefreshTook = percentiles(took)
	if os.Getenv("JETJOBS_BENCH_KEEP") != "" {
		keep, _ := os.MkdirTemp("", "jetjobs-latency-logs-")
		for _, f := range []string{"scheduler.log", "worker.log"} {
			if b, err := os.ReadFile(filepath.Join(r.dir, f)); err == nil {
				os.WriteFile(filepath.Join(keep, f), b, 0o644)
			}
		}
		o.Log("logs kept in %s", keep)
	}
	return res, nil
}

// setupLatency makes the database, the parent table and the stages, and the config file; it
// returns the stage tables in order.
func (r *run) setupLatency(ctx context.Context, o LatencyOptions) ([]string, error) {
	var err error
	if r.dir, err = os.MkdirTemp("", "jetjobs-latency-"); err != nil {
		return nil, err
	}
	var id [4]byte
	rand.Read(id[:])
	r.dbName = "jj_latency_" + hex.EncodeToString(id[:])
	r.prefix = "jjlatency" + hex.EncodeToString(id[:])
	if r.admin, err = sql.Open("mysql", o.MySQL); err != nil {
		return nil, err
	}
	if _, err := r.admin.ExecContext(ctx, "CREATE DATABASE "+r.dbName); err != nil {
		return nil, fmt.Errorf("create the benchmark's database: %w", err)
	}
	cfg, err := mysql.ParseDSN(o.MySQL)
	if err != nil {
		return nil, err
	}
	cfg.DBName = r.dbName
	if r.db, err = jobsdb.Open(ctx, cfg.FormatDSN()); err != nil {
		return nil, err
	}
	r.db.SetMaxOpenConns(2 * inserters)
	stmts := []string{"CREATE TABLE session (subject_id int NOT NULL PRIMARY KEY)"}
	var tables []string
	parent := "session"
	for k := 1; k <= o.Stages; k++ {
		name := fmt.Sprintf("__stage%d", k)
		stmts = append(stmts, "CREATE TABLE `"+name+"` (subject_id int NOT NULL PRIMARY KEY, started_us bigint NOT NULL, "+
			"FOREIGN KEY (subject_id) REFERENCES `"+parent+"` (subject_id))")
		tables = append(tables, name)
		parent = name
	}
	for _, s := range stmts {
		if _, err := r.db.ExecContext(ctx, s); err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
	}
	var entries []map[string]any
	for _, t := range tables {
		entries = append(entries, map[string]any{"table": r.dbName + "." + t})
	}
	jobs := map[string]any{"refresh_interval": 3600}
	if o.Coalesce > 0 {
		jobs["events_coalesce"] = o.Coalesce.Seconds()
	}
	config := map[string]any{
		"mysql":  map[string]any{"dsn": o.MySQL},
		"nats":   map[string]any{"url": o.NATS, "subject_prefix": r.prefix, "storage": "memory"},
		"jobs":   jobs,
		"tables": entries,
	}
	data, _ := json.Marshal(config)
	r.config = filepath.Join(r.dir, "jetjobs.json")
	if r.nc, err = nats.Connect(o.NATS); err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", o.NATS, err)
	}
	r.tables = tables
	return tables, os.WriteFile(r.config, data, 0o644)
}

// feed inserts n parent rows at the rate, each followed by a notify of the first stage, and
// returns when each insert began (Unix µs) by key.
func (r *run) feed(ctx context.Context, o LatencyOptions, first string, n int) (map[int]int64, error) {
	ids := make(chan int)
	began := make(map[int]int64, n)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	table := r.dbName + "." + first
	for range inserters {
		wg.Go(func() {
			for id := range ids {
				t0 := time.Now().UnixMicro()
				_, err := r.db.ExecContext(ctx, "INSERT INTO session VALUES (?)", id)
				if err == nil {
					err = notify.Keys(ctx, r.nc, r.prefix, table, map[string]any{"subject_id": id})
				}
				mu.Lock()
				began[id] = t0
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
	interval := time.Second / time.Duration(o.Rate)
	var late int
	for i := 1; i <= n; i++ {
		at := start.Add(time.Duration(i-1) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		} else if d < -10*time.Millisecond {
			late++
		}
		select {
		case ids <- i:
		case <-ctx.Done():
		}
	}
	close(ids)
	wg.Wait()
	o.Log("fed %d keys in %v (%d more than 10 ms behind the pace)", n, time.Since(start).Round(time.Millisecond), late)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d inserts or notifies failed, the first: %w", len(errs), errs[0])
	}
	return began, ctx.Err()
}

// startTimes reads when each key's handler started in a stage table.
func (r *run) startTimes(ctx context.Context, table string) (map[int]int64, error) {
	rows, err := r.db.QueryContext(ctx, "SELECT subject_id, started_us FROM `"+table+"`")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]int64{}
	for rows.Next() {
		var id int
		var us int64
		if err := rows.Scan(&id, &us); err != nil {
			return nil, err
		}
		out[id] = us
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New(table + " is empty")
	}
	return out, nil
}
