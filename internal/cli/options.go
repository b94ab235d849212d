package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// gitVersionTimeout bounds `git rev-parse` for jobs.version_method "git".
const gitVersionTimeout = 5 * time.Second

// Identity returns the host, pid and version this process writes into the jobs it reserves.
// The user is left empty, so that a reservation writes the database user as DataJoint does
// (USER(), e.g. root@127.0.0.1), not the operating system's. The version is evaluated once,
// here, as version_method says.
func Identity(cfg config.Config) jobsdb.Identity {
	id := jobsdb.Identity{PID: os.Getpid()}
	id.Host, _ = os.Hostname()
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

// QueueConfig builds a table's stream settings from the configuration.
func QueueConfig(cfg config.Config) queue.Config {
	return queue.Config{
		Prefix:   cfg.NATS.SubjectPrefix,
		Replicas: cfg.NATS.Replicas,
		AckWait:  cfg.NATS.AckWait.Duration(),
		Storage:  queue.Storage(cfg.NATS.Storage),
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
	case err != nil && IsUsage(err), errors.Is(err, jobsdb.ErrBadKey):
		return nil, &UsageError{Err: fmt.Errorf("table %s: %w", name, err)}
	case err != nil:
		return nil, err
	}
	return jobsdb.New(db, target, JobsOptions(cfg, id)), nil
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
