// Package bench is jetjobs' end-to-end benchmark (cmd/jetjobs-bench): it creates a pipeline of
// N keys in a database of its own, runs the real scheduler program and worker processes (a Go
// no-op handler, or the worker program with an --exec handler), waits until every key was
// computed, checks that each was computed once, and prints one line per run with the
// throughput and the CPU each process spent per job over the timed phase.
//
// The processes measured are the scheduler, the workers, the MySQL server and the NATS server
// (found by the TCP port they listen on), so run it on an otherwise idle machine.
package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/internal/procfs"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// Defaults of Options.
const (
	DefaultMySQL       = "root@tcp(127.0.0.1:3306)/"
	DefaultNATS        = "nats://127.0.0.1:4222"
	DefaultN           = 100000
	DefaultWorkers     = 1
	DefaultConcurrency = 1000
	// pollInterval is how often the workers' counters are read during a run.
	pollInterval = 100 * time.Millisecond
	// publishedWait bounds the wait for the pre-published messages, and runTimeout a run.
	publishedWait = 5 * time.Minute
	runTimeout    = 30 * time.Minute
	targetName    = "__noop"
)

// Handlers of a run.
const (
	HandlerGo   = "go"   // a Go no-op handler (worker.New) returning the target row
	HandlerExec = "exec" // the worker program with --exec, a shell script per job
)

// Options of a run.
type Options struct {
	MySQL       string // server DSN (no database): a database of the run's own is made there
	NATS        string // NATS URL; the server must listen on this machine, to be measured
	Bin         string // directory of the scheduler and worker programs
	Self        string // this program, run as "worker" for the Go handler
	N           int    // keys
	Workers     int    // worker processes
	Concurrency int    // each worker's slots
	Handler     string // HandlerGo or HandlerExec
	Storage     string // the stream's storage: file or memory
	// Dispatch is the programs' dispatch: "nats" (messages from JetStream) or "mysql" (claimed
	// from the jobs table; NATS is not used, nor measured).
	Dispatch string
	// Prepublished publishes every job before the clock starts (N must fit the window).
	Prepublished bool
	// DispatchWindow overrides the scheduler's (0: its default).
	DispatchWindow int
	// ExplainOnly sets up the table of N jobs for the plans (Result.Explain) and runs nothing.
	ExplainOnly bool
	CPUProfile  string    // Go workers' CPU profiles, suffixed with their number
	Log         io.Writer // progress; nil for none
}

// Result is one run's figures.
type Result struct {
	Options
	Seconds                         float64
	JobsPerSecond                   float64
	WorkerUS, MySQLUS, NATSUS       float64 // CPU µs per job
	SchedulerUS                     float64
	PeakRSSMB                       float64 // the largest worker's peak resident memory
	WorkerAllocs                    float64 // heap allocations per job in the workers (Go handler)
	Explain                         []string
	completed, targetRows, jobsLeft int
}

// Line is the result as the benchmark prints it.
func (r Result) Line() string {
	mode := "sustained"
	if r.Prepublished {
		mode = "prepublished"
	}
	return fmt.Sprintf("jetjobs bench: n=%d dispatch=%s mode=%s handler=%s workers=%d concurrency=%d storage=%s jobs/s=%.0f "+
		"worker_us_per_job=%.1f mysql_us_per_job=%.1f nats_us_per_job=%.1f scheduler_us_per_job=%.1f peak_rss_mb=%.0f worker_allocs_per_job=%.0f",
		r.N, r.dispatch(), mode, r.Handler, r.Workers, r.Concurrency, r.Storage, r.JobsPerSecond,
		r.WorkerUS, r.MySQLUS, r.NATSUS, r.SchedulerUS, r.PeakRSSMB, r.WorkerAllocs)
}

func (o Options) dispatch() string {
	if o.Dispatch == "" {
		return DispatchNATS
	}
	return o.Dispatch
}

// usesNATS reports whether the run dispatches through NATS.
func (o Options) usesNATS() bool { return o.dispatch() == DispatchNATS }

// Dispatches of a run.
const (
	DispatchNATS  = "nats"
	DispatchMySQL = "mysql"
)

