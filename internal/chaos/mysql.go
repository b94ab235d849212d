package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/jetjobs/jetjobs/internal/faultproxy"
	"github.com/jetjobs/jetjobs/internal/mysqlserver"
)

// database is the schema of the pipeline on the run's private server.
const database = "chaos"

// queryTimeout bounds each of the harness's own statements; they are retried after a fault.
const queryTimeout = 10 * time.Second

// dialerSeq numbers the MySQL dialers registered by runs of this process.
var dialerSeq atomic.Int64

// mysqlWorld is the run's MariaDB: the server, an admin pool whose connections the faults never
// kill, and the proxy the workers reach it through.
type mysqlWorld struct {
	server *mysqlserver.Server
	proxy  *faultproxy.Proxy
	admin  *sql.DB // default database chaos

	mu         sync.Mutex
	adminPorts map[string]bool // local ports of the admin pool's connections
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
	m := &mysqlWorld{server: server, adminPorts: map[string]bool{}}
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
	m.proxy, err = faultproxy.New(cfg.Addr)
	if err != nil {
		return fail(err)
	}
	// The admin pool dials through a dialer of its own that notes each connection's local port,
	// so that KILL faults can leave the harness's connections alone.
	dialer := fmt.Sprintf("chaosadmin%d", dialerSeq.Add(1))
	mysql.RegisterDialContext(dialer, func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_, port, _ := net.SplitHostPort(c.LocalAddr().String())
			m.mu.Lock()
			m.adminPorts[port] = true
			m.mu.Unlock()
		}
		return c, err
	})
	admin := cfg.Clone()
	admin.Net = dialer
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

// directDSN is the server DSN the schedulers use; proxyDSN the workers'.
func (m *mysqlWorld) directDSN() string { return m.server.DSN }
func (m *mysqlWorld) proxyDSN() string  { return "root@tcp(" + m.proxy.Addr() + ")/" }

// close stops the proxy and the server; keep leaves the server's directory in place.
func (m *mysqlWorld) close(keep bool) {
	if m.admin != nil {
		m.admin.Close()
	}
	if m.proxy != nil {
		m.proxy.Close()
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

// client is one client connection of the server, as PROCESSLIST shows it.
type client struct {
	id      int64
	port    string
	command string
	info    string
	worker  bool // connected through the workers' proxy
}

func (c client) String() string {
	who := "scheduler"
	if c.worker {
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

// clients lists the connections of the programs: every client connection except the admin
// pool's.
func (m *mysqlWorld) clients(ctx context.Context) ([]client, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	rows, err := m.admin.QueryContext(ctx,
		"SELECT ID, HOST, COMMAND, COALESCE(INFO, '') FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND HOST LIKE '%:%'")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	workerPorts := map[string]bool{}
	for _, a := range m.proxy.UpstreamAddrs() {
		_, port, _ := net.SplitHostPort(a)
		workerPorts[port] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []client
	for rows.Next() {
		var c client
		var host string
		if err := rows.Scan(&c.id, &host, &c.command, &c.info); err != nil {
			return nil, err
		}
		_, c.port, _ = net.SplitHostPort(host)
		if m.adminPorts[c.port] {
			continue
		}
		c.worker = workerPorts[c.port]
		out = append(out, c)
	}
	return out, rows.Err()
}

// kill runs KILL QUERY or KILL CONNECTION (what) on up to n random client connections,
// preferring, for KILL QUERY, connections running a statement. It returns what it killed.
func (m *mysqlWorld) kill(ctx context.Context, rng *rand.Rand, what string, n int) ([]string, error) {
	clients, err := m.clients(ctx)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	if len(clients) == 0 {
		return nil, nil
	}
	rng.Shuffle(len(clients), func(i, j int) { clients[i], clients[j] = clients[j], clients[i] })
	if what == "QUERY" {
		busy := clients[:0:0]
		for _, c := range clients {
			if c.command == "Query" {
				busy = append(busy, c)
			}
		}
		if len(busy) > 0 {
			clients = busy
		}
	}
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
