package scheduler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/tracing"
)

// Defaults of Options.
const (
	// PollIntervalDefault caps the sleep between two dispatch passes of a table. jobsctl,
	// DataJoint and workers' retries add due jobs without telling the scheduler, so this is
	// the worst-case delay before such a job is published; a pass costs two indexed queries.
	PollIntervalDefault = time.Second
	// BatchSizeDefault is the number of jobs read, published and marked per dispatch batch.
	BatchSizeDefault = 1000
	// MaxBatchesPerPass bounds one dispatch pass (BatchSize·MaxBatchesPerPass jobs), so that
	// refresh and recovery still run while a huge backlog is being published.
	MaxBatchesPerPass = 100
	// DispatchWindowDefault bounds the messages waiting in a table's stream: the scheduler
	// publishes due jobs only while fewer wait, so a backlog of millions stays in MySQL (where
	// it is cheap) and JetStream holds what workers will take soon. Servers slow down with
	// tens of thousands of waiting messages (pulls walk them), and priorities stay sharp: a
	// newly due urgent job never queues behind a million published ones.
	DispatchWindowDefault = 20000
	// MinRecoverInterval is the shortest default recovery interval (lease_duration/4).
	MinRecoverInterval = time.Second
	// ErrorBackoffMaxDefault caps the exponential wait between retries of a failing step.
	ErrorBackoffMaxDefault = 10 * time.Second
	// PublishTimeoutDefault bounds one batch's publish, so a NATS server that stopped
	// answering cannot stall the loop.
	PublishTimeoutDefault = 30 * time.Second
	// ShutdownTimeout bounds the HTTP server's graceful shutdown.
	ShutdownTimeout = 5 * time.Second
	// StatementTimeout bounds each of the leader's statements but the refresh, so that a
	// server that stopped answering (a partition) cannot stall the table's loop.
	StatementTimeout = 30 * time.Second
	// RefreshTimeout bounds one refresh: a few set-based statements over the whole key
	// source (about 5 s per million keys on a small server).
	RefreshTimeout = 10 * time.Minute
	// LostAfter is how long after its publish a pending job whose priority has no message left
	// in the stream (none waiting, none delivered and unacked) is published again: its message
	// is gone (a deleted, purged or restarted stream; an ack that landed after the job went
	// back to pending). Only this scheduler publishes for the table, and it reads the stream
	// after its own publishes, so this only guards against an overlapping former leader.
	LostAfter = time.Second
	// GaugeIntervalDefault is how often a table's leader samples its jobs table and stream
	// for the gauges when metrics are on.
	GaugeIntervalDefault = 5 * time.Second
)

// Options configure a Scheduler. DB, NATS, Config and Tables are required; zero values of the
// others take the defaults.
type Options struct {
	// Config is the loaded configuration: the jobs section's intervals and timeouts, the nats
	// section's stream settings, and the tables' key sources.
	Config config.Config
	// Tables to schedule, as "schema.table" (cli.Tables).
	Tables []string
	// DB is the MySQL pool (jobsdb.Open). Each table's elector holds one connection of it
	// for its lock the whole time; Run raises a limited pool's MaxOpenConns by the number of
	// tables so that the locks never starve the queries.
	DB *sql.DB
	// NATS is the connection to the NATS server with JetStream (queue.Connect).
	NATS *nats.Conn
	// Identity is written into the jobs table handles (the scheduler reserves nothing).
	Identity jobsdb.Identity
	// Logger receives the service's logs; each table's carry a "table" attribute. Default
	// slog.Default().
	Logger *slog.Logger

	// HTTPAddr, when not empty, is where Run serves /healthz, /readyz and /metrics (see
	// Handler). Default: no HTTP server.
	HTTPAddr string
	// Metrics serves /metrics when not nil (Telemetry.MetricsHandler, the tracing package's
	// Prometheus handler). Nil: /metrics answers 404.
	Metrics http.Handler
	// Telemetry records traces and metrics (tracing.Setup). With tracing on, each job's
	// message gets a publish span whose W3C trace context travels in the message header, so
	// that the worker's spans for the job join its trace. With metrics on, the leader of a
	// table counts published, refreshed and recovered jobs and reports the table's pending and
	// reserved jobs and stream depth (see GaugeInterval). Default nil: disabled, at no cost
	// per job.
	Telemetry *tracing.Telemetry
	// GaugeInterval is how often the leader of a table samples its jobs table (a GROUP BY
	// status count) and its stream's consumers for the gauges; it also samples after each
	// refresh. The gauges report these samples: a collection (a Prometheus scrape) never
	// queries MySQL or NATS. Shorter is fresher but costs a count over the jobs table each
	// time. Only with metrics on. Default GaugeIntervalDefault (5 s).
	GaugeInterval time.Duration

	// PollInterval caps the sleep between dispatch passes. Default PollIntervalDefault (1 s).
	PollInterval time.Duration
	// RecoverInterval between recoveries of expired leases. Default jobs.lease_duration/4,
	// at least MinRecoverInterval: a crashed worker's job waits at most its lease plus this.
	RecoverInterval time.Duration
	// RedispatchAfter: a pending due job published longer ago than this is published again,
	// in case its message was lost (stream deleted or purged, message dropped). Default
	// 2·nats.ack_wait + jobs.lease_duration: by then a message that is still in the stream has
	// been delivered and its delivery timed out at least once, so republishing is rare and
	// cheap (a no-op while the message is still there).
	RedispatchAfter time.Duration
	// BatchSize of dispatch. Default BatchSizeDefault (1000).
	BatchSize int
	// DispatchWindow is the most messages left waiting in a table's stream before the
	// scheduler stops publishing until workers drain it. Default DispatchWindowDefault.
	DispatchWindow int
	// ErrorBackoffMax caps the wait between retries of a failing step. Default
	// ErrorBackoffMaxDefault (10 s).
	ErrorBackoffMax time.Duration
	// PublishTimeout bounds the publish of one batch. Default PublishTimeoutDefault (30 s).
	PublishTimeout time.Duration
	// Leadership configures the per-table electors (intervals; the logger is set per table).
	Leadership leadership.Config

	// OnDispatch, when not nil, is called after each dispatch pass that published or
	// re-confirmed at least one job, from the table's goroutine. For metrics and tests.
	OnDispatch func(DispatchEvent)
}

