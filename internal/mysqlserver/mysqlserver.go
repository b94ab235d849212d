// Package mysqlserver starts throwaway MariaDB or MySQL servers from the binary installed on
// the machine: an empty data directory, no grant tables, a free loopback port. The tests
// (package mysqltest) and the demo (package demo) use it when no server answers.
//
// Invariants:
//   - A server listens on 127.0.0.1 only and lives in the directory it was given; Stop ends
//     it (SIGTERM, then SIGKILL after StopTimeout), waits for it, and removes the directory.
//   - A server never outlives the process that started it: it is started with a parent-death
//     signal (SIGTERM), so a killed test binary or demo does not leave it running.
//   - Halt ends the server process (any signal, SIGKILL after StopTimeout) and keeps its
//     directory; Restart starts it again on the same data directory and the same port, so a
//     client's DSN stays valid across the restart (the chaos tests crash and restart it).
package mysqlserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql" // the "mysql" database/sql driver
)

const (
	// StartupTimeout bounds the wait for a new server to accept connections.
	StartupTimeout = 60 * time.Second
	// StopTimeout is how long Stop waits after SIGTERM before it kills the server.
	StopTimeout = 20 * time.Second
	// pingTimeout bounds one connection check.
	pingTimeout = 3 * time.Second
)

// InstallHint tells a person how to get a server binary.
const InstallHint = "install one (Debian, Ubuntu: apt-get install mariadb-server)"

// ErrNoBinary: neither mariadbd nor mysqld is installed.
var ErrNoBinary = errors.New("no mariadbd or mysqld binary found")

// Binary returns the path of a mariadbd or mysqld binary (from PATH, /usr/sbin,
// /usr/local/sbin, /usr/local/mysql/bin or /usr/local/bin), or "".
func Binary() string {
	for _, name := range []string{"mariadbd", "mysqld"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin", "/usr/local/bin"} {
			p := filepath.Join(dir, name)
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return ""
}

// Ping checks that a server answers at dsn (go-sql-driver form) within a few seconds.
func Ping(dsn string) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	return db.PingContext(ctx)
}

// Server is a throwaway server process with its own data directory.
type Server struct {
	// DSN connects as root without a password and without a default database.
	DSN string
	// Dir holds the data directory, the socket, the pid file and server.log.
	Dir string
	// Binary is the server program that runs.
	Binary string

	args []string // the server's command line, for Restart

	mu   sync.Mutex
	cmd  *exec.Cmd     // the current process
	done chan struct{} // closed when cmd has exited
}

// Start starts bin on a free loopback port with an empty data directory under dir (created
// if needed; a data directory left there is reused as it is) and waits until it accepts
// connections. MySQL's mysqld initializes the data directory first (--initialize-insecure);
// MariaDB's starts from an empty one. The server's output goes to dir/server.log.
func Start(bin, dir string) (*Server, error) {
	// The server changes to its base directory: every path it gets must be absolute.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	common := []string{"--no-defaults", "--datadir=" + data}
	if os.Geteuid() == 0 {
		common = append(common, "--user=root")
	}
	mariadb := isMariaDB(bin)
	if !mariadb && isEmpty(data) {
		// MySQL refuses an empty data directory; MariaDB creates what it needs.
		init := exec.Command(bin, append(common, "--initialize-insecure")...)
		init.Stdout, init.Stderr = logFile, logFile
		if err := init.Run(); err != nil {
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("%s --initialize-insecure: %v: %s", bin, err, tail(string(log), 2000))
		}
	}
	args := append(common,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--port=%d", port),
		"--socket="+filepath.Join(dir, "mysqld.sock"),
		"--pid-file="+filepath.Join(dir, "mysqld.pid"),
		"--skip-log-bin",
		"--innodb-buffer-pool-size=256M",
		"--max-connections=500",
	)
	if mariadb {
		// MySQL's --skip-grant-tables turns networking off; its --initialize-insecure root
		// account has no password, which is all the tests and the demo need.
		args = append(args, "--skip-grant-tables")
	}
	s := &Server{DSN: fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port), Dir: dir, Binary: bin, args: args}
	if err := s.launch(); err != nil {
		return nil, err
	}
	return s, nil
}

