package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/mysqlserver"
	"github.com/jetjobs/jetjobs/jobsdb"
)

// Defaults of Options.
const (
	DefaultAssets      = "demo"
	DefaultBin         = "bin"
	DefaultState       = ".demo"
	DefaultDatabase    = "jetjobs_demo"
	DefaultConcurrency = 4
	// DefaultTimeout bounds a demo that ends by itself: the pipeline takes well under a
	// minute, so reaching it means something is broken.
	DefaultTimeout = 5 * time.Minute
)

// EnvExit set to 1 makes the demo end by itself once the pipeline is done, as it does when
// stdin is not a terminal.
const EnvExit = "JETJOBS_DEMO_EXIT"

// The files of the assets directory.
const (
	PipelineFile = "pipeline.sql" // the tables and keys, loaded into the demo database
	HandlerFile  = "analysis.sh"  // the worker's --exec handler
	ConfigFile   = "jetjobs.json" // the programs' configuration (JETJOBS_CONFIG)
)

const (
	target         = "__analysis" // the computed table of demo/pipeline.sql
	urgentSubject  = 8            // its sessions are queued at urgentPriority
	urgentPriority = 1

	pollInterval      = 200 * time.Millisecond
	readyTimeout      = 60 * time.Second // scheduler: NATS up and the first refresh done
	ctlTimeout        = "30s"            // jobsctl --timeout
	workerGrace       = 10 * time.Second // worker --grace
	workerStopWait    = workerGrace + 10*time.Second
	schedulerStopWait = 15 * time.Second
)

// ErrInterrupted is returned when the demo was stopped (Ctrl-C, SIGTERM) before the pipeline
// was done.
var ErrInterrupted = errors.New("interrupted before the pipeline was done")

// Options configure a demo run. Paths may be relative to the working directory, which is
// also the programs' working directory; the demo prints commands with them as given.
type Options struct {
	// Assets is the directory holding PipelineFile, HandlerFile and ConfigFile.
	// Default DefaultAssets.
	Assets string
	// Bin is the directory holding the scheduler, worker and jobsctl programs (make build).
	// Default DefaultBin.
	Bin string
	// State is the demo's own directory: logs, the NATS store, a private MySQL server's data.
	// It is created if missing and reused; what a run puts there is replaced by the next run.
	// Default DefaultState.
	State string
	// Database is the demo database, dropped and created again on every run.
	// Default DefaultDatabase.
	Database string
	// MySQLDSN is the server to use when one answers there (JETJOBS_MYSQL_DSN); empty means
	// config.DefaultMySQLDSN. When none answers, a private server is started.
	MySQLDSN string
	// Concurrency is the worker's --concurrency. Default DefaultConcurrency.
	Concurrency int
	// Exit ends the demo once the pipeline is done; otherwise the programs keep running until
	// the context is cancelled.
	Exit bool
	// Timeout bounds a run with Exit set. Default DefaultTimeout.
	Timeout time.Duration
	// Stdout receives the demo's report and the worker's summary; Stderr the worker's
	// progress bar and logs (the bar shows only when Stderr is a terminal).
	Stdout, Stderr io.Writer
}

// Demo is one run of the demo.
type Demo struct {
	opts Options

	mu     sync.Mutex
	procs  []*proc
	killed bool
}

// New returns a demo with the defaults of Options filled in.
func New(opts Options) *Demo {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&opts.Assets, DefaultAssets)
	def(&opts.Bin, DefaultBin)
	def(&opts.State, DefaultState)
	def(&opts.Database, DefaultDatabase)
	def(&opts.MySQLDSN, config.DefaultMySQLDSN)
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Stderr == nil {
		opts.Stderr = io.Discard
	}
	return &Demo{opts: opts}
}

// Kill kills every program the demo is running at once (a second Ctrl-C). Run then stops the
// MySQL server it started and returns.
func (d *Demo) Kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.killed = true
	for _, p := range d.procs {
		p.kill()
	}
}

