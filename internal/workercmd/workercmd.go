// Package workercmd is the worker program: flags, wiring, signals and the summary. The work
// itself is done by package worker.
package workercmd

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/worker"
)

const usage = `worker: take due jobs from NATS JetStream, reserve them in MySQL, run a handler, record the outcome.

Usage:
  worker [flags] --exec CMD [schema.table ...]

Tables come from the arguments, or from "tables" in the config file.

The --exec handler protocol: the key arrives as JSON on stdin and as JETJOBS_KEY_<COLUMN>
variables, with JETJOBS_TABLE, JETJOBS_ATTEMPT and TRACEPARENT. Exit 0 = success (a JSON
object or array on stdout is inserted as target rows in the completion transaction); exit 75 =
retryable failure (retried with backoff up to jobs.max_attempts); any other exit = error, with
the tail of stderr as the message and all of stderr as the stack.

Signals: SIGTERM or SIGINT stops taking work, lets running jobs finish within --grace and
releases the rest to pending; a second signal releases them at once.

Exit codes: 0 done, 1 a job failed (without --suppress-errors) or the worker failed,
2 bad usage or configuration.

Environment: JETJOBS_CONFIG, JETJOBS_MYSQL_DSN, JETJOBS_NATS_URL. Telemetry:
OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER (otlp, console, none; default none) with the
standard OTEL_EXPORTER_OTLP_* settings; the scheduler's trace context reaches each job's spans.

Flags:
`

// httpTimeout bounds the metrics server's reads and shutdown, and the telemetry flush.
const httpTimeout = 5 * time.Second

type options struct {
	exec           string
	timeout        time.Duration
	concurrency    int
	maxCalls       int
	suppressErrors bool
	priority       int
	progress       bool
	once           bool
	grace          time.Duration
	output         string
	logLevel       string
	metricsAddr    string
}