// launch starts the server process and waits until it accepts connections.
func (s *Server) launch() error {
	logPath := filepath.Join(s.Dir, "server.log")
	// Appended to, so that a restarted server's log follows the crashed one's.
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(s.Binary, s.args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so a Ctrl-C meant for the test or the demo does not reach it
	// before they stop it; stopped by the parent-death signal if they die without Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(StartupTimeout)
	for {
		if err := Ping(s.DSN); err == nil {
			return nil
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("%s exited during startup: %s", s.Binary, tail(string(log), 2000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Halt(syscall.SIGTERM)
			return fmt.Errorf("%s did not accept connections within %v (its log: %s)", s.Binary, StartupTimeout, logPath)
		}
	}
}

// PID is the server's process id (of the current process, after a Restart).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Pid
}

// Done is closed when the server process has exited (the current process, after a Restart).
func (s *Server) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

// Halt sends sig to the server (SIGKILL for a crash, SIGTERM for a clean shutdown), waits for
// it to exit, killing it after StopTimeout, and keeps its directory for Restart.
func (s *Server) Halt(sig syscall.Signal) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(StopTimeout):
		cmd.Process.Kill()
		<-done
	}
}

// Restart starts a halted server again on the same data directory and port, and waits until it
// accepts connections. It is an error while the server runs.
func (s *Server) Restart() error {
	select {
	case <-s.Done():
	default:
		return fmt.Errorf("mysqlserver: restart %s: the server is still running (pid %d); Halt it first", s.DSN, s.PID())
	}
	return s.launch()
}

// Checkpoint writes every dirty InnoDB page to disk and waits until none is left. A server
// started on an empty data directory does not survive a crash (SIGKILL) until its freshly
// created system tablespace has been written out: MariaDB then refuses to start ("the data
// file './ibdata1' has the wrong space ID"). Call Checkpoint once before crash tests.
func (s *Server) Checkpoint(ctx context.Context) error {
	db, err := sql.Open("mysql", s.DSN)
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("mysqlserver: checkpoint: %w", err)
	}
	defer conn.Close()
	var pct, lwm string
	if err := conn.QueryRowContext(ctx, "SELECT @@GLOBAL.innodb_max_dirty_pages_pct, @@GLOBAL.innodb_max_dirty_pages_pct_lwm").Scan(&pct, &lwm); err != nil {
		return fmt.Errorf("mysqlserver: checkpoint: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SET GLOBAL innodb_max_dirty_pages_pct = "+pct+", GLOBAL innodb_max_dirty_pages_pct_lwm = "+lwm)
	if _, err := conn.ExecContext(ctx, "SET GLOBAL innodb_max_dirty_pages_pct = 0, GLOBAL innodb_max_dirty_pages_pct_lwm = 0.001"); err != nil {
		return fmt.Errorf("mysqlserver: checkpoint: %w", err)
	}
	for {
		var name string
		var dirty int
		if err := conn.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Scan(&name, &dirty); err != nil {
			return fmt.Errorf("mysqlserver: checkpoint: %w", err)
		}
		if dirty == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mysqlserver: checkpoint: %d dirty pages left: %w", dirty, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop terminates the server (SIGTERM, then SIGKILL after StopTimeout), waits for it to exit
// and removes its directory.
func (s *Server) Stop() {
	s.Halt(syscall.SIGTERM)
	os.RemoveAll(s.Dir)
}

// FreePort returns a TCP port that is free on 127.0.0.1 at the time of the call.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// isMariaDB reports whether bin is MariaDB's server (mysqld is often a link to mariadbd).
func isMariaDB(bin string) bool {
	if strings.Contains(filepath.Base(bin), "mariadb") {
		return true
	}
	out, _ := exec.Command(bin, "--no-defaults", "--version").CombinedOutput()
	return strings.Contains(strings.ToLower(string(out)), "mariadb")
}

func isEmpty(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) == 0
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
