// Command scheduler runs the jetjobs scheduler: for every target table, one scheduler among
// all those running leads (a MySQL named lock), refreshes the table's jobs from its key
// source, recovers expired leases and publishes due jobs to NATS JetStream for the workers.
//
// Run "scheduler --help" for the flags and environment variables.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/internal/scheduler"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

const (
	defaultEmbeddedListen = "127.0.0.1:4222"
	defaultLogLevel       = "info"
	// drainTimeout bounds the wait for the NATS connection to drain at shutdown.
	drainTimeout = 5 * time.Second
	// serviceName is the telemetry's service.name (OTEL_SERVICE_NAME overrides it).
	serviceName = "jetjobs-scheduler"
	// telemetryShutdownTimeout bounds the flush of traces and metrics at exit.
	telemetryShutdownTimeout = 5 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, a second one kills the process the default way.
		<-ctx.Done()
		stop()
	}()
	routeDriverLog = true
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// routeDriverLog makes run send the MySQL driver's own messages (a connection lost
// mid-packet, say) through the program's logger. The driver's logger is a process global,
// so only main sets it, not the tests that call run in parallel.
var routeDriverLog bool

// flags are the scheduler's own flags, besides config.AddFlags'.
type flags struct {
	config         *config.Flags
	embedded       bool
	embeddedListen string
	embeddedStore  string
	metricsAddr    string
	logLevel       string
	help           bool
}

func newFlagSet(stderr io.Writer) (*pflag.FlagSet, *flags) {
	fs := pflag.NewFlagSet("scheduler", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	f := &flags{config: config.AddFlags(fs)}
	// The scheduler's default differs from the other programs': no URL means an embedded server.
	fs.Lookup("nats").Usage = "NATS server URL(s), comma-separated (env " + config.EnvNATSURL +
		"); when none is given here, in the environment or in the config file, the scheduler runs an embedded server (see --embedded-nats)"
	fs.BoolVar(&f.embedded, "embedded-nats", false,
		"run an in-process NATS server with JetStream even when a NATS URL is configured (without this flag it runs only when no URL is given by --nats, "+config.EnvNATSURL+" or the config file's nats.url)")
	fs.StringVar(&f.embeddedListen, "embedded-nats-listen", defaultEmbeddedListen,
		"host:port on loopback the embedded NATS server listens on, for workers and jobsctl on this machine (port 0 picks a free one); it has no authentication, so other hosts are refused")
	fs.StringVar(&f.embeddedStore, "embedded-nats-store", defaultStoreDir(),
		"JetStream store directory of the embedded NATS server; the default is under the user cache directory ($XDG_CACHE_HOME or ~/.cache on Linux, ~/Library/Caches on macOS), since MySQL holds the truth and the scheduler republishes what a lost store held")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "",
		"host:port of the HTTP server for /healthz (alive), /readyz (MySQL, NATS and leadership state) and /metrics (Prometheus text format); empty: no HTTP server")
	fs.StringVar(&f.logLevel, "log-level", defaultLogLevel, "log level: debug, info, warn or error (logs go to stderr)")
	fs.BoolVarP(&f.help, "help", "h", false, "show this help and exit")
	return fs, f
}

// defaultStoreDir is <user cache dir>/jetjobs/nats, e.g. ~/.cache/jetjobs/nats on Linux.
func defaultStoreDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "jetjobs", "nats")
}

