// Package mysqltest gives each test its own database on a real MySQL or MariaDB server.
//
// The server is JETJOBS_TEST_MYSQL_DSN, default root@tcp(127.0.0.1:3306)/. When none answers
// there and a mariadbd (or mysqld) binary exists, the first test starts a private throwaway
// instance (package mysqlserver: an empty data directory, a free loopback port) that Main
// removes after the package's tests. When neither is available the tests fail with a message
// saying how to provide a server; they never skip.
//
// Packages that use it call Main from TestMain:
//
//	func TestMain(m *testing.M) { mysqltest.Main(m) }
package mysqltest

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/jetjobs/jetjobs/internal/mysqlserver"
)

// EnvDSN names the server to test against.
const EnvDSN = "JETJOBS_TEST_MYSQL_DSN"

// DefaultDSN is used when EnvDSN is unset.
const DefaultDSN = "root@tcp(127.0.0.1:3306)/"

var (
	once      sync.Once
	serverDSN string
	serverErr error
	private   *mysqlserver.Server
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
	dsn, err := Server()
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// Server is ServerDSN for code without a testing.TB, such as runnable examples.
func Server() (string, error) {
	once.Do(func() { serverDSN, serverErr = resolve() })
	return serverDSN, serverErr
}

func resolve() (string, error) {
	dsn := os.Getenv(EnvDSN)
	if dsn == "" {
		dsn = DefaultDSN
	}
	pingErr := mysqlserver.Ping(dsn)
	if pingErr == nil {
		return dsn, nil
	}
	bin := mysqlserver.Binary()
	if bin == "" {
		return "", fmt.Errorf("no MySQL/MariaDB server answers at %s (%v) and no mariadbd or mysqld binary is installed: "+
			"start a server, set %s to its DSN, or %s", dsn, pingErr, EnvDSN, mysqlserver.InstallHint)
	}
	dir, err := os.MkdirTemp("", "jetjobs-mysqltest-")
	if err != nil {
		return "", err
	}
	p, err := mysqlserver.Start(bin, dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("no server at %s (%v), and starting a private one failed: %w", dsn, pingErr, err)
	}
	private = p
	return p.DSN, nil
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
