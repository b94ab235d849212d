package cli

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// Pacing of OpenDB's attempts, and the wait for the NATS connection to drain at exit.
const (
	openRetryInitial = 100 * time.Millisecond
	openRetryMax     = 10 * time.Second
	drainTimeout     = 5 * time.Second
)

// CheckDSN reports a MySQL DSN that does not parse as a usage error.
func CheckDSN(dsn string) error {
	if _, err := mysql.ParseDSN(dsn); err != nil {
		return Usagef("mysql.dsn (--mysql, %s): %v", config.EnvMySQLDSN, err)
	}
	return nil
}

// OpenDB opens the MySQL pool (jobsdb.Open) of cfg, of cfg.MaxOpenConns connections, retrying with exponential backoff until MySQL
// answers or ctx ends, and logging each failed attempt. A DSN that does not parse, and an
// answer that retrying cannot change (bad credentials, unknown database), are final usage
// errors.
func OpenDB(ctx context.Context, cfg config.MySQL, log *slog.Logger) (*sql.DB, error) {
	dsn := cfg.DSN
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
		if err == nil && cfg.MaxOpenConns > 0 {
			db.SetMaxOpenConns(cfg.MaxOpenConns)
			db.SetMaxIdleConns(cfg.MaxOpenConns)
		}
		return db, err
	}, backoff.WithBackOff(b), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, next time.Duration) {
		log.Error("cannot reach MySQL; retrying", "err", err, "retry_in", next.Round(time.Millisecond))
	}))
}

// ConnectOptions are the NATS connection settings of the configuration, for the program
// named name (the connection name the server shows), logging to log.
func ConnectOptions(cfg config.Config, name string, log *slog.Logger) queue.ConnectOptions {
	return queue.ConnectOptions{
		URL:         cfg.NATS.URL,
		Credentials: cfg.NATS.Credentials,
		TLSCA:       cfg.NATS.TLSCA,
		TLSCert:     cfg.NATS.TLSCert,
		TLSKey:      cfg.NATS.TLSKey,
		Name:        name,
		Logger:      log,
	}
}

// Drain flushes and closes the NATS connection, waiting up to drainTimeout for what was
// published to reach the server.
func Drain(nc *nats.Conn, log *slog.Logger) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(drainTimeout):
		log.Warn("NATS connection did not drain in time; closing it")
		nc.Close()
	}
}