// Main runs the worker program and returns its exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgFlags := config.AddFlags(fs)
	var o options
	fs.StringVar(&o.exec, "exec", "", "handler command line, run once per job: directly, or by /bin/sh -c when it uses shell syntax (required)")
	fs.DurationVar(&o.timeout, "timeout", 0, "kill a job's handler (its whole process group) after this long and record an error; 0 = no limit")
	fs.IntVarP(&o.concurrency, "concurrency", "j", worker.DefaultConcurrency, "jobs run at once (populate's processes)")
	fs.IntVar(&o.maxCalls, "max-calls", 0, "stop after this many jobs finished (succeeded, failed or retried); 0 = no limit")
	fs.BoolVar(&o.suppressErrors, "suppress-errors", false, "keep going after a job fails; without it the worker records the error, finishes running jobs and exits 1")
	fs.IntVar(&o.priority, "priority", 0, "take only jobs with priority <= N (lower is more urgent); unset = all")
	fs.BoolVar(&o.progress, "progress", false, "show a progress bar on a terminal (stderr)")
	fs.BoolVar(&o.once, "once", false, "exit when no due job is left and none is running")
	fs.DurationVar(&o.grace, "grace", worker.DefaultGrace, "on SIGTERM/SIGINT, how long running jobs may finish before they are released to pending")
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
	log, err := newLogger(stderr, o.logLevel)
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
	if o.exec == "" {
		return cli.Usagef("--exec is required: the command that computes one job")
	}
	if o.output != "text" && o.output != "json" {
		return cli.Usagef("--output %q: want text or json", o.output)
	}
	cfg, err := cfgFlags.Load(nil, fs.Args())
	if err != nil {
		return err
	}
	tables, err := cli.Tables(cfg, fs.Args())
	if err != nil {
		return err
	}
	var maxPriority *int
	if fs.Changed("priority") {
		maxPriority = &o.priority
	}

	// Signals are handled from the start: a stop while MySQL or NATS are still being waited
	// for ends the program cleanly.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var abort atomic.Pointer[worker.Worker]
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go handleSignals(sigs, stop, &abort, log)
	db, err := cli.OpenDB(ctx, cfg.MySQL.DSN, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer db.Close()
	nc, err := queue.Connect(ctx, queue.ConnectOptions{
		URL: cfg.NATS.URL, Credentials: cfg.NATS.Credentials,
		TLSCA: cfg.NATS.TLSCA, TLSCert: cfg.NATS.TLSCert, TLSKey: cfg.NATS.TLSKey,
		Name: "jetjobs-worker", Logger: log,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer nc.Drain()

	tel, err := tracing.Setup(ctx, tracing.Options{ServiceName: "jetjobs-worker", Prometheus: o.metricsAddr != "", SetGlobal: true})
	if err != nil {
		return cli.Usagef("telemetry: %v", err)
	}
	defer shutdownTelemetry(tel, log)
	if o.metricsAddr != "" {
		stopHTTP, err := serveMetrics(o.metricsAddr, tel.MetricsHandler(), log)
		if err != nil {
			return err
		}
		defer stopHTTP()
	}

	opts := worker.Options{
		DB: db, NATS: nc, Config: cfg, Tables: tables,
		Handler:     worker.Exec(worker.ExecOptions{Command: o.exec, Timeout: o.timeout}),
		Concurrency: o.concurrency, MaxCalls: o.maxCalls, SuppressErrors: o.suppressErrors,
		MaxPriority: maxPriority, Once: o.once, Grace: o.grace, Logger: log,
		Telemetry: tel,
	}
	var bar *progressBar
	if o.progress && isTerminal(stderr) {
		bar = newProgressBar(ctx, db, cfg, tables, stderr)
		opts.OnFinish = bar.count
		// Log lines go above the bar, not into it.
		opts.Logger = slog.New(slog.NewTextHandler(bar, &slog.HandlerOptions{Level: logLevel(log)}))
	}
	w, err := worker.New(opts)
	if err != nil {
		return err
	}
	abort.Store(w)
	summary, runErr := w.Run(ctx)
	if bar != nil {
		bar.close()
	}
	if err := printSummary(stdout, o.output, summary); err != nil {
		return err
	}
	return runErr
}

// handleSignals stops taking work on the first SIGTERM/SIGINT and aborts the worker (once
// it exists) on the second.
func handleSignals(sigs <-chan os.Signal, stop context.CancelFunc, w *atomic.Pointer[worker.Worker], log *slog.Logger) {
	sig := <-sigs
	log.Info("stopping: no new jobs; running jobs may finish", "signal", sig.String())
	stop()
	sig = <-sigs
	log.Warn("stopping now: releasing running jobs", "signal", sig.String())
	if w := w.Load(); w != nil {
		w.Abort()
	}
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

// progressBar shows the jobs finished (succeeded or failed) out of those due or running
// when the worker started; it is also the log writer, so log lines appear above the bar.
type progressBar struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
	out io.Writer
}

func newProgressBar(ctx context.Context, db *sql.DB, cfg config.Config, tables []string, w io.Writer) *progressBar {
	total := int64(-1) // unknown: a spinner
	for _, name := range tables {
		jobs, err := cli.OpenJobs(ctx, db, cfg, name, jobsdb.Identity{})
		if err != nil {
			total = -1
			break
		}
		p, err := jobs.Progress(ctx)
		if err != nil {
			total = -1
			break
		}
		total = max(total, 0) + p.Pending + p.Reserved
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("jobs"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("jobs"),
		progressbar.OptionThrottle(100*time.Millisecond),
	)
	return &progressBar{bar: bar, out: w}
}

// count advances the bar for jobs that finished; retried and released jobs come back.
func (p *progressBar) count(e worker.Event) {
	if e.Outcome == worker.OutcomeSucceeded || e.Outcome == worker.OutcomeFailed {
		p.mu.Lock()
		p.bar.Add(1)
		p.mu.Unlock()
	}
}

func (p *progressBar) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar.Clear()
	n, err := p.out.Write(b)
	p.bar.RenderBlank()
	return n, err
}

// close draws the final state and ends the bar's line, so the summary starts on its own.
func (p *progressBar) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bar.RenderBlank()
	p.bar.Exit()
	fmt.Fprintln(p.out)
}

func logLevel(l *slog.Logger) slog.Level {
	for _, lvl := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if l.Enabled(context.Background(), lvl) {
			return lvl
		}
	}
	return slog.LevelError
}

// serveMetrics serves /metrics and /healthz on addr until the returned stop is called.
func serveMetrics(addr string, metrics http.Handler, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, cli.Usagef("--metrics-addr %s: %v", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: httpTimeout}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), httpTimeout)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

func shutdownTelemetry(tel *tracing.Telemetry, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), httpTimeout)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		log.Warn("flushing telemetry failed", "err", err)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, cli.Usagef("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
