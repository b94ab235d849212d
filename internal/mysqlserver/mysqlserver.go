// Package mysqlserver starts throwaway MariaDB or MySQL servers from the binary installed on
// the machine: an empty data directory, no grant tables, a free loopback port. The tests
// (package mysqltest) and the demo (package demo) use it when no server answers.
//
// Invariants:
//   - A server listens on 127.0.0.1 only and lives in the directory it was given; Stop ends
//     it (SIGTERM, then SIGKILL after StopTimeout), waits for it, and removes the directory.
//   - A server never outlives the process that started it: it is started with a parent-death
//     signal (SIGTERM), so a killed test binary or demo does not leave it running.
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

	cmd  *exec.Cmd
	done chan struct{}
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
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so a Ctrl-C meant for the test or the demo does not reach it
	// before they stop it; stopped by the parent-death signal if they die without Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{DSN: fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port), Dir: dir, Binary: bin, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(StartupTimeout)
	for {
		if err := Ping(s.DSN); err == nil {
			return s, nil
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("%s exited during startup: %s", bin, tail(string(log), 2000))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("%s did not accept connections within %v (its log: %s)", bin, StartupTimeout, logPath)
		}
	}
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Done is closed when the server process has exited.
func (s *Server) Done() <-chan struct{} { return s.done }

// Stop terminates the server (SIGTERM, then SIGKILL after StopTimeout), waits for it to exit
// and removes its directory.
func (s *Server) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(StopTimeout):
		s.cmd.Process.Kill()
		<-s.done
	}
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