func usage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, `Usage: scheduler [flags] [schema.table ...]

The jetjobs scheduler. For each target table (the arguments, or the config file's "tables"),
one scheduler among all those running leads (a MySQL GET_LOCK per table; standbys take over
within seconds when the leader stops or dies). The leader declares the table's jobs table,
refreshes it from the key source every jobs.refresh_interval (when jobs.auto_refresh is on),
recovers expired leases every jobs.lease_duration/4, and publishes due jobs to NATS
JetStream: new ones at once, delayed and retried ones when they become due, and again any
whose message was lost. Stop it with SIGTERM or SIGINT.

Flags:
%s
Environment (flags override the environment, which overrides the config file):
  %-18s configuration file, as --config
  %-18s MySQL DSN, as --mysql
  %-18s NATS URL, as --nats

Telemetry (OpenTelemetry; unset means none, so nothing is exported unless asked for):
  %-22s otlp, console or none (default none): the publish span of each job,
                         whose W3C trace context travels in the job's message so that the
                         workers' spans for the job join its trace
  %-22s otlp, console, prometheus or none (default none); prometheus serves
                         /metrics on OTEL_EXPORTER_PROMETHEUS_HOST:PORT (localhost:9464)
  The standard variables OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL (grpc or
  http/protobuf, the default), OTEL_SERVICE_NAME (default %s),
  OTEL_RESOURCE_ATTRIBUTES and the others are honoured; %s=true turns every
  exporter off; %s=<file> appends every ended span to <file> as a JSON line.
  With --metrics-addr, /metrics there serves the metrics in the Prometheus text format,
  whatever %s says: jetjobs_jobs_published_total,
  jetjobs_jobs_recovered_total, jetjobs_refresh_{added,removed}_total,
  jetjobs_refresh_duration_seconds, and the gauges jetjobs_queue_pending,
  jetjobs_queue_reserved and jetjobs_stream_depth (reported by a table's leader only).

NATS: with no URL from --nats, %s or nats.url in the config file (or with
--embedded-nats), the scheduler runs an embedded NATS server with JetStream on
--embedded-nats-listen, storing streams in --embedded-nats-store.

Configuration keys the scheduler uses (JSON file, see --config): tables (with optional
key_source); jobs.auto_refresh and jobs.refresh_interval (refresh schedule);
jobs.default_priority, jobs.stale_timeout and jobs.orphan_timeout (refresh arguments);
jobs.lease_duration (expired leases are recovered every lease_duration/4, and a due job is
republished when its message is older than 2·nats.ack_wait + lease_duration, in case it was
lost); nats.url, nats.credentials, nats.tls_*, nats.subject_prefix, nats.replicas, nats.ack_wait.

Exit status: 0 after a clean stop, 1 on failure, 2 on bad usage or configuration.
`, fs.FlagUsagesWrapped(110), config.EnvConfig, config.EnvMySQLDSN, config.EnvNATSURL,
		tracing.EnvTracesExporter, tracing.EnvMetricsExporter, serviceName, tracing.EnvSDKDisabled, tracing.EnvTraceFile,
		tracing.EnvMetricsExporter, config.EnvNATSURL)
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs, f := newFlagSet(stderr)
	fs.Usage = func() { usage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "scheduler: %v\nRun scheduler --help for usage.\n", err)
		return cli.ExitUsage
	}
	if f.help {
		usage(stdout, fs)
		return cli.ExitOK
	}
	level, err := parseLevel(f.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "scheduler: %v\n", err)
		return cli.ExitUsage
	}
	handler := slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	log := slog.New(handler)
	if routeDriverLog {
		_ = mysql.SetLogger(slog.NewLogLogger(handler.WithAttrs([]slog.Attr{slog.String("component", "mysql driver")}), slog.LevelWarn))
	}

	err = serve(ctx, fs, f, log, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "scheduler: %v\n", err)
	}
	return cli.ExitCode(err)
}

func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
}

