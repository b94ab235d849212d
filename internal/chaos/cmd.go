package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/internal/cli"
)

const usage = `jetjobs-chaos: run jetjobs' real programs against real servers under a seeded random schedule
of faults, then check that nothing was lost, run twice at once, left stuck or wrongly failed.

Usage:
  jetjobs-chaos [flags]          a chaos run
  jetjobs-chaos soak [flags]     a steady-load run (see jetjobs-chaos soak --help)

A chaos run builds scheduler, worker, jobsctl and natsd (the current nats-server) from this
module (run it inside the module, or give --bin), starts a private MariaDB and NATS (one
server, or a three-node JetStream cluster with --cluster), runs --schedulers schedulers and
--workers workers (worker --exec HANDLER -j N --suppress-errors; the workers reach MySQL and
NATS through fault proxies), inserts the pipeline's keys (subject → session → __analysis)
during the first 60% of the fault phase, and applies faults one after another for --duration:

  worker-kill, worker-term, worker-term-group (SIGTERM to a worker and its handlers' process
  groups), scheduler-kill (the leader), mysql-kill-query, mysql-kill-conn, mysql-restart
  (SIGKILL or SIGTERM), mysql-partition, mysql-latency, mysql-reset, mysql-refuse, nats-kill
  (kill -9, restart on the same store), nats-wipe (restart with an empty store),
  nats-node-down (cluster only), nats-delete-stream, nats-partition, nats-latency,
  nats-reset, nats-refuse, net-partition (MySQL and NATS at once). Network faults cut off one
  worker or all of them.

Then it heals everything, waits up to --drain for every job to finish, stops the programs and
checks the jobs table, the target table and the handler's call log. It prints every fault,
every violation and, last, one line:

  chaos: keys=N faults=F lost=L double=D stuck=S errors=E seconds=T

lost: keys neither computed nor an induced error row; double: keys whose handler calls
overlapped in time; stuck: jobs pending or reserved after the drain deadline; errors: error
rows of keys whose handler never fails. The same seed gives the same fault schedule.

Exit codes: 0 no violation, 1 violations or the run failed, 2 bad usage.

Flags:
`

// Main is the jetjobs-chaos program: it runs until ctx ends and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// The harness's own connections die with every MySQL fault and are retried: the driver's
	// complaints about them are noise.
	mysql.SetLogger(log.New(io.Discard, "", 0))
	if len(args) > 0 && args[0] == "soak" {
		return soakMain(ctx, args[1:], stdout, stderr)
	}
	fs := pflag.NewFlagSet("jetjobs-chaos", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	var o Options
	var faults string
	var quiet bool
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the fault schedule and of the induced-error keys")
	fs.IntVar(&o.Keys, "keys", DefaultKeys, "keys in the pipeline")
	fs.DurationVar(&o.Duration, "duration", DefaultDuration, "length of the fault phase")
	fs.DurationVar(&o.Drain, "drain", DefaultDrain, "how long every job may take to finish once the faults are healed")
	fs.IntVar(&o.Workers, "workers", DefaultWorkers, "worker processes kept running")
	fs.IntVar(&o.Schedulers, "schedulers", DefaultSchedulers, "scheduler processes kept running")
	fs.IntVarP(&o.Concurrency, "concurrency", "j", DefaultConcurrency, "each worker's -j")
	fs.StringVar(&o.NATS, "nats", DefaultNATS, "NATS server: 2.9 (Debian's "+DebianNATSServer+") or current (nats-server of go.mod)")
	fs.BoolVar(&o.Cluster, "cluster", false, "a three-node JetStream cluster with streams replicated 3 times, instead of one server")
	fs.StringVar(&faults, "faults", "", "comma-separated fault kinds to use (default: all that apply; see above); none: no faults")
	fs.DurationVar(&o.MaxSleep, "max-sleep", DefaultMaxSleep, "the handler works a random time up to this")
	fs.IntVar(&o.SlowPerMille, "slow-per-mille", DefaultSlowPerMille, "calls in a thousand that work for seconds, around the lease (negative: none)")
	fs.DurationVar(&o.FaultGapMin, "gap-min", DefaultFaultGapMin, "shortest quiet time between two faults")
	fs.DurationVar(&o.FaultGapMax, "gap-max", DefaultFaultGapMax, "longest quiet time between two faults")
	fs.DurationVar(&o.HoldMin, "hold-min", DefaultHoldMin, "shortest hold of a lasting fault (partition, latency, refusal, a node down)")
	fs.DurationVar(&o.HoldMax, "hold-max", DefaultHoldMax, "longest hold of a lasting fault")
	fs.BoolVar(&o.Keep, "keep", false, "keep the run's directory (every process's log, the call log, the servers' data) when the run fails")
	fs.StringVar(&o.Dir, "dir", "", "where to make the run's directory (default: the temporary directory)")
	fs.StringVar(&o.BinDir, "bin", "", "directory of prebuilt scheduler, worker, jobsctl and natsd (default: build them)")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print only the report, not the progress")
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return cli.ExitOK
		}
		return cli.ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "jetjobs-chaos: unexpected argument %q\n", fs.Arg(0))
		return cli.ExitUsage
	}
	if faults != "" {
		o.Faults = strings.Split(faults, ",")
	}
	if !quiet {
		o.Log = stderr
	}
	res, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "jetjobs-chaos:", err)
		if errors.Is(err, ErrUsage) {
			return cli.ExitUsage
		}
		return cli.ExitFailed
	}
	fmt.Fprint(stdout, res.Report())
	if !res.OK() {
		return cli.ExitFailed
	}
	return cli.ExitOK
}

