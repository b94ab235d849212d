package jobsdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Pool defaults set by Open. MariaDB is CPU-bound on this workload; a pool of 2–4× the
// database's cores keeps it busy without queueing statements inside the server.
const (
	// MaxOpenConnsDefault is the pool size Open sets: enough for a worker's reserve, record
	// and heartbeat paths to overlap on a small (2–4 core) database server.
	MaxOpenConnsDefault = 8
	// ConnMaxLifetimeDefault recycles connections, so a server restart or failover is
	// picked up without errors piling up on stale connections.
	ConnMaxLifetimeDefault = 30 * time.Minute
)

// Open opens a pool for dsn (go-sql-driver form) with the options jetjobs needs
// (parseTime, interpolateParams) unless the DSN sets them, and checks the connection.
//
// Unless the DSN says otherwise: parseTime=true (DATETIME columns scan into time.Time),
// loc=Local (DATETIME values are wall-clock times of the local zone, as the server's NOW(3)
// when both run in one zone), interpolateParams=true (one round trip per statement instead of
// prepare, execute and close). The pool holds MaxOpenConnsDefault connections, all kept idle.
func Open(ctx context.Context, dsn string) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: open: parse DSN: %w", err)
	}
	set := dsnParams(dsn)
	if !set["parseTime"] {
		cfg.ParseTime = true
	}
	if !set["loc"] {
		cfg.Loc = time.Local
	}
	if !set["interpolateParams"] {
		cfg.InterpolateParams = true
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: open: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(MaxOpenConnsDefault)
	db.SetMaxIdleConns(MaxOpenConnsDefault)
	db.SetConnMaxLifetime(ConnMaxLifetimeDefault)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("jobsdb: open: connect to %s: %w", cfg.Addr, err)
	}
	return db, nil
}

// dsnParams returns the names of the parameters dsn sets, parsed as the driver does: after
// the first '?' that follows the last '/'.
func dsnParams(dsn string) map[string]bool {
	set := map[string]bool{}
	slash := strings.LastIndexByte(dsn, '/')
	if slash < 0 {
		return set
	}
	_, query, ok := strings.Cut(dsn[slash+1:], "?")
	if !ok {
		return set
	}
	for _, p := range strings.Split(query, "&") {
		name, _, _ := strings.Cut(p, "=")
		if name != "" {
			set[name] = true
		}
	}
	return set
}