// DispatchEvent describes one dispatch pass of a table.
type DispatchEvent struct {
	Table string
	// Published messages are new in the stream.
	Published int
	// AlreadyQueued jobs still had their message in the stream (a republish that changed
	// nothing).
	AlreadyQueued int
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PollInterval <= 0 {
		o.PollInterval = PollIntervalDefault
	}
	if o.RecoverInterval <= 0 {
		o.RecoverInterval = max(o.Config.Jobs.LeaseDuration.Duration()/4, MinRecoverInterval)
	}
	if o.RedispatchAfter <= 0 {
		o.RedispatchAfter = 2*o.Config.NATS.AckWait.Duration() + o.Config.Jobs.LeaseDuration.Duration()
	}
	if o.BatchSize <= 0 {
		o.BatchSize = BatchSizeDefault
	}
	if o.DispatchWindow <= 0 {
		o.DispatchWindow = DispatchWindowDefault
	}
	if o.ErrorBackoffMax <= 0 {
		o.ErrorBackoffMax = ErrorBackoffMaxDefault
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = PublishTimeoutDefault
	}
	if o.GaugeInterval <= 0 {
		o.GaugeInterval = GaugeIntervalDefault
	}
	return o
}

// Scheduler schedules the jobs of a set of tables. Create it with New and run it with Run.
type Scheduler struct {
	opts   Options
	log    *slog.Logger
	tables []*table

	mu      sync.Mutex // guards running
	running bool
}

// New returns a scheduler for opts.Tables. It does not touch MySQL or NATS until Run.
func New(opts Options) *Scheduler {
	opts = opts.withDefaults()
	s := &Scheduler{opts: opts, log: opts.Logger}
	for _, name := range opts.Tables {
		log := opts.Logger.With("table", name)
		lcfg := opts.Leadership
		lcfg.Logger = log
		s.tables = append(s.tables, &table{
			s:       s,
			name:    name,
			log:     log,
			elector: leadership.New(opts.DB, leadership.LockName(name), lcfg),
		})
	}
	return s
}

// States returns each table's leadership state.
func (s *Scheduler) States() map[string]leadership.State {
	states := make(map[string]leadership.State, len(s.tables))
	for _, t := range s.tables {
		states[t.name] = t.elector.State()
	}
	return states
}

// Run schedules the tables until ctx ends, then stops every table loop (releasing the locks)
// and the HTTP server, and returns nil. It returns an error at once for bad options or a
// table that cannot be scheduled (unknown table, no key columns: a *cli.UsageError), and when
// the HTTP address cannot be listened on. MySQL and NATS errors are logged and retried.
func (s *Scheduler) Run(ctx context.Context) error {
	if err := s.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("scheduler: already running")
	}
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()

	if limit := s.opts.DB.Stats().MaxOpenConnections; limit > 0 {
		s.opts.DB.SetMaxOpenConns(limit + len(s.tables))
		defer s.opts.DB.SetMaxOpenConns(limit)
	}

	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, below
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	if s.opts.HTTPAddr != "" {
		ln, err := net.Listen("tcp", s.opts.HTTPAddr)
		if err != nil {
			return fmt.Errorf("listen for HTTP on %s: %w", s.opts.HTTPAddr, err)
		}
		srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
		s.log.Info("serving HTTP", "addr", ln.Addr().String())
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("HTTP server failed", "err", err)
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			sctx, scancel := context.WithTimeout(context.Background(), ShutdownTimeout)
			defer scancel()
			_ = srv.Shutdown(sctx)
		})
	}

	s.log.Info("scheduler starting", "tables", s.opts.Tables,
		"auto_refresh", s.opts.Config.Jobs.AutoRefresh,
		"refresh_interval", s.opts.Config.Jobs.RefreshInterval.Duration(),
		"recover_interval", s.opts.RecoverInterval,
		"redispatch_after", s.opts.RedispatchAfter,
		"poll_interval", s.opts.PollInterval)

	var (
		errMu sync.Mutex
		fatal []error
	)
	for _, t := range s.tables {
		wg.Go(func() {
			if err := t.run(ctx); err != nil {
				errMu.Lock()
				fatal = append(fatal, err)
				errMu.Unlock()
				cancel()
			}
		})
	}
	<-ctx.Done()
	wg.Wait()
	s.log.Info("scheduler stopped")
	return errors.Join(fatal...)
}

func (s *Scheduler) validate() error {
	switch {
	case s.opts.DB == nil:
		return errors.New("scheduler: Options.DB is nil")
	case s.opts.NATS == nil:
		return errors.New("scheduler: Options.NATS is nil")
	case len(s.tables) == 0:
		return cli.Usagef("no table to schedule: name tables as schema.table arguments or list them under \"tables\" in the config file")
	}
	seen := map[string]bool{}
	for _, t := range s.tables {
		if _, _, err := config.SplitTable(t.name); err != nil {
			return &cli.UsageError{Err: fmt.Errorf("table %w", err)}
		}
		if seen[t.name] {
			return cli.Usagef("table %s is listed twice", t.name)
		}
		seen[t.name] = true
	}
	return nil
}