const soakUsage = `jetjobs-chaos soak: a steady load, to find what grows without bound.

Usage:
  jetjobs-chaos soak [flags]

Starts a private MariaDB, one NATS server (with its monitoring port), 2 schedulers and
--workers workers with a cheap handler, and inserts --rate parent rows per second for
--duration, so that the scheduler's refresh creates the jobs. Every --interval it prints the
workers' and schedulers' resident memory and goroutines (their /metrics), the open MySQL
connections (information_schema.PROCESSLIST), the open NATS connections (/connz), the stream's
depth and the lag (the age of the oldest due pending job). At the end it says whether
anything grew without bound: a series whose mean over the last quarter of the run is more
than 1.5 times its mean over the second quarter, beyond a noise floor.

Exit codes: 0 nothing grew, 1 something grew, a program exited or the run failed, 2 bad usage.

Flags:
`

func soakMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("jetjobs-chaos soak", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	var o SoakOptions
	fs.IntVar(&o.Rate, "rate", DefaultSoakRate, "jobs (parent rows) per second")
	fs.DurationVar(&o.Duration, "duration", DefaultSoakDuration, "how long the load lasts")
	fs.DurationVar(&o.Interval, "interval", DefaultSoakInterval, "time between two samples")
	fs.IntVar(&o.Workers, "workers", DefaultSoakWorkers, "worker processes")
	fs.IntVarP(&o.Concurrency, "concurrency", "j", DefaultSoakConcurrency, "each worker's -j")
	fs.StringVar(&o.NATS, "nats", DefaultNATS, "NATS server: 2.9 (Debian's "+DebianNATSServer+") or current (nats-server of go.mod)")
	fs.StringVar(&o.Dir, "dir", "", "where to make the run's directory (default: the temporary directory)")
	fs.StringVar(&o.BinDir, "bin", "", "directory of prebuilt scheduler, worker, jobsctl and natsd (default: build them)")
	fs.Usage = func() { fmt.Fprint(stderr, soakUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return cli.ExitOK
		}
		return cli.ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "jetjobs-chaos soak: unexpected argument %q\n", fs.Arg(0))
		return cli.ExitUsage
	}
	o.Log = stdout
	rep, err := Soak(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "jetjobs-chaos soak:", err)
		if errors.Is(err, ErrUsage) {
			return cli.ExitUsage
		}
		return cli.ExitFailed
	}
	for _, e := range rep.Exited {
		fmt.Fprintln(stdout, "soak: a program exited during the run:", e)
	}
	if len(rep.Grew) > 0 {
		fmt.Fprintln(stdout, "soak: grew without bound:", strings.Join(rep.Grew, "; "))
	} else {
		fmt.Fprintln(stdout, "soak: nothing grew without bound")
	}
	if !rep.OK() {
		return cli.ExitFailed
	}
	return cli.ExitOK
}
