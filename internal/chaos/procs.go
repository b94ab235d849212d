package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jetjobs/jetjobs/internal/buildtest"
	"github.com/jetjobs/jetjobs/internal/mysqlserver"
)

// programs are the main packages a run needs, by binary name.
var programs = []string{
	"github.com/jetjobs/jetjobs/cmd/scheduler",
	"github.com/jetjobs/jetjobs/cmd/worker",
	"github.com/jetjobs/jetjobs/cmd/jobsctl",
	"github.com/jetjobs/jetjobs/internal/chaos/natsd",
}

// stopTimeout bounds the wait for a process to exit after SIGTERM before it is killed.
const stopTimeout = 20 * time.Second

// Build compiles the programs a run needs into a new temporary directory (the go command must
// run inside this module) and returns it with a function that removes it.
func Build() (dir string, remove func(), err error) {
	return buildtest.Build(programs...)
}

// proc is a child process: a server or a program, with its output in a log file.
type proc struct {
	name    string // e.g. "worker-3", "scheduler-1", "nats-n2"
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // set when done is closed

	// metrics is the host:port of the program's HTTP server, if any.
	metrics string
	// stopping is set when the harness stops the process on purpose, so that its exit is not
	// reported as unexpected.
	mu       sync.Mutex
	stopping bool
}

// startProc runs bin with args, its stdout and stderr appended to logPath, in a process group of
// its own, killed if the harness dies.
func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// markStopping records that the harness ends the process on purpose.
func (p *proc) markStopping() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
}

func (p *proc) isStopping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping
}

func (p *proc) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// stop sends sig and waits up to timeout for the exit, then kills the process.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) {
	p.markStopping()
	p.signal(sig)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

// exitStatus describes how the process ended.
func (p *proc) exitStatus() string {
	if p.err == nil {
		return "exit 0"
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return "exit " + strconv.Itoa(ee.ExitCode())
	}
	return p.err.Error()
}

// logTail returns the last n lines of the process's log.
func (p *proc) logTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freeAddr returns a free host:port on 127.0.0.1.
func freeAddr() (string, error) {
	port, err := mysqlserver.FreePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(port), nil
}

// httpClient is for the programs' and servers' HTTP endpoints on loopback.
var httpClient = &http.Client{Timeout: 3 * time.Second}

// httpGet returns the body of a GET of url, with its status code.
func httpGet(ctx context.Context, url string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return string(body), resp.StatusCode, err
}

// promValues reads the values of the named unlabelled metrics from a Prometheus text page.
func promValues(page string, names ...string) map[string]float64 {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(page))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, value, ok := strings.Cut(line, " ")
		if !ok || !want[name] {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// binPath is the path of a built program.
func binPath(dir, name string) string { return filepath.Join(dir, name) }