var databaseName = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// Run runs the demo until the pipeline is done (with Options.Exit) or ctx is cancelled, and
// stops everything it started before it returns. A cancelled ctx before the pipeline was done
// returns ErrInterrupted.
func (d *Demo) Run(ctx context.Context) error {
	o := d.opts
	if !databaseName.MatchString(o.Database) {
		return fmt.Errorf("database name %q: use letters, digits and underscores", o.Database)
	}
	cfg, err := d.checkFiles()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.State, 0o755); err != nil {
		return fmt.Errorf("create the demo's directory: %w", err)
	}
	table := o.Database + "." + target
	d.say("jetjobs demo: DataJoint's pipeline subject -> session -> %s, computed by a scheduler and a worker.\n", target)

	// 1. MySQL.
	dsn, server, err := d.mysql()
	if server != nil {
		defer func() {
			d.say("stopping the private MySQL server (pid %d)\n", server.PID())
			server.Stop()
		}()
	}
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ErrInterrupted
	}

	// 2. The demo database.
	keys, err := d.createDatabase(ctx, dsn)
	if err != nil {
		return err
	}
	db, err := jobsdb.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	d.say("[2/6] database %s: %d subjects, %d sessions, so %d keys for %s (%s)\n",
		o.Database, count(ctx, db, o.Database, "subject"), keys, keys, table, filepath.Join(o.Assets, PipelineFile))

	natsPort, err := mysqlserver.FreePort()
	if err != nil {
		return err
	}
	metricsPort, err := mysqlserver.FreePort()
	if err != nil {
		return err
	}
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	env := childEnv(config.EnvConfig+"="+filepath.Join(o.Assets, ConfigFile), config.EnvMySQLDSN+"="+dsn)
	clientEnv := append(env[:len(env):len(env)], config.EnvNATSURL+"="+natsURL)
	d.say("      the commands below run with these settings:\n        %s\n", exportLine(o.Assets, dsn, natsURL))

	// 3. Urgent jobs first.
	d.say("[3/6] subject %d's sessions go first, at priority %d (lower is more urgent; the default is %d):\n",
		urgentSubject, urgentPriority, config.DefaultPriority)
	if err := d.ctl(ctx, clientEnv, "refresh", table, "--key", fmt.Sprintf("subject_id=%d", urgentSubject),
		"--priority", strconv.Itoa(urgentPriority)); err != nil {
		return err
	}

	// 4. The scheduler with its embedded NATS server.
	store := filepath.Join(o.State, "nats")
	if err := os.RemoveAll(store); err != nil {
		return err
	}
	logPath := filepath.Join(o.State, "scheduler.log")
	log, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer log.Close()
	args := []string{"--embedded-nats", "--embedded-nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
		"--embedded-nats-store", store, "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort), table}
	d.say("[4/6] the scheduler refreshes the other keys at the default priority and publishes due jobs to NATS:\n      $ %s\n",
		command(d.program("scheduler"), args))
	sched, err := d.start("scheduler", args, env, log, log)
	if err != nil {
		return err
	}
	defer d.stop(sched, schedulerStopWait)
	d.say("      scheduler running (pid %d) with an embedded NATS server at %s; log %s; metrics http://127.0.0.1:%d/metrics\n",
		sched.pid(), natsURL, logPath, metricsPort)
	jobs, err := d.waitReady(ctx, db, table, natsPort, keys, sched, logPath)
	if err != nil {
		return err
	}

	// 5. The worker.
	args = []string{"--exec", "sh " + shellQuote(filepath.Join(o.Assets, HandlerFile)),
		"--concurrency", strconv.Itoa(o.Concurrency), "--suppress-errors", "--progress",
		"--grace", workerGrace.String(), table}
	d.say("[5/6] a worker runs %s for each job, %d at a time (session 13 of every subject fails; one job is retried):\n      $ %s\n",
		filepath.Join(o.Assets, HandlerFile), o.Concurrency, command(d.program("worker"), args))
	work, err := d.start("worker", args, clientEnv, o.Stdout, o.Stderr)
	if err != nil {
		return err
	}
	defer d.stop(work, workerStopWait)
	d.say("      worker running (pid %d)\n", work.pid())

	// 6. Wait until every key is computed or failed.
	if err := d.waitDone(ctx, db, jobs, keys, sched, work, logPath); err != nil {
		return err
	}
	d.say("\n[6/6] the pipeline is done:\n")
	if o.Exit {
		d.stop(work, workerStopWait)
		d.stop(sched, schedulerStopWait)
	}
	d.ctl(context.WithoutCancel(ctx), clientEnv, "progress", table)
	d.ctl(context.WithoutCancel(ctx), clientEnv, "errors", table)
	if o.Exit {
		return nil
	}
	ctl := d.program("jobsctl")
	d.say(`
The scheduler and the worker keep running. Try, in another terminal:
  %s
  # one failure in full, with its stack:
  %s show %s --key subject_id=1,session_id=13
  # live progress, while you run the failed jobs again:
  %s retry %s && %s watch %s
  # new keys, queued by the scheduler's next refresh (every %v here):
  %s
  # one more worker:
  %s --exec %s %s
Press Ctrl-C to stop everything.
`, exportLine(o.Assets, dsn, natsURL), ctl, table, ctl, table, ctl, table, cfg.Jobs.RefreshInterval.Duration(), mysqlClientLine(dsn, o.Database),
		d.program("worker"), shellQuote("sh "+filepath.Join(o.Assets, HandlerFile)), table)
	<-ctx.Done()
	d.say("\nstopping\n")
	return nil
}

