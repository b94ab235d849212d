// Package cli holds what the three programs share beyond configuration: exit codes, the
// process identity written into reserved jobs, and opening a target's jobs table from the
// configuration.
package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/go-sql-driver/mysql"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/jobsdb"
)

// Exit codes of every program.
const (
	ExitOK     = 0 // success
	ExitFailed = 1 // the operation failed (or, for the worker, a job failed without --suppress-errors)
	ExitUsage  = 2 // bad usage or configuration
)

const gitVersionTimeout = 5 * time.Second

// UsageError marks an error caused by the command line or configuration (exit code 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// ExitCode maps an error to the program's exit code.
func ExitCode(err error) int {
	var usage *UsageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &usage), errors.Is(err, config.ErrInvalid):
		return ExitUsage
	default:
		return ExitFailed
	}
}

// Identity returns the user, host, pid and version this process writes into the jobs it
// reserves. The version is evaluated once, here, as version_method says.
func Identity(cfg config.Config) jobsdb.Identity {
	id := jobsdb.Identity{PID: os.Getpid()}
	id.Host, _ = os.Hostname()
	if u, err := user.Current(); err == nil {
		id.User = u.Username + "@" + id.Host
	}
	if cfg.Jobs.VersionMethod == config.VersionGit {
		ctx, cancel := context.WithTimeout(context.Background(), gitVersionTimeout)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output(); err == nil {
			id.Version = strings.TrimSpace(string(out))
		}
	}
	return id
}

// JobsOptions builds the jobsdb options from the configuration.
func JobsOptions(cfg config.Config, id jobsdb.Identity) jobsdb.Options {
	return jobsdb.Options{
		KeepCompleted: cfg.Jobs.KeepCompleted,
		// The rows Ignore inserts get jobs.default_priority, as DataJoint's.
		DefaultPriority: cfg.Jobs.DefaultPriority,
		LeaseDuration:   cfg.Jobs.LeaseDuration.Duration(),
		Identity:        id,
	}
}

// OpenJobs inspects the target table name and returns its jobs handle. A table that is not
// in the database is a usage error that lists the configured tables; a target or key source
// that cannot be used as it is (no key columns, a key source MySQL rejects, no privilege) is a
// usage error too. Other errors (MySQL unreachable) are returned as they are: retry them.
func OpenJobs(ctx context.Context, db *sql.DB, cfg config.Config, name string, id jobsdb.Identity) (*jobsdb.Jobs, error) {
	if _, _, err := config.SplitTable(name); err != nil {
		return nil, &UsageError{Err: fmt.Errorf("table %w", err)}
	}
	entry, _ := cfg.Table(name)
	target, err := jobsdb.Inspect(ctx, db, name, entry.KeySource)
	switch {
	case errors.Is(err, jobsdb.ErrUnknownTable):
		return nil, &UsageError{Err: fmt.Errorf("%w; configured tables: %s", err, listOrNone(cfg.TableNames()))}
	case errors.Is(err, jobsdb.ErrNoKeyColumns), errors.Is(err, jobsdb.ErrBadKey), jobsdb.Classify(err) == jobsdb.FailureSchema:
		return nil, &UsageError{Err: fmt.Errorf("table %s: %w", name, err)}
	case err != nil:
		return nil, err
	}
	return jobsdb.New(db, target, JobsOptions(cfg, id)), nil
}

// CheckDSN reports a MySQL DSN that does not parse as a usage error.
func CheckDSN(dsn string) error {
	if _, err := mysql.ParseDSN(dsn); err != nil {
		return Usagef("mysql.dsn (--mysql, %s): %v", config.EnvMySQLDSN, err)
	}
	return nil
}

// Pacing of OpenDB's attempts.
const (
	openRetryInitial = 100 * time.Millisecond
	openRetryMax     = 10 * time.Second
)

// OpenDB opens the MySQL pool (jobsdb.Open), retrying with exponential backoff until MySQL
// answers or ctx ends, and logging each failed attempt. A DSN that does not parse, and an
// error the server answers with (bad credentials, unknown database), are final usage errors.
func OpenDB(ctx context.Context, dsn string, log *slog.Logger) (*sql.DB, error) {
	if err := CheckDSN(dsn); err != nil {
		return nil, err
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = openRetryInitial
	b.MaxInterval = openRetryMax
	return backoff.Retry(ctx, func() (*sql.DB, error) {
		db, err := jobsdb.Open(ctx, dsn)
		if jobsdb.Classify(err) == jobsdb.FailureSchema {
			return nil, backoff.Permanent(&UsageError{Err: fmt.Errorf("open MySQL: %w", err)})
		}
		return db, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, next time.Duration) {
		log.Error("cannot reach MySQL; retrying", "err", err, "retry_in", next.Round(time.Millisecond))
	}))
}

// Tables returns the tables a command works on: the arguments, or all configured tables.
func Tables(cfg config.Config, args []string) ([]string, error) {
	if len(args) > 0 {
		return args, nil
	}
	if len(cfg.Tables) == 0 {
		return nil, Usagef("no table given and none configured: name tables as schema.table arguments or list them under \"tables\" in the config file")
	}
	return cfg.TableNames(), nil
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none (list them under \"tables\" in the config file)"
	}
	return strings.Join(names, ", ")
}
