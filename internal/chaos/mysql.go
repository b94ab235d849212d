package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/jetjobs/jetjobs/internal/mysqlserver"
)

// database is the schema of the pipeline on the run's private server.
const database = "chaos"

// queryTimeout bounds each of the harness's own statements; they are retried after a fault.
const queryTimeout = 10 * time.Second

// The programs connect under user names of their own (the private server runs without grant
// tables and accepts any), so that PROCESSLIST tells them apart from each other and from the
// harness's root connections, which the KILL faults never touch.
const (
	workerUser    = "chaosworker"
	schedulerUser = "chaosscheduler"
)

// mysqlWorld is the run's MariaDB: the server and the harness's admin pool.
type mysqlWorld struct {
	server *mysqlserver.Server
	addr   string  // host:port
	admin  *sql.DB // as root, default database chaos
}

func startMySQL(ctx context.Context, dir string) (*mysqlWorld, error) {
	bin := mysqlserver.Binary()
	if bin == "" {
		return nil, fmt.Errorf("%w; %s", mysqlserver.ErrNoBinary, mysqlserver.InstallHint)
	}
	server, err := mysqlserver.Start(bin, filepath.Join(dir, "mysql"))
	if err != nil {
		return nil, fmt.Errorf("start MariaDB: %w", err)
	}
	m := &mysqlWorld{server: server}
	fail := func(err error) (*mysqlWorld, error) {
		m.close(false)
		return nil, err
	}
	// A fresh data directory does not survive a crash until it has been written out.
	cctx, cancel := context.WithTimeout(ctx, mysqlserver.StartupTimeout)
	defer cancel()
	if err := server.Checkpoint(cctx); err != nil {
		return fail(err)
	}
	cfg, err := mysql.ParseDSN(server.DSN)
	if err != nil {
		return fail(err)
	}
	m.addr = cfg.Addr
	admin := cfg.Clone()
	admin.DBName = ""
	m.admin, err = sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		return fail(err)
	}
	m.admin.SetMaxOpenConns(8)
	if _, err := m.exec(ctx, "CREATE DATABASE "+database); err != nil {
		return fail(err)
	}
	m.admin.Close()
	admin.DBName = database
	m.admin, err = sql.Open("mysql", admin.FormatDSN())
	if err != nil {
		return fail(err)
	}
	m.admin.SetMaxOpenConns(8)
	return m, nil
}

// schedulerDSN reaches the server directly.
func (m *mysqlWorld) schedulerDSN() string { return schedulerUser + "@tcp(" + m.addr + ")/" }

// close stops the server; keep leaves the server's directory in place.
func (m *mysqlWorld) close(keep bool) {
	if m.admin != nil {
		m.admin.Close()
	}
	if keep {
		m.server.Halt(syscall.SIGTERM)
		return
	}
	m.server.Stop()
}

func (m *mysqlWorld) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	return m.admin.ExecContext(ctx, query, args...)
}

// count runs a query returning one integer.
func (m *mysqlWorld) count(ctx context.Context, query string, args ...any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var n sql.NullInt64
	err := m.admin.QueryRowContext(ctx, query, args...).Scan(&n)
	return int(n.Int64), err
}

// client is one connection of a program, as PROCESSLIST shows it.
type client struct {
	id      int64
	user    string
	command string
	info    string
}

func (c client) String() string {
	who := "scheduler"
	if c.user == workerUser {
		who = "worker"
	}
	s := fmt.Sprintf("connection %d (%s, %s", c.id, who, c.command)
	if c.info != "" {
		info := strings.Join(strings.Fields(c.info), " ")
		if len(info) > 80 {
			info = info[:80] + "…"
		}
		s += ": " + info
	}
	return s + ")"
}

// clients lists the programs' connections (never the harness's).
func (m *mysqlWorld) clients(ctx context.Context) ([]client, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := m.admin.QueryContext(ctx,
		"SELECT ID, USER, COMMAND, COALESCE(INFO, '') FROM information_schema.PROCESSLIST WHERE USER IN (?, ?) ORDER BY ID",
		workerUser, schedulerUser)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []client
	for rows.Next() {
		var c client
		if err := rows.Scan(&c.id, &c.user, &c.command, &c.info); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// kill runs KILL QUERY or KILL CONNECTION (what) on up to n random client connections,
// preferring, for KILL QUERY, connections running a statement. It returns what it killed.
func (m *mysqlWorld) kill(ctx context.Context, rng *rand.Rand, what string, n int) ([]string, error) {
	var clients []client
	deadline := time.Now().Add(busyWait)
	for {
		all, err := m.clients(ctx)
		if err != nil {
			return nil, fmt.Errorf("list connections: %w", err)
		}
		clients = all
		if what != "QUERY" {
			break
		}
		// KILL QUERY hits only a running statement: wait a little for some.
		busy := all[:0:0]
		for _, c := range all {
			if c.command == "Query" {
				busy = append(busy, c)
			}
		}
		if len(busy) > 0 {
			clients = busy
			break
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, busyPoll) {
			break
		}
	}
	if len(clients) == 0 {
		return nil, nil
	}
	rng.Shuffle(len(clients), func(i, j int) { clients[i], clients[j] = clients[j], clients[i] })
	var killed []string
	for _, c := range clients[:min(n, len(clients))] {
		if _, err := m.exec(ctx, fmt.Sprintf("KILL %s %d", what, c.id)); err != nil {
			killed = append(killed, fmt.Sprintf("%s: %v", c, err))
			continue
		}
		killed = append(killed, c.String())
	}
	return killed, nil
}

// restart halts the server with sig, waits down, and starts it again on the same data
// directory and port.
func (m *mysqlWorld) restart(ctx context.Context, sig syscall.Signal, down time.Duration) error {
	m.server.Halt(sig)
	sleepCtx(ctx, down)
	return m.server.Restart()
}

// ensureRunning restarts the server if it is not running.
func (m *mysqlWorld) ensureRunning() error {
	select {
	case <-m.server.Done():
		return m.server.Restart()
	default:
		return nil
	}
}

// sleepCtx waits d or until ctx ends; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
