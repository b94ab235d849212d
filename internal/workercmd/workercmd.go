// Package workercmd is the worker program: flags, wiring, signals and the summary. The work
// itself is done by package worker.
package workercmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/worker"
)

const usage = `worker: take due jobs from NATS JetStream (or claim them from MySQL), reserve them in MySQL,
run a handler, record the outcome.

Usage:
  worker [flags] --exec CMD [--persistent] [schema.table ...]
  worker [flags] --datajoint module.Class [schema.table ...]

Tables come from the arguments, or from "tables" in the config file.

The --exec handler protocol: the key arrives as JSON on stdin and as JETJOBS_KEY_<COLUMN>
variables, with JETJOBS_TABLE, JETJOBS_ATTEMPT and TRACEPARENT. Exit 0 = success (a JSON
object or array on stdout is inserted as target rows in the completion transaction); exit 75 =
retryable failure (retried with backoff up to jobs.max_attempts); any other exit = error, with
the last non-empty line of stderr as the message and all of stderr as the stack.

With --persistent, CMD is started once per slot and kept: it computes one job after another
over line-delimited JSON on stdin and stdout (docs/handler-protocol.md; Python: jetjobs.serve
from the repository's python/ package). A handler that dies, breaks the protocol, exceeds
--timeout or loses its job's lease is killed with its process group and restarted.

--datajoint module.Class computes the tables with DataJoint's own make(): it runs
"python3 -m jetjobs.datajoint module.Class" persistently (pip install ./python). A table's
"datajoint" entry in the config file does the same for that table alone.

--dispatch (config key dispatch): nats takes messages from JetStream; mysql claims due jobs
from the jobs table in batches (SELECT … FOR UPDATE SKIP LOCKED), with no NATS at all; auto (the
default) takes messages while NATS is reachable and claims from MySQL while it is not (at
start, or for more than 3 s mid-run), back to JetStream when it returns. Logs and the gauge
jetjobs_worker_dispatch_mode on /metrics say which.

Signals: SIGTERM or SIGINT stops taking work, lets running jobs finish within --grace and
releases the rest to pending; a second signal releases them at once.

Exit codes: 0 done, 1 a job failed (without --suppress-errors) or the worker failed,
2 bad usage or configuration.

Configuration keys the worker uses (JSON file, see --config): mysql.dsn and
mysql.max_open_conns (its MySQL pool, default 8); nats.url, nats.credentials, nats.tls_*,
nats.subject_prefix, nats.ack_wait; jobs.lease_duration (heartbeats every lease_duration/3),
jobs.max_attempts, jobs.retry_backoff, jobs.version_method, jobs.keep_completed;
jobs.record_batch (most outcomes per recording transaction, default 500) and
jobs.record_delay (longest a finished job waits for others to join its batch, default 0.002 s).

Environment: JETJOBS_CONFIG, JETJOBS_MYSQL_DSN, JETJOBS_NATS_URL; GOGC (default 400 here). Telemetry:
OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER (otlp, console, none; default none) with the
standard OTEL_EXPORTER_OTLP_* settings; the scheduler's trace context reaches each job's spans.

Flags:
`

const (
	// serviceName is the telemetry's service.name (OTEL_SERVICE_NAME overrides it).
	serviceName = "jetjobs-worker"
	// telemetryShutdownTimeout bounds the flush of traces and metrics at exit.
	telemetryShutdownTimeout = 5 * time.Second
)

type options struct {
	exec           string
	persistent     bool
	startTimeout   time.Duration
	dataJoint      []string
	timeout        time.Duration
	concurrency    int
	maxCalls       int
	suppressErrors bool
	priority       int
	maxPriority    *int
	progress       bool
	once           bool
	grace          time.Duration
	output         string
	logLevel       string
	metricsAddr    string
	handler        worker.Handler // a Go handler instead of exec's
}

// Main runs the worker program and returns its exit code.
func Main(args []string, stdout, stderr io.Writer) int { return MainWith(nil, args, stdout, stderr) }