// checkFiles reports a missing program or asset with what to do about it, and returns the
// demo's configuration.
func (d *Demo) checkFiles() (config.Config, error) {
	for _, name := range []string{"scheduler", "worker", "jobsctl"} {
		if _, err := os.Stat(d.program(name)); err != nil {
			return config.Config{}, fmt.Errorf("%s is missing: build the programs first (make build): %w", d.program(name), err)
		}
	}
	for _, name := range []string{PipelineFile, HandlerFile, ConfigFile} {
		if _, err := os.Stat(filepath.Join(d.opts.Assets, name)); err != nil {
			return config.Config{}, fmt.Errorf("the demo's %s is missing (run the demo from the project's directory): %w", name, err)
		}
	}
	path := filepath.Join(d.opts.Assets, ConfigFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return config.Config{}, err
	}
	cfg, err := config.Parse(data)
	if err != nil {
		return config.Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

func (d *Demo) program(name string) string { return filepath.Join(d.opts.Bin, name) }

func (d *Demo) say(format string, args ...any) { fmt.Fprintf(d.opts.Stdout, format, args...) }

// mysql returns the DSN of the server to use: Options.MySQLDSN when a server answers there,
// else a private server's, which the caller stops.
func (d *Demo) mysql() (string, *mysqlserver.Server, error) {
	dsn := d.opts.MySQLDSN
	if _, err := mysql.ParseDSN(dsn); err != nil {
		return "", nil, fmt.Errorf("%s %q: %w", config.EnvMySQLDSN, dsn, err)
	}
	pingErr := mysqlserver.Ping(dsn)
	if pingErr == nil {
		d.say("[1/6] MySQL: using the server at %s\n", redact(dsn))
		return dsn, nil, nil
	}
	bin := mysqlserver.Binary()
	if bin == "" {
		return "", nil, fmt.Errorf("no MySQL server answers at %s (%v), and %w to start a private one: "+
			"%s, or set %s to the DSN of a server", redact(dsn), pingErr, mysqlserver.ErrNoBinary, mysqlserver.InstallHint, config.EnvMySQLDSN)
	}
	dir := filepath.Join(d.opts.State, "mysql")
	if err := os.RemoveAll(dir); err != nil {
		return "", nil, err
	}
	d.say("[1/6] MySQL: no server answers at %s (set %s to use another); starting a private one from %s in %s\n",
		redact(dsn), config.EnvMySQLDSN, bin, dir)
	server, err := mysqlserver.Start(bin, dir)
	if err != nil {
		return "", nil, fmt.Errorf("start a private MySQL server: %w", err)
	}
	d.say("      private MySQL server running (pid %d) at %s; it is stopped and removed at the end\n", server.PID(), server.DSN)
	return server.DSN, server, nil
}

// createDatabase drops and creates the demo database, loads the pipeline and returns the
// number of keys (sessions).
func (d *Demo) createDatabase(ctx context.Context, dsn string) (int64, error) {
	o := d.opts
	pipeline, err := os.ReadFile(filepath.Join(o.Assets, PipelineFile))
	if err != nil {
		return 0, err
	}
	admin, err := sql.Open("mysql", dsn)
	if err != nil {
		return 0, err
	}
	defer admin.Close()
	for _, stmt := range []string{"DROP DATABASE IF EXISTS `" + o.Database + "`", "CREATE DATABASE `" + o.Database + "`"} {
		if _, err := admin.ExecContext(ctx, stmt); err != nil {
			return 0, fmt.Errorf("%s: %w", stmt, err)
		}
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return 0, err
	}
	cfg.DBName = o.Database
	cfg.MultiStatements = true
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return 0, err
	}
	load := sql.OpenDB(connector)
	defer load.Close()
	if _, err := load.ExecContext(ctx, string(pipeline)); err != nil {
		return 0, fmt.Errorf("load %s: %w", filepath.Join(o.Assets, PipelineFile), err)
	}
	var keys int64
	if err := load.QueryRowContext(ctx, "SELECT COUNT(*) FROM session").Scan(&keys); err != nil {
		return 0, err
	}
	return keys, nil
}

// waitReady waits until the scheduler's NATS server accepts connections and its first
// refresh queued every key, and returns the jobs table.
func (d *Demo) waitReady(ctx context.Context, db *sql.DB, table string, natsPort int, keys int64, sched *proc, logPath string) (*jobsdb.Jobs, error) {
	deadline := time.After(readyTimeout)
	var jobs *jobsdb.Jobs
	for {
		select {
		case <-ctx.Done():
			return nil, ErrInterrupted
		case <-sched.done:
			return nil, fmt.Errorf("the scheduler exited (%v); the end of %s:\n%s", sched.err, logPath, tailFile(logPath))
		case <-deadline:
			return nil, fmt.Errorf("the scheduler was not ready within %v; the end of %s:\n%s", readyTimeout, logPath, tailFile(logPath))
		case <-time.After(pollInterval):
		}
		if jobs == nil {
			t, err := jobsdb.Inspect(ctx, db, table, "")
			if err != nil {
				return nil, err
			}
			jobs = jobsdb.New(db, t, jobsdb.Options{})
		}
		p, err := jobs.Progress(ctx)
		if err != nil || p.Total < keys {
			continue
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", natsPort), time.Second); err == nil {
			c.Close()
			d.say("      %d jobs queued: %d pending\n", p.Total, p.Pending)
			return jobs, nil
		}
	}
}

// waitDone waits until no job is pending or reserved and every key is in the target or
// failed or ignored.
func (d *Demo) waitDone(ctx context.Context, db *sql.DB, jobs *jobsdb.Jobs, keys int64, sched, work *proc, logPath string) error {
	var deadline <-chan time.Time
	if d.opts.Exit {
		deadline = time.After(d.opts.Timeout)
	}
	for {
		select {
		case <-ctx.Done():
			d.say("\n") // off the progress bar's line
			return ErrInterrupted
		case <-sched.done:
			return fmt.Errorf("the scheduler exited (%v); the end of %s:\n%s", sched.err, logPath, tailFile(logPath))
		case <-work.done:
			return fmt.Errorf("the worker exited (%v) before the pipeline was done", work.err)
		case <-deadline:
			return fmt.Errorf("the pipeline was not done within %v; see %s and jobsctl list", d.opts.Timeout, logPath)
		case <-time.After(pollInterval):
		}
		p, err := jobs.Progress(ctx)
		if err != nil {
			continue
		}
		computed := count(ctx, db, d.opts.Database, target)
		if p.Pending == 0 && p.Reserved == 0 && computed+p.Error+p.Ignore >= keys {
			return nil
		}
	}
}

// count returns the number of rows of a table of the demo database, -1 on error.
func count(ctx context.Context, db *sql.DB, database, table string) int64 {
	var n int64
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM `"+database+"`.`"+table+"`").Scan(&n); err != nil {
		return -1
	}
	return n
}

