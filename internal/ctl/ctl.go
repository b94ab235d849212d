package ctl

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/jobsdb"
)

// connectTimeout bounds connecting to MySQL and NATS (shorter when --timeout is shorter).
const connectTimeout = 10 * time.Second

// Terminal reports whether a stream (Env.Stdin or Env.Stdout) is an interactive terminal.
type Terminal func(stream any) bool

// IsTerminal is the default Terminal: the stream is a file whose descriptor is a terminal.
func IsTerminal(stream any) bool {
	f, ok := stream.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// Env is what a run of jobsctl sees of its process. Zero fields take the defaults.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment (JETJOBS_*). Default os.Getenv.
	Getenv func(string) string
	// Terminal decides whether drop and delete may ask for confirmation on Stdin, and whether
	// watch redraws Stdout in place. Default IsTerminal.
	Terminal Terminal
	// Location is the time zone of times shown to people. Default time.Local.
	Location *time.Location
	// Now is the clock of watch's timestamps. Default time.Now.
	Now func() time.Time
}

func (e *Env) defaults() {
	if e.Stdin == nil {
		e.Stdin = strings.NewReader("")
	}
	if e.Stdout == nil {
		e.Stdout = io.Discard
	}
	if e.Stderr == nil {
		e.Stderr = io.Discard
	}
	if e.Getenv == nil {
		e.Getenv = os.Getenv
	}
	if e.Terminal == nil {
		e.Terminal = IsTerminal
	}
	if e.Location == nil {
		e.Location = time.Local
	}
	if e.Now == nil {
		e.Now = time.Now
	}
}

// Main runs jobsctl with the process's streams and returns the exit code: 0 success,
// 1 the operation failed, 2 bad usage or configuration. SIGINT and SIGTERM cancel the
// running command (watch stops cleanly).
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, Env{Stdin: stdin, Stdout: stdout, Stderr: stderr, Getenv: getenv})
}

// Run is Main with a context and an Env, for tests and embedding.
func Run(ctx context.Context, args []string, env Env) int {
	env.defaults()
	err := run(ctx, args, &env)
	if err == nil {
		return cli.ExitOK
	}
	fmt.Fprintf(env.Stderr, "jobsctl: %v\n", err)
	code := cli.ExitCode(err)
	var usage *cli.UsageError
	if errors.As(err, &usage) && errors.Is(err, errSyntax) {
		fmt.Fprintln(env.Stderr, "Run 'jobsctl help' or 'jobsctl COMMAND --help' for usage.")
	}
	return code
}

// errSyntax marks usage errors of the command line's shape (unknown command or flag, wrong
// argument count), after which a pointer to help is printed.
var errSyntax = errors.New("bad command line")

func syntaxf(format string, args ...any) error {
	return &cli.UsageError{Err: syntaxError{fmt.Sprintf(format, args...)}}
}

type syntaxError struct{ msg string }

func (e syntaxError) Error() string        { return e.msg }
func (e syntaxError) Is(target error) bool { return target == errSyntax }

// globals are the flags every command accepts, before or after the command name.
type globals struct {
	fs        *pflag.FlagSet
	cfg       *config.Flags
	output    string
	noHeaders bool
	timeout   time.Duration
	help      bool
}

func newGlobals() *globals {
	g := &globals{fs: pflag.NewFlagSet("jobsctl", pflag.ContinueOnError)}
	g.fs.SortFlags = false
	g.fs.SetOutput(io.Discard)
	g.cfg = config.AddFlags(g.fs)
	annotate(g.fs, "config", annFiles)
	// Say the defaults once, in the "(default: ...)" form every flag of jobsctl uses.
	g.fs.Lookup("config").Usage = "JSON configuration file: its mysql, nats, jobs and tables sections"
	describeDefault(g.fs, "config", "$"+config.EnvConfig+", else none")
	g.fs.Lookup("mysql").Usage = "MySQL `DSN` in go-sql-driver form, e.g. user:password@tcp(host:3306)/"
	describeDefault(g.fs, "mysql", "$"+config.EnvMySQLDSN+", else mysql.dsn of the config file, else "+config.DefaultMySQLDSN)
	g.fs.Lookup("nats").Usage = "NATS server `URL`s, comma-separated (used by stream, notify and serve)"
	describeDefault(g.fs, "nats", "$"+config.EnvNATSURL+", else nats.url of the config file, else "+config.DefaultNATSURL)
	g.fs.StringVarP(&g.output, "output", "o", formatText, "output `FORMAT`: text, json or csv; text is aligned for people, json and csv have stable snake_case fields (see 'jobsctl help output')")
	annotate(g.fs, "output", formats...)
	g.fs.BoolVar(&g.noHeaders, "no-headers", false, "leave out the header row of text tables and CSV")
	g.fs.DurationVar(&g.timeout, "timeout", 0, "time limit of the command's database and NATS work, e.g. 30s (0: none; connecting is always limited to "+connectTimeout.String()+")")
	g.fs.BoolVarP(&g.help, "help", "h", false, "show help and exit")
	return g
}