// MainWith is Main with a Go handler instead of --exec's command, for programs that embed the
// worker program (the benchmark's no-op worker); a nil handler means --exec's.
func MainWith(handler worker.Handler, args []string, stdout, stderr io.Writer) int {
	cli.TuneGC()
	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgFlags := config.AddFlags(fs)
	cfgFlags.AddDispatchFlag(fs)
	o := options{handler: handler}
	fs.StringVar(&o.exec, "exec", "", "handler command line, run once per job: directly, or by /bin/sh -c when it uses shell syntax (required unless --datajoint or tables[].datajoint)")
	fs.BoolVar(&o.persistent, "persistent", false, "start the --exec handler once per slot and keep it, sending it one job after another (docs/handler-protocol.md)")
	fs.DurationVar(&o.startTimeout, "start-timeout", worker.PersistentStartTimeoutDefault, "how long a persistent handler may take to start (until its handshake)")
	fs.StringSliceVar(&o.dataJoint, "datajoint", nil, "compute the tables with DataJoint's make() of this class, module.Class (repeatable): runs \"python3 -m jetjobs.datajoint module.Class\" persistently")
	fs.DurationVar(&o.timeout, "timeout", 0, "kill a job's handler (its whole process group) after this long and record an error; 0 = no limit")
	fs.IntVarP(&o.concurrency, "concurrency", "j", worker.ConcurrencyDefault, "jobs run at once (populate's processes)")
	fs.IntVar(&o.maxCalls, "max-calls", 0, "stop after this many jobs finished (succeeded, failed or retried); 0 = no limit")
	fs.BoolVar(&o.suppressErrors, "suppress-errors", false, "keep going after a job fails; without it the worker records the error, finishes running jobs and exits 1")
	fs.IntVar(&o.priority, "priority", 0, "take only jobs with priority <= N (lower is more urgent); unset = all")
	fs.BoolVar(&o.progress, "progress", false, "show a progress bar on a terminal (stderr)")
	fs.BoolVar(&o.once, "once", false, "exit when no due job is left and none is running")
	fs.DurationVar(&o.grace, "grace", worker.GraceDefault, "on SIGTERM/SIGINT, how long running jobs may finish before they are released to pending")
	fs.StringVarP(&o.output, "output", "o", "text", "summary format at exit: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus /metrics and /healthz over HTTP on this address, e.g. 127.0.0.1:9465; empty = no HTTP server")
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return cli.ExitOK
		}
		return cli.ExitUsage
	}
	if fs.Changed("priority") {
		o.maxPriority = &o.priority
	}
	log, err := cli.NewLogger(stderr, o.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return cli.ExitUsage
	}
	if err := run(fs, cfgFlags, o, log, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return cli.ExitCode(err)
	}
	return cli.ExitOK
}