// serve loads the configuration, builds the parts, runs the scheduler until ctx ends and
// shuts everything down in order.
func serve(ctx context.Context, fs *pflag.FlagSet, f *flags, log *slog.Logger, getenv func(string) string) error {
	cfg, err := f.config.Load(getenv, fs.Args())
	if err != nil {
		return err
	}
	tables, err := cli.Tables(cfg, fs.Args())
	if err != nil {
		return err
	}
	if err := cli.CheckDSN(cfg.MySQL.DSN); err != nil {
		return err
	}
	natsGiven, err := natsURLGiven(fs, getenv)
	if err != nil {
		return err
	}

	tel, err := tracing.Setup(ctx, tracing.Options{
		ServiceName: serviceName,
		Prometheus:  f.metricsAddr != "",
		SetGlobal:   true,
		Getenv:      getenv,
	})
	if errors.Is(err, tracing.ErrUnsupported) {
		return &cli.UsageError{Err: err}
	}
	if err != nil {
		return fmt.Errorf("set up telemetry: %w", err)
	}
	defer func() {
		// Last, after everything else has stopped: flush the spans and metrics they recorded.
		sctx, cancel := context.WithTimeout(context.Background(), telemetryShutdownTimeout)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			log.Warn("telemetry not flushed; some spans or metrics are lost", "err", err)
		}
	}()

	connect := queue.ConnectOptions{
		URL:         cfg.NATS.URL,
		Credentials: cfg.NATS.Credentials,
		TLSCA:       cfg.NATS.TLSCA,
		TLSCert:     cfg.NATS.TLSCert,
		TLSKey:      cfg.NATS.TLSKey,
		Name:        "jetjobs-scheduler",
		Logger:      log,
	}
	if f.embedded || !natsGiven {
		if f.embedded && natsGiven {
			log.Warn("--embedded-nats: ignoring the configured NATS URL", "url", cfg.NATS.URL)
		}
		if err := checkListen(f.embeddedListen); err != nil {
			return err
		}
		if f.embeddedStore == "" {
			return cli.Usagef("--embedded-nats-store: no user cache directory to default to; give a directory")
		}
		if err := os.MkdirAll(f.embeddedStore, 0o700); err != nil {
			return cli.Usagef("--embedded-nats-store: %v", err)
		}
		srv, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: f.embeddedListen, StoreDir: f.embeddedStore})
		if err != nil {
			return fmt.Errorf("start the embedded NATS server on %s: %w", f.embeddedListen, err)
		}
		defer func() {
			srv.Shutdown()
			log.Info("embedded NATS server stopped")
		}()
		log.Info("embedded NATS server started", "url", srv.ClientURL(), "store", f.embeddedStore)
		connect = queue.ConnectOptions{URL: srv.ClientURL(), Name: connect.Name, Logger: log}
	}

	db, err := cli.OpenDB(ctx, cfg.MySQL.DSN, log)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting for MySQL
		}
		return err
	}
	defer db.Close()

	nc, err := queue.Connect(ctx, connect)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("connect to NATS at %s: %w", connect.URL, err)
	}
	defer drain(nc, log)

	s := scheduler.New(scheduler.Options{
		Config:    cfg,
		Tables:    tables,
		DB:        db,
		NATS:      nc,
		Identity:  cli.Identity(cfg),
		Logger:    log,
		HTTPAddr:  f.metricsAddr,
		Metrics:   tel.MetricsHandler(),
		Telemetry: tel,
	})
	return s.Run(ctx)
}

// natsURLGiven reports whether a NATS URL came from the flag, the environment or the config
// file (config.Load fills in the default otherwise).
func natsURLGiven(fs *pflag.FlagSet, getenv func(string) string) (bool, error) {
	if fs.Lookup("nats").Value.String() != "" || getenv(config.EnvNATSURL) != "" {
		return true, nil
	}
	path := fs.Lookup("config").Value.String()
	if path == "" {
		path = getenv(config.EnvConfig)
	}
	if path == "" {
		return false, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("%w: read config file: %v", config.ErrInvalid, err)
	}
	var file struct {
		NATS struct {
			URL string `json:"url"`
		} `json:"nats"`
	}
	if err := json.Unmarshal(data, &file); err != nil {
		return false, fmt.Errorf("config file %s: %w: %v", path, config.ErrInvalid, err)
	}
	return file.NATS.URL != "", nil
}

// checkListen validates --embedded-nats-listen: host:port on loopback, since the embedded
// server has no authentication.
func checkListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return cli.Usagef("--embedded-nats-listen %q: want host:port, e.g. %s: %v", addr, defaultEmbeddedListen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return cli.Usagef("--embedded-nats-listen %q: the embedded NATS server has no authentication, so it listens on loopback only (127.0.0.1, ::1 or localhost); for workers on other machines run nats-server and give its URL with --nats", addr)
	}
	return nil
}

// drain flushes and closes the NATS connection, waiting up to drainTimeout.
func drain(nc *nats.Conn, log *slog.Logger) {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	deadline := time.Now().Add(drainTimeout)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !nc.IsClosed() {
		log.Warn("NATS connection did not drain in time; closing it")
		nc.Close()
	}
}