// Run runs the benchmark once.
func Run(ctx context.Context, o Options) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	r := &run{o: o, res: &Result{Options: o}}
	defer r.cleanup()
	if err := r.setup(ctx); err != nil {
		return nil, err
	}
	if o.ExplainOnly {
		return r.res, nil
	}
	if err := r.measure(ctx); err != nil {
		return nil, err
	}
	return r.res, r.verify(ctx)
}

type run struct {
	o       Options
	res     *Result
	dir     string
	db      *sql.DB
	admin   *sql.DB
	dbName  string
	prefix  string
	config  string
	procs   []*exec.Cmd
	workers []*exec.Cmd
	metrics []string // each worker's metrics address
	stream  *queue.Table
	nc      *nats.Conn
	// tables whose streams cleanup deletes besides stream (the latency runs').
	tables []string
}

func (r *run) logf(format string, args ...any) {
	if r.o.Log != nil {
		fmt.Fprintf(r.o.Log, format+"\n", args...)
	}
}

// setup makes the database, the pipeline and its pending jobs, and the config file.
func (r *run) setup(ctx context.Context) error {
	var err error
	if r.dir, err = os.MkdirTemp("", "jetjobs-bench-"); err != nil {
		return err
	}
	var id [4]byte
	rand.Read(id[:])
	r.dbName = "jj_bench_" + hex.EncodeToString(id[:])
	r.prefix = "jjbench" + hex.EncodeToString(id[:])
	if r.admin, err = sql.Open("mysql", r.o.MySQL); err != nil {
		return err
	}
	if _, err := r.admin.ExecContext(ctx, "CREATE DATABASE "+r.dbName); err != nil {
		return fmt.Errorf("create the benchmark's database: %w", err)
	}
	cfg, err := mysql.ParseDSN(r.o.MySQL)
	if err != nil {
		return err
	}
	cfg.DBName = r.dbName
	dsn := cfg.FormatDSN()
	if r.db, err = jobsdb.Open(ctx, dsn); err != nil {
		return err
	}
	r.logf("creating %d keys in %s", r.o.N, r.dbName)
	for _, stmt := range []string{
		"CREATE TABLE subject (subject_id int NOT NULL PRIMARY KEY)",
		"CREATE TABLE " + targetName + " (subject_id int NOT NULL PRIMARY KEY, value int NOT NULL, FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
		fmt.Sprintf("INSERT INTO subject SELECT seq FROM seq_1_to_%d", r.o.N),
	} {
		if _, err := r.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	target, err := jobsdb.Inspect(ctx, r.db, r.dbName+"."+targetName, "")
	if err != nil {
		return err
	}
	jobs := jobsdb.New(r.db, target, jobsdb.Options{})
	if _, err := jobs.Refresh(ctx, jobsdb.RefreshOptions{Priority: jobsdb.PriorityDefault, Delay: -time.Second}); err != nil {
		return err
	}
	if r.res.Explain, err = jobs.ExplainDueForDispatch(ctx); err != nil || r.o.ExplainOnly {
		return err
	}
	if r.o.usesNATS() {
		if r.nc, err = nats.Connect(r.o.NATS); err != nil {
			return fmt.Errorf("connect to NATS at %s: %w", r.o.NATS, err)
		}
		if r.stream, err = queue.Open(ctx, r.nc, r.dbName, targetName, queue.Config{Prefix: r.prefix}); err != nil {
			return err
		}
	}
	config := map[string]any{
		"dispatch": r.o.dispatch(),
		"mysql":    map[string]any{"dsn": r.o.MySQL},
		"nats":     map[string]any{"url": r.o.NATS, "subject_prefix": r.prefix, "storage": r.o.Storage},
		"tables":   []map[string]any{{"table": r.dbName + "." + targetName}},
	}
	if r.o.DispatchWindow > 0 {
		config["nats"].(map[string]any)["dispatch_window"] = r.o.DispatchWindow
	}
	data, _ := json.Marshal(config)
	r.config = filepath.Join(r.dir, "jetjobs.json")
	return os.WriteFile(r.config, data, 0o644)
}

// measure runs the scheduler, then the workers, and times them until every key is computed.
func (r *run) measure(ctx context.Context) error {
	bin, args, env := filepath.Join(r.o.Bin, "scheduler"), []string{"--config", r.config, "--log-level", "warn"}, []string(nil)
	if r.o.CPUProfile != "" {
		bin, args, env = r.o.Self, append([]string{"scheduler"}, args...), []string{envCPUProfile + "=" + r.o.CPUProfile + ".scheduler"}
	}
	scheduler, err := r.startEnv("scheduler", env, bin, args...)
	if err != nil {
		return err
	}
	if r.o.Prepublished {
		r.logf("waiting for the scheduler to publish %d jobs", r.o.N)
		if err := r.until(ctx, publishedWait, func() (bool, error) {
			n, err := r.stream.Messages(ctx)
			return int(n) >= r.o.N, err
		}); err != nil {
			return fmt.Errorf("pre-publish: %w", err)
		}
	}
	mysqlPID, natsPID, err := r.servers(ctx)
	if err != nil {
		return err
	}
	pids := map[string]int{"mysql": mysqlPID, "scheduler": scheduler.Process.Pid}
	if natsPID != 0 {
		pids["nats"] = natsPID
	}
	before := map[string]time.Duration{}
	for name, pid := range pids {
		st, _ := procfs.Read(pid)
		before[name] = st.CPU
	}
	began := time.Now()
	for i := range r.o.Workers {
		if err := r.startWorker(i); err != nil {
			return err
		}
	}
	r.logf("timing %d workers until %d jobs are done", r.o.Workers, r.o.N)
	var workerCPU time.Duration
	var peak uint64
	err = r.until(ctx, runTimeout, func() (bool, error) {
		done, mallocs := 0, 0.0
		for _, addr := range r.metrics {
			n, m, err := readMetrics(addr)
			if err != nil {
				return false, nil // not serving yet
			}
			done += n
			mallocs += m
		}
		r.res.completed = done
		if done < r.o.N {
			return false, nil
		}
		r.res.WorkerAllocs = mallocs / float64(r.o.N)
		// Read the workers' CPU now, before they stop.
		for _, w := range r.workers {
			st, _ := procfs.Read(w.Process.Pid)
			workerCPU += st.CPU
			rss, _ := procfs.PeakRSS(w.Process.Pid)
			peak = max(peak, rss)
		}
		return true, nil
	})
	elapsed := time.Since(began)
	if err != nil {
		return fmt.Errorf("%w after %d of %d jobs", err, r.res.completed, r.o.N)
	}
	after := map[string]time.Duration{}
	for name, pid := range pids {
		st, _ := procfs.Read(pid)
		after[name] = st.CPU
	}
	n := float64(r.o.N)
	perJob := func(d time.Duration) float64 { return float64(d.Microseconds()) / n }
	r.res.Seconds = elapsed.Seconds()
	r.res.JobsPerSecond = n / elapsed.Seconds()
	r.res.WorkerUS = perJob(workerCPU)
	r.res.MySQLUS = perJob(after["mysql"] - before["mysql"])
	r.res.NATSUS = perJob(after["nats"] - before["nats"])
	r.res.SchedulerUS = perJob(after["scheduler"] - before["scheduler"])
	r.res.PeakRSSMB = float64(peak) / (1 << 20)
	return nil
}

// servers finds the MySQL and NATS server processes by the ports they listen on (NATS only
// when the run uses it; 0 otherwise).
func (r *run) servers(ctx context.Context) (mysqlPID, natsPID int, err error) {
	var port int
	if err := r.admin.QueryRowContext(ctx, "SELECT @@port").Scan(&port); err != nil {
		return 0, 0, err
	}
	if mysqlPID, err = procfs.Listener(port); err != nil {
		return 0, 0, fmt.Errorf("the MySQL server: %w", err)
	}
	if !r.o.usesNATS() {
		return mysqlPID, 0, nil // not used
	}
	u, err := url.Parse(r.o.NATS)
	if err != nil {
		return 0, 0, err
	}
	natsPort, _ := strconv.Atoi(u.Port())
	if natsPID, err = procfs.Listener(natsPort); err != nil {
		return 0, 0, fmt.Errorf("the NATS server: %w", err)
	}
	return mysqlPID, natsPID, nil
}

// startWorker starts worker i with a metrics address of its own.
func (r *run) startWorker(i int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	ln.Close()
	r.metrics = append(r.metrics, addr)
	conc := strconv.Itoa(r.o.Concurrency)
	var w *exec.Cmd
	switch r.o.Handler {
	case HandlerExec:
		script := filepath.Join(r.dir, "handler.sh")
		if err := os.WriteFile(script, []byte("#!/bin/sh\necho '{\"value\": 1}'\n"), 0o755); err != nil {
			return err
		}
		w, err = r.start(fmt.Sprintf("worker-%d", i), filepath.Join(r.o.Bin, "worker"), "--config", r.config,
			"--exec", script, "-j", conc, "--metrics-addr", addr, "--log-level", "warn")
	default:
		var env []string
		if r.o.CPUProfile != "" {
			env = []string{envCPUProfile + "=" + fmt.Sprintf("%s.%d", r.o.CPUProfile, i)}
		}
		w, err = r.startEnv(fmt.Sprintf("worker-%d", i), env, r.o.Self, "worker", "--config", r.config, "-j", conc, "--metrics-addr", addr, "--log-level", "warn")
	}
	if err != nil {
		return err
	}
	r.workers = append(r.workers, w)
	return nil
}

// start runs a program, its output in a log file of the run's directory.
func (r *run) start(name, bin string, args ...string) (*exec.Cmd, error) {
	return r.startEnv(name, nil, bin, args...)
}

// startEnv is start with environment variables added.
func (r *run) startEnv(name string, env []string, bin string, args ...string) (*exec.Cmd, error) {
	log, err := os.Create(filepath.Join(r.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	r.procs = append(r.procs, cmd)
	return cmd, nil
}

// until polls cond every pollInterval until it holds, fails, or timeout or ctx ends; a program
// that exits meanwhile fails it.
func (r *run) until(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		for _, p := range r.procs {
			if st, alive := procfs.Read(p.Process.Pid); !alive || st.State == 'Z' {
				return fmt.Errorf("%s exited; its log is in %s", filepath.Base(p.Path), r.dir)
			}
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// metricsClient reads the workers' counters without asking for gzip, whose compression
// would cost the workers CPU that the benchmark counts.
var metricsClient = &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 5 * time.Second}

// completed reads jetjobs_jobs_completed_total from a worker's /metrics.
func readMetrics(addr string) (completed int, mallocs float64, err error) {
	resp, err := metricsClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		completedLine := strings.HasPrefix(line, "jetjobs_jobs_completed_total")
		if !completedLine && !strings.HasPrefix(line, "go_memstats_mallocs_total ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, 0, err
		}
		if completedLine {
			completed += int(v)
		} else {
			mallocs += v
		}
	}
	return completed, mallocs, sc.Err()
}

// verify checks that every key was computed once: N target rows, no job left, N completions.
func (r *run) verify(ctx context.Context) error {
	if err := r.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+targetName).Scan(&r.res.targetRows); err != nil {
		return err
	}
	if err := r.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM `~~noop`").Scan(&r.res.jobsLeft); err != nil {
		return err
	}
	if r.res.targetRows != r.o.N || r.res.jobsLeft != 0 || r.res.completed != r.o.N {
		return fmt.Errorf("not every key computed once: %d target rows, %d jobs left, %d completions, want %d, 0, %d",
			r.res.targetRows, r.res.jobsLeft, r.res.completed, r.o.N, r.o.N)
	}
	return nil
}

// cleanup stops the programs and removes the database, the stream and the directory.
func (r *run) cleanup() {
	for _, p := range r.procs {
		p.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range r.procs {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
	if r.stream != nil {
		r.stream.Delete(context.Background())
	}
	for _, name := range r.tables {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if s, err := queue.Open(ctx, r.nc, r.dbName, name, queue.Config{Prefix: r.prefix}); err == nil {
			s.Delete(ctx)
		}
		cancel()
	}
	if r.nc != nil {
		r.nc.Close()
	}
	if r.db != nil {
		r.db.Close()
	}
	if r.admin != nil {
		r.admin.Exec("DROP DATABASE IF EXISTS " + r.dbName)
		r.admin.Close()
	}
	if r.dir != "" {
		os.RemoveAll(r.dir)
	}
}
