package schedulercmd

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

// defaultLogLevel is --log-level's default.
const defaultLogLevel = "info"

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
	fs.StringVar(&f.embeddedListen, "embedded-nats-listen", queue.DefaultEmbeddedListen,
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
  GOGC               Go's garbage collector target (default 400 here, not Go's 100)

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
lost); nats.url, nats.credentials, nats.tls_*, nats.subject_prefix, nats.replicas, nats.ack_wait;
nats.storage (file or memory, default file: see the README's Benchmarks) and
nats.dispatch_window (most messages waiting in a table's stream, default 20000; within it the
window follows the workers' slots); mysql.dsn and mysql.max_open_conns (default 8).

Exit status: 0 after a clean stop, 1 on failure, 2 on bad usage or configuration.
`, fs.FlagUsagesWrapped(110), config.EnvConfig, config.EnvMySQLDSN, config.EnvNATSURL,
		tracing.EnvTracesExporter, tracing.EnvMetricsExporter, serviceName, tracing.EnvSDKDisabled, tracing.EnvTraceFile,
		tracing.EnvMetricsExporter, config.EnvNATSURL)
}