func run(ctx context.Context, args []string, env *Env) error {
	g := newGlobals()
	g.fs.SetInterspersed(false)
	if err := g.fs.Parse(args); err != nil {
		return syntaxf("%v", err)
	}
	rest := g.fs.Args()
	if len(rest) == 0 {
		if g.help {
			return writeRootHelp(env.Stdout)
		}
		writeRootHelp(env.Stderr)
		return syntaxf("no command given")
	}
	cmd := lookup(rest[0])
	if cmd == nil {
		return syntaxf("unknown command %q%s; commands: %s", rest[0], suggest(rest[0]), strings.Join(commandNames(), ", "))
	}
	fs := pflag.NewFlagSet("jobsctl "+cmd.name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(io.Discard)
	runner := cmd.setup(fs)
	fs.AddFlagSet(g.fs)
	if err := fs.Parse(rest[1:]); err != nil {
		return syntaxf("%s: %v", cmd.name, err)
	}
	if g.help {
		return writeCommandHelp(env.Stdout, cmd)
	}
	argv := fs.Args()
	if len(argv) < cmd.minArgs || (cmd.maxArgs >= 0 && len(argv) > cmd.maxArgs) {
		return syntaxf("%s: want %s, got %d argument(s)%s (usage: %s)", cmd.name, argsWanted(cmd), len(argv), quoteArgs(argv), usageOf(cmd))
	}
	if !slices.Contains(formats, g.output) {
		return cli.Usagef("--output %q: want one of %s", g.output, strings.Join(formats, ", "))
	}
	s := &session{env: env, g: g}
	defer s.close()
	err := runner(ctx, s, argv)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("interrupted: %w", err)
	}
	return err
}

func argsWanted(c *command) string {
	switch {
	case c.maxArgs == 0:
		return "no arguments"
	case c.minArgs == c.maxArgs:
		return c.args
	case c.maxArgs < 0 && c.minArgs == 0:
		return "any number of " + c.args
	default:
		return c.args
	}
}

func quoteArgs(args []string) string {
	if len(args) == 0 {
		return ""
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fmt.Sprintf("%q", a)
	}
	return ": " + strings.Join(q, " ")
}

// session is one command's run: its flags, its lazily loaded configuration and database.
type session struct {
	env *Env
	g   *globals

	cfg    *config.Config
	db     *sql.DB
	nc     *nats.Conn
	ident  *jobsdb.Identity
	closer []func()
}

func (s *session) close() {
	for i := len(s.closer) - 1; i >= 0; i-- {
		s.closer[i]()
	}
}

// config loads the configuration once: defaults, file, environment, flags.
func (s *session) config() (config.Config, error) {
	if s.cfg == nil {
		cfg, err := s.g.cfg.Load(s.env.Getenv, nil)
		if err != nil {
			return config.Config{}, err
		}
		s.cfg = &cfg
	}
	return *s.cfg, nil
}

// opContext applies --timeout to one unit of work.
func (s *session) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.g.timeout > 0 {
		return context.WithTimeout(ctx, s.g.timeout)
	}
	return context.WithCancel(ctx)
}

func (s *session) connectContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := connectTimeout
	if s.g.timeout > 0 && s.g.timeout < d {
		d = s.g.timeout
	}
	return context.WithTimeout(ctx, d)
}

// database opens the MySQL pool once.
func (s *session) database(ctx context.Context) (*sql.DB, error) {
	if s.db != nil {
		return s.db, nil
	}
	cfg, err := s.config()
	if err != nil {
		return nil, err
	}
	cctx, cancel := s.connectContext(ctx)
	defer cancel()
	db, err := jobsdb.Open(cctx, cfg.MySQL.DSN)
	if err != nil {
		return nil, fmt.Errorf("connect to MySQL at %s: %w (set the DSN with --mysql, %s or mysql.dsn in the config file)", redactDSN(cfg.MySQL.DSN), err, config.EnvMySQLDSN)
	}
	s.db = db
	s.closer = append(s.closer, func() { db.Close() })
	return db, nil
}

// jobs opens the jobs handle of the target table name; an unknown table is a usage error that
// lists the configured tables.
func (s *session) jobs(ctx context.Context, name string) (*jobsdb.Jobs, error) {
	db, err := s.database(ctx)
	if err != nil {
		return nil, err
	}
	cfg, _ := s.config()
	if s.ident == nil {
		id := cli.Identity(cfg)
		s.ident = &id
	}
	octx, cancel := s.opContext(ctx)
	defer cancel()
	j, err := cli.OpenJobs(octx, db, cfg, name, *s.ident)
	if err != nil {
		return nil, err
	}
	// Say so when a write (retry) adopts a jobs table that DataJoint declared.
	opts := j.Options()
	t := j.Target()
	opts.Adopted = func(columns []string) {
		fmt.Fprintf(s.env.Stderr, "jobsctl: adopted %s, declared by DataJoint: added jetjobs' columns (%s); DataJoint still reads and writes it\n",
			t.JobsFullName(), strings.Join(columns, ", "))
	}
	return jobsdb.New(db, t, opts), nil
}

// tables returns the tables a command works on: its arguments (each once, so JSON keyed by
// table has no repeated key), or every configured table.
func (s *session) tables(args []string) ([]string, error) {
	cfg, err := s.config()
	if err != nil {
		return nil, err
	}
	names, err := cli.Tables(cfg, args)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// redactDSN hides the password of a DSN shown in a message.
func redactDSN(dsn string) string {
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	if c.Passwd != "" {
		c.Passwd = "xxxxx"
	}
	return c.FormatDSN()
}
