// Package schedulercmd is the scheduler program: flags, configuration, the embedded NATS
// server, the wiring of the scheduler service (package internal/scheduler) and its HTTP
// server, signals and exit codes.
package schedulercmd

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/internal/scheduler"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/startstop"
	"github.com/jetjobs/jetjobs/tracing"
	"github.com/jetjobs/jetjobs/worker"
)

const (
	// serviceName is the telemetry's service.name (OTEL_SERVICE_NAME overrides it) and the
	// name of the NATS connection.
	serviceName = "jetjobs-scheduler"
	// telemetryShutdownTimeout bounds the flush of traces and metrics at exit.
	telemetryShutdownTimeout = 5 * time.Second
)

// Main runs the scheduler program until SIGTERM or SIGINT and returns its exit code; a second
// signal kills the process the default way. It is the process's main: it routes the MySQL
// driver's own log through the program's logger.
func Main(args []string, stdout, stderr io.Writer) int {
	cli.TuneGC()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal now kills
	}()
	return run(ctx, args, program{stdout: stdout, stderr: stderr, getenv: os.Getenv, routeDriverLog: true})
}

// program is what run takes from its process.
type program struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// routeDriverLog sends the MySQL driver's messages (a connection lost mid-packet, say)
	// through the program's logger. The driver's logger is a process global, so only Main
	// sets it, not the tests that run the program in parallel.
	routeDriverLog bool
}

// run is the whole program until ctx ends; it returns the exit code.
func run(ctx context.Context, args []string, p program) int {
	fs, f := newFlagSet(p.stderr)
	fs.Usage = func() { usage(p.stderr, fs) }
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(p.stderr, "scheduler: %v\nRun scheduler --help for usage.\n", err)
		return cli.ExitUsage
	}
	if f.help {
		usage(p.stdout, fs)
		return cli.ExitOK
	}
	log, err := cli.NewLogger(p.stderr, f.logLevel)
	if err == nil {
		if p.routeDriverLog {
			cli.RouteDriverLog(log)
		}
		err = serve(ctx, fs, f, log, p.getenv)
	}
	if err != nil {
		fmt.Fprintf(p.stderr, "scheduler: %v\n", err)
	}
	return cli.ExitCode(err)
}

// serve loads the configuration, builds the parts, schedules until ctx ends and shuts
// everything down in order.
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
	tel, err := setupTelemetry(ctx, f, getenv)
	if err != nil {
		return err
	}
	// Last, after everything else has stopped: flush the spans and metrics they recorded.
	defer shutdownTelemetry(tel, log)

	dispatch := worker.Dispatch(cfg.Dispatch)
	var connect queue.ConnectOptions
	if dispatch != worker.DispatchMySQL {
		var stopNATS func()
		connect, stopNATS, err = natsServer(cfg, f, log)
		if err != nil {
			return err
		}
		defer stopNATS()
	} else if f.embedded {
		log.Warn("--embedded-nats: ignored with dispatch=mysql, which uses no NATS")
	}
	db, err := cli.OpenDB(ctx, cfg.MySQL, log)
	if err != nil {
		return unlessStopped(ctx, err)
	}
	defer db.Close()
	var nc *nats.Conn
	if dispatch != worker.DispatchMySQL {
		// With auto, an unreachable NATS server is no reason to wait: refreshing and
		// recovering need MySQL only, and publishing starts once the connection made in the
		// background is up.
		connect.Background = dispatch == worker.DispatchAuto
		nc, err = queue.Connect(ctx, connect)
		if err != nil {
			return unlessStopped(ctx, fmt.Errorf("connect to NATS at %s: %w", connect.URL, err))
		}
		defer cli.Drain(nc, log)
	}

	s := scheduler.New(options(cfg, tables, db, nc, log, tel))
	return programError(schedule(ctx, s, f.metricsAddr, log), cfg)
}

// unlessStopped is err, or nil when ctx ended: the program was stopped while it waited.
func unlessStopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// schedule runs the scheduler, and the HTTP server when metricsAddr is set, until ctx ends or
// the scheduler stops by itself (a table that cannot be scheduled), then stops both.
func schedule(ctx context.Context, s *scheduler.Scheduler, metricsAddr string, log *slog.Logger) error {
	var services []startstop.Service
	if metricsAddr != "" {
		services = append(services, cli.NewHTTPServer(metricsAddr, s.Handler(), log))
	}
	services = append(services, s)
	if err := startstop.StartAll(ctx, services...); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-s.Stopped():
	}
	startstop.StopAll(services...)
	return s.Err()
}

// options translate the configuration into the scheduler's options.
func options(cfg config.Config, tables []string, db *sql.DB, nc *nats.Conn, log *slog.Logger, tel *tracing.Telemetry) scheduler.Options {
	specs := make([]scheduler.Table, len(tables))
	for i, name := range tables {
		entry, _ := cfg.Table(name)
		specs[i] = scheduler.Table{Name: name, KeySource: entry.KeySource, DependsOn: entry.DependsOn}
	}
	priority := cfg.Jobs.DefaultPriority
	return scheduler.Options{
		Tables:   specs,
		DB:       db,
		NATS:     nc,
		Dispatch: worker.Dispatch(cfg.Dispatch),
		Jobs:     cli.JobsOptions(cfg, cli.Identity(cfg)),
		Queue:    cli.QueueConfig(cfg),
		Refresh: scheduler.RefreshOptions{
			Disabled:     !cfg.Jobs.AutoRefresh,
			Interval:     cfg.Jobs.RefreshInterval.Duration(),
			Priority:     &priority,
			StaleTimeout: cfg.Jobs.StaleTimeout.Duration(),
		},
		Events: scheduler.EventOptions{
			Disabled: !cfg.Jobs.Events,
			Coalesce: cfg.Jobs.EventsCoalesce.Duration(),
		},
		OrphanTimeout:  cfg.Jobs.OrphanTimeout.Duration(),
		DispatchWindow: cfg.NATS.DispatchWindow,
		Logger:         log,
		Metrics:        tel.MetricsHandler(),
		Telemetry:      tel,
	}
}

// programError turns the scheduler's errors about its tables into usage errors (exit code 2),
// adding the configured tables to an unknown table's.
func programError(err error, cfg config.Config) error {
	var terr *scheduler.TableError
	switch {
	case errors.Is(err, jobsdb.ErrUnknownTable):
		return &cli.UsageError{Err: fmt.Errorf("%w; configured tables: %s", err, strings.Join(cfg.TableNames(), ", "))}
	case errors.As(err, &terr), errors.Is(err, scheduler.ErrNoTables):
		return &cli.UsageError{Err: err}
	}
	return err
}

func setupTelemetry(ctx context.Context, f *flags, getenv func(string) string) (*tracing.Telemetry, error) {
	tel, err := tracing.Setup(ctx, tracing.Options{
		ServiceName: serviceName,
		Prometheus:  f.metricsAddr != "",
		SetGlobal:   true,
		Getenv:      getenv,
	})
	switch {
	case errors.Is(err, tracing.ErrUnsupported):
		return nil, &cli.UsageError{Err: err}
	case err != nil:
		return nil, fmt.Errorf("set up telemetry: %w", err)
	}
	return tel, nil
}

func shutdownTelemetry(tel *tracing.Telemetry, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), telemetryShutdownTimeout)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		log.Warn("telemetry not flushed; some spans or metrics are lost", "err", err)
	}
}
