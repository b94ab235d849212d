// Package mysqltest gives each test its own database on a real MySQL or MariaDB server.
//
// The server is JETJOBS_TEST_MYSQL_DSN, default root@tcp(127.0.0.1:3306)/. When none answers
// there and a mariadbd (or mysqld) binary exists, the first test starts a private throwaway
// instance (empty datadir, --skip-grant-tables, a free loopback port) that Main removes after
// the package's tests. When neither is available the tests fail with a message saying how to
// provide a server; they never skip.
//
// Packages that use it call Main from TestMain:
//
//	func TestMain(m *testing.M) { mysqltest.Main(m) }
package mysqltest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// EnvDSN names the server to test against.
const EnvDSN = "JETJOBS_TEST_MYSQL_DSN"

// DefaultDSN is used when EnvDSN is unset.
const DefaultDSN = "root@tcp(127.0.0.1:3306)/"

const (
	pingTimeout    = 3 * time.Second
	startupTimeout = 60 * time.Second
)

var (
	once      sync.Once
	serverDSN string
	serverErr error
	private   *Private
)

// Main runs the package's tests, then the cleanups, then stops a private server if one was
// started, and exits.
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	for _, c := range cleanups {
		c()
	}
	if private != nil {
		private.Stop()
	}
	os.Exit(code)
}

// ServerDSN returns the DSN (without a database) of the server tests use, starting a private
// one if needed; it fails the test when there is none.
func ServerDSN(t testing.TB) string {
	t.Helper()
	once.Do(func() { serverDSN, serverErr = resolve() })
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	return serverDSN
}

func resolve() (string, error) {
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		dsn = DefaultDSN
	}
	pingErr := ping(dsn)
	if pingErr == nil {
		return dsn, nil
	}
	bin := ServerBinary()
	if bin == "" {
		return "", fmt.Errorf("no MySQL/MariaDB server answers at %s (%v) and no mariadbd or mysqld binary is installed: "+
			"start a server, set %s to its DSN, or install one (apt-get install mariadb-server)", dsn, pingErr, EnvDSN)
	}
	dir, err := os.MkdirTemp("", "jetjobs-mysqltest-")
	if err != nil {
		return "", err
	}
	p, err := StartPrivate(bin, dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("no server at %s (%v), and starting a private one failed: %w", dsn, pingErr, err)
	}
	private = p
	return p.DSN, nil
}

func ping(dsn string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	return db.PingContext(ctx)
}

// ServerBinary returns the path of a mariadbd or mysqld binary, or "".
func ServerBinary() string {
	for _, name := range []string{"mariadbd", "mysqld"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin"} {
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return ""
}

// Private is a throwaway server process with its own data directory.
type Private struct {
	DSN  string
	Dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartPrivate starts bin on a free loopback port with an empty data directory under dir and
// waits until it accepts connections.
func StartPrivate(bin, dir string) (*Private, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	args := []string{
		"--no-defaults",
		"--datadir=" + data,
		"--skip-grant-tables",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--port=%d", port),
		"--socket=" + filepath.Join(dir, "mysqld.sock"),
		"--pid-file=" + filepath.Join(dir, "mysqld.pid"),
		"--skip-log-bin",
		"--innodb-buffer-pool-size=256M",
		"--max-connections=500",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Private{DSN: fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port), Dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(startupTimeout)
	for {
		if err := ping(p.DSN); err == nil {
			return p, nil
		}
		select {
		case <-p.done:
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			return nil, fmt.Errorf("%s exited during startup: %s", bin, tail(string(log), 2000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("%s did not accept connections within %v", bin, startupTimeout)
		}
	}
}

// Stop terminates the server and removes its directory.
func (p *Private) Stop() {
	if p.cmd.Process != nil {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	os.RemoveAll(p.Dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// DB is one test's database.
type DB struct {
	// Name of the database, unique to the test.
	Name string
	// DSN connects to the server with Name as the default database.
	DSN string
	// ServerDSN connects to the server without a default database.
	ServerDSN string
	// SQL is an open pool on DSN, closed at the end of the test.
	SQL *sql.DB
}

// New creates a fresh database for t and drops it when t ends.
func New(t testing.TB) *DB {
	t.Helper()
	server := ServerDSN(t)
	name := "jj_" + sanitize(t.Name()) + "_" + randomHex(4)
	admin, err := sql.Open("mysql", server)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec("CREATE DATABASE `" + name + "`"); err != nil {
		admin.Close()
		t.Fatalf("create test database %s: %v", name, err)
	}
	dsn, err := WithDatabase(server, name)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.Close()
		if _, err := admin.Exec("DROP DATABASE IF EXISTS `" + name + "`"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
		admin.Close()
	})
	return &DB{Name: name, DSN: dsn, ServerDSN: server, SQL: db}
}

// Exec runs statements in the test database and fails the test on the first error.
func (d *DB) Exec(t testing.TB, statements ...string) {
	t.Helper()
	for _, s := range statements {
		if _, err := d.SQL.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// WithDatabase returns dsn with its default database set to name.
func WithDatabase(dsn, name string) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", err
	}
	cfg.DBName = name
	return cfg.FormatDSN(), nil
}

func sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
