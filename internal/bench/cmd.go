package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"

	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/internal/schedulercmd"
	"github.com/jetjobs/jetjobs/internal/workercmd"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/worker"
)

const usage = `jetjobs-bench: the end-to-end benchmark. It creates a pipeline of --n keys (subject →
__noop) in a database of its own on --mysql, with their jobs pending, then runs the scheduler
program (from --bin) and --workers worker processes of --concurrency slots each against the
NATS server at --nats, and times them until every job is done. It checks that every key was
computed once, and prints one line per run:

  jetjobs bench: n=… dispatch=… mode=… handler=… workers=… concurrency=… storage=… jobs/s=…
    worker_us_per_job=… mysql_us_per_job=… nats_us_per_job=… scheduler_us_per_job=… peak_rss_mb=…
    worker_allocs_per_job=…

(CPU seconds of each process over the timed phase divided by the jobs, and the workers' heap
allocations, including their start, per job; the MySQL and NATS servers are found by the
ports they listen on, so both must run on this machine, and nothing else should run
meanwhile.) --handler go runs a Go no-op handler (this program as "worker"),
--handler exec the worker program with a one-line shell script per job. --prepublished
publishes every job before the clock starts. With --explain it first prints MySQL's plan of
the statements that pick due jobs, on a table of --n jobs; --explain-only prints them and runs
nothing (make bench-e2e shows them on 10,000,000 jobs). --dispatch mysql runs the same with
dispatch=mysql: the workers claim due jobs from the jobs table and NATS is neither used nor
measured (nats_us_per_job=0), to compare with --dispatch nats on the same setup.

Usage:
  jetjobs-bench [flags]

Flags:
`