// ctl runs jobsctl to completion, showing the command and its output.
func (d *Demo) ctl(ctx context.Context, env []string, args ...string) error {
	args = append(args, "--timeout", ctlTimeout)
	d.say("      $ %s\n", command(d.program("jobsctl"), args[:len(args)-2]))
	out := &indenter{w: d.opts.Stdout, prefix: "      "}
	p, err := d.start("jobsctl", args, env, out, out)
	if err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		d.stop(p, 5*time.Second)
		return ErrInterrupted
	}
	if p.err != nil {
		return fmt.Errorf("jobsctl %s: %v", args[0], p.err)
	}
	return nil
}

// childEnv is the demo's environment without the jetjobs settings of the user's shell, plus
// extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == config.EnvConfig || name == config.EnvMySQLDSN || name == config.EnvNATSURL {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// exportLine is the shell line that gives another terminal the demo's settings. A password in
// the DSN is not printed.
func exportLine(assets, dsn, natsURL string) string {
	line := "export " + config.EnvConfig + "=" + shellQuote(filepath.Join(assets, ConfigFile))
	if cfg, err := mysql.ParseDSN(dsn); err == nil && cfg.Passwd == "" {
		line += " " + config.EnvMySQLDSN + "=" + shellQuote(dsn)
	}
	return line + " " + config.EnvNATSURL + "=" + natsURL
}