func run(fs *pflag.FlagSet, cfgFlags *config.Flags, o options, log *slog.Logger, stdout, stderr io.Writer) error {
	if o.output != "text" && o.output != "json" {
		return cli.Usagef("--output %q: want text or json", o.output)
	}
	if o.concurrency < 1 || o.maxCalls < 0 {
		return cli.Usagef("--concurrency must be at least 1 and --max-calls not negative")
	}
	cfg, err := cfgFlags.Load(nil, fs.Args())
	if err != nil {
		return err
	}
	tables, err := cli.Tables(cfg, fs.Args())
	if err != nil {
		return err
	}
	plan, err := planHandlers(cfg, tables, o)
	if err != nil {
		return err
	}

	// Signals are handled from the start: a stop while MySQL or NATS are still being waited
	// for ends the program cleanly. The first stops taking work; the second (or the end of
	// the grace period) releases the jobs still running.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stopCtx, abort := context.WithCancel(context.Background())
	defer abort()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		if sig, ok := <-sigs; ok {
			log.Info("stopping: no new jobs; running jobs may finish", "signal", sig.String(), "grace", o.grace)
			stop()
		}
		if sig, ok := <-sigs; ok {
			log.Warn("stopping now: releasing running jobs", "signal", sig.String())
			abort()
		}
	}()

	db, err := cli.OpenDB(ctx, cfg.MySQL, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer db.Close()
	dispatch := worker.Dispatch(cfg.Dispatch)
	var nc *nats.Conn
	if dispatch != worker.DispatchMySQL {
		connect := cli.ConnectOptions(cfg, "jetjobs-worker", log)
		// With auto, an unreachable NATS server is no reason to wait: the worker claims from
		// MySQL until the connection made in the background is up.
		connect.Background = dispatch == worker.DispatchAuto
		nc, err = queue.Connect(ctx, connect)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		defer cli.Drain(nc, log)
	}

	tel, err := tracing.Setup(ctx, tracing.Options{ServiceName: serviceName, Prometheus: o.metricsAddr != "", SetGlobal: true})
	if err != nil {
		return cli.Usagef("telemetry: %v", err)
	}
	defer shutdownTelemetry(tel, log)
	if o.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", tel.MetricsHandler())
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
		srv := cli.NewHTTPServer(o.metricsAddr, mux, log)
		if err := srv.Start(ctx); err != nil {
			return err
		}
		defer srv.Stop()
	}

	opts := workerOptions(cfg, tables, o, log)
	opts.DB, opts.NATS, opts.Telemetry, opts.Dispatch = db, nc, tel, dispatch
	var bar *progressBar
	if o.progress && isTerminal(stderr) {
		bar = newProgressBar(ctx, db, cfg, tables, stderr)
		opts.OnFinish = bar.count
		// Log lines go above the bar, not into it.
		opts.Logger = slog.New(slog.NewTextHandler(bar, &slog.HandlerOptions{Level: logLevel(log)}))
	}
	handler, persistent := plan.build(o, opts.Logger)
	defer stopAll(persistent)
	opts.Handler = handler
	w, err := worker.New(opts)
	if err != nil {
		return err
	}
	if err := start(ctx, persistent, o.concurrency); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := w.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	select {
	case <-w.Done():
	case <-ctx.Done():
		grace := time.AfterFunc(o.grace, abort)
		w.Stop(stopCtx)
		grace.Stop()
	}
	summary, runErr := w.Summary()
	if bar != nil {
		bar.close()
	}
	if err := printSummary(stdout, o.output, summary); err != nil {
		return err
	}
	if errors.Is(runErr, worker.ErrJobFailed) {
		return fmt.Errorf("%w (use --suppress-errors to keep going)", runErr)
	}
	return runErr
}

// workerOptions translates the configuration and the flags into the worker's options.
func workerOptions(cfg config.Config, tables []string, o options, log *slog.Logger) worker.Options {
	opts := worker.Options{
		Concurrency:    o.concurrency,
		MaxCalls:       o.maxCalls,
		SuppressErrors: o.suppressErrors,
		MaxPriority:    o.maxPriority,
		Once:           o.once,
		Grace:          o.grace,
		MaxAttempts:    cfg.Jobs.MaxAttempts,
		RetryBackoff:   cfg.Jobs.RetryBackoff.Duration(),
		RecordBatch:    cfg.Jobs.RecordBatch,
		RecordDelay:    cfg.Jobs.RecordDelay.Duration(),
		NoEvents:       !cfg.Jobs.Events,
		Jobs:           cli.JobsOptions(cfg, cli.Identity(cfg)),
		Queue:          cli.QueueConfig(cfg),
		Logger:         log,
	}
	for _, name := range tables {
		entry, _ := cfg.Table(name)
		opts.Tables = append(opts.Tables, worker.Table{Name: name, KeySource: entry.KeySource})
	}
	return opts
}

func printSummary(w io.Writer, format string, s worker.Summary) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	fmt.Fprintf(w, "success_count: %d\n", s.SuccessCount)
	fmt.Fprintf(w, "error_list: %d\n", len(s.ErrorList))
	for _, e := range s.ErrorList {
		key, _ := json.Marshal(e.Key)
		fmt.Fprintf(w, "  %s %s: %s\n", e.Table, key, firstLine(e.Error))
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func logLevel(l *slog.Logger) slog.Level {
	for _, lvl := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if l.Enabled(context.Background(), lvl) {
			return lvl
		}
	}
	return slog.LevelError
}

func shutdownTelemetry(tel *tracing.Telemetry, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), telemetryShutdownTimeout)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		log.Warn("flushing telemetry failed", "err", err)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