// Main is the jetjobs-bench program; it returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "latency-worker" {
		return workercmd.MainWith(stamp, args[1:], stdout, stderr)
	}
	if len(args) > 0 && (args[0] == "worker" || args[0] == "scheduler") {
		// The programs, profiled: the worker program with a no-op Go handler, and the
		// scheduler program as it is.
		if path := os.Getenv(envCPUProfile); path != "" {
			stop, err := startCPUProfile(path)
			if err != nil {
				fmt.Fprintln(stderr, "jetjobs-bench:", err)
				return cli.ExitFailed
			}
			defer stop()
		}
		if args[0] == "scheduler" {
			return schedulercmd.Main(args[1:], stdout, stderr)
		}
		return workercmd.MainWith(noop, args[1:], stdout, stderr)
	}
	fs := pflag.NewFlagSet("jetjobs-bench", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	self, _ := os.Executable()
	fs.StringVar(&o.MySQL, "mysql", DefaultMySQL, "MySQL server DSN (without a database)")
	fs.StringVar(&o.NATS, "nats", DefaultNATS, "NATS server URL (a server on this machine, with JetStream)")
	fs.StringVar(&o.Bin, "bin", "bin", "directory of the scheduler and worker programs (make build)")
	fs.IntVar(&o.N, "n", DefaultN, "keys (jobs) per run")
	fs.IntVar(&o.Workers, "workers", DefaultWorkers, "worker processes")
	fs.IntVarP(&o.Concurrency, "concurrency", "j", DefaultConcurrency, "each worker's slots")
	fs.StringVar(&o.Handler, "handler", HandlerGo, "go (a no-op Go handler) or exec (a shell script per job)")
	fs.StringVar(&o.Storage, "storage", string(queue.StorageDefault), "stream storage: file or memory")
	fs.StringVar(&o.Dispatch, "dispatch", DispatchNATS, "how the workers take due jobs: nats (messages from JetStream) or mysql (claimed from the jobs table; no NATS)")
	fs.BoolVar(&o.Prepublished, "prepublished", false, "publish every job before the clock starts")
	fs.IntVar(&o.DispatchWindow, "dispatch-window", 0, "the scheduler's nats.dispatch_window (0: its default; with --prepublished, at least --n)")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write the scheduler's and each Go worker's CPU profile to files of this prefix (.scheduler, .0, .1, …; go tool pprof)")
	runs := fs.Int("runs", 1, "runs, one line each")
	latency := fs.Bool("latency", false, "measure latency instead: --rate keys a second for --duration, each a parent row INSERTed and notified, through --stages tables with an hour between refreshes")
	var lo LatencyOptions
	fs.IntVar(&lo.Rate, "rate", DefaultRate, "with --latency: keys a second")
	fs.DurationVar(&lo.Duration, "duration", DefaultDuration, "with --latency: how long keys arrive")
	fs.IntVar(&lo.Stages, "stages", DefaultStages, "with --latency: computed tables one after the other (at least 1)")
	fs.DurationVar(&lo.Coalesce, "coalesce", 0, "with --latency: the scheduler's jobs.events_coalesce (0: its default, 5ms)")
	explain := fs.Bool("explain", false, "print the plans of the statements that pick due jobs")
	fs.BoolVar(&o.ExplainOnly, "explain-only", false, "print the plans on a table of --n jobs, and run nothing (--n 10000000 takes about a minute)")
	quiet := fs.BoolP("quiet", "q", false, "print only the result lines")
	help := fs.BoolP("help", "h", false, "show this help")
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return cli.ExitUsage
	}
	if *help {
		fmt.Fprint(stdout, usage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return cli.ExitOK
	}
	if o.Handler != HandlerGo && o.Handler != HandlerExec || o.N < 1 || o.Workers < 1 || o.Concurrency < 1 {
		fmt.Fprintln(stderr, "jetjobs-bench: --handler must be go or exec, and --n, --workers, --concurrency at least 1")
		return cli.ExitUsage
	}
	if o.Dispatch != DispatchNATS && o.Dispatch != DispatchMySQL || o.Dispatch == DispatchMySQL && o.Prepublished {
		fmt.Fprintln(stderr, "jetjobs-bench: --dispatch must be nats or mysql, and --prepublished goes with nats only")
		return cli.ExitUsage
	}
	if o.Prepublished && o.DispatchWindow < o.N {
		o.DispatchWindow = max(o.N, queue.WindowDefault)
	}
	o.Self = self
	o.Bin, _ = filepath.Abs(o.Bin)
	if !*quiet {
		o.Log = stderr
	}
	if *latency {
		if lo.Rate < 1 || lo.Duration <= 0 || lo.Stages < 1 {
			fmt.Fprintln(stderr, "jetjobs-bench: --rate, --duration and --stages must be positive")
			return cli.ExitUsage
		}
		lo.MySQL, lo.NATS, lo.Bin, lo.Self = o.MySQL, o.NATS, o.Bin, o.Self
		lo.Concurrency = DefaultLatencySlot
		if fs.Changed("concurrency") {
			lo.Concurrency = o.Concurrency
		}
		if !*quiet {
			lo.Log = func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
		}
		for range *runs {
			res, err := RunLatency(ctx, lo)
			if err != nil {
				fmt.Fprintln(stderr, "jetjobs-bench:", err)
				return cli.ExitFailed
			}
			fmt.Fprintln(stdout, res.Line())
		}
		return cli.ExitOK
	}
	for range *runs {
		res, err := Run(ctx, o)
		if res != nil && (*explain || o.ExplainOnly) {
			fmt.Fprintln(stdout, "plans on", o.N, "jobs:\n  "+strings.Join(res.Explain, "\n  "))
			*explain = false
		}
		if err != nil {
			fmt.Fprintln(stderr, "jetjobs-bench:", err)
			return cli.ExitFailed
		}
		if o.ExplainOnly {
			return cli.ExitOK
		}
		fmt.Fprintln(stdout, res.Line())
	}
	return cli.ExitOK
}

// noop is the Go handler of the benchmark: it computes nothing and returns the target row.
func noop(context.Context, *worker.Job) (worker.Result, error) {
	return worker.Result{Rows: []jobsdb.Row{{"value": 1}}}, nil
}

// envCPUProfile names the file a Go worker writes its CPU profile to.
const envCPUProfile = "JETJOBS_BENCH_CPUPROFILE"

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