// mysqlClientLine is a mysql client command that adds a subject with sessions.
func mysqlClientLine(dsn, database string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return ""
	}
	host, port, _ := net.SplitHostPort(cfg.Addr)
	line := "mysql -h " + host + " -P " + port + " -u " + shellQuote(cfg.User)
	if cfg.Passwd != "" {
		line += " -p"
	}
	return line + " " + database + ` -e 'INSERT INTO subject VALUES (9); INSERT INTO session SELECT 9, session_id FROM session WHERE subject_id = 1'`
}

// redact hides the password of a DSN.
func redact(dsn string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil || cfg.Passwd == "" {
		return dsn
	}
	cfg.Passwd = "xxxxx"
	return cfg.FormatDSN()
}

// command is a command line as a person would type it.
func command(program string, args []string) string {
	parts := []string{program}
	for _, a := range args {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

var plainWord = regexp.MustCompile(`^[A-Za-z0-9_./:=,@%+-]+$`)

func shellQuote(s string) string {
	if plainWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tailFile returns the last lines of a log file.
func tailFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const max = 3000
	s := string(data)
	if len(s) > max {
		s = s[len(s)-max:]
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return s
}

// indenter prefixes every line written through it.
type indenter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	mid    bool // inside a line
}

func (in *indenter) Write(p []byte) (int, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var b strings.Builder
	for _, c := range string(p) {
		if !in.mid {
			b.WriteString(in.prefix)
			in.mid = true
		}
		b.WriteRune(c)
		if c == '\n' {
			in.mid = false
		}
	}
	if _, err := io.WriteString(in.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}
