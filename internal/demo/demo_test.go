package demo_test

import (
	"bytes"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/buildtest"
	"github.com/jetjobs/jetjobs/internal/mysqlserver"
	"github.com/jetjobs/jetjobs/internal/mysqltest"
)

// binDir holds the demo and the three programs, built once for the package.
var binDir string

func TestMain(m *testing.M) {
	dir, remove, err := buildtest.Build("../../demo", "../../cmd/scheduler", "../../cmd/worker", "../../cmd/jobsctl")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	mysqltest.Main(m, remove)
}

const (
	keys       = 160 // 8 subjects × 20 sessions in demo/pipeline.sql
	failing    = 8   // session 13 of every subject
	runTimeout = 3 * time.Minute
)

// run is one run of the demo program, with stdin not a terminal.
type run struct {
	t        *testing.T
	cmd      *exec.Cmd
	out      *buildtest.Output
	done     chan struct{}
	mark     string // in the environment of the demo and of everything it starts
	database string
}

// startDemo runs the demo in the working directory dir, with JETJOBS_MYSQL_DSN=dsn, its own
// database, its state in dir/.demo (given as a relative path, as make demo does), and
// DEMO_WORK_SECONDS=work for the handler.
func startDemo(t *testing.T, dsn, database, dir, work string) *run {
	t.Helper()
	assets, err := filepath.Abs("../../demo")
	if err != nil {
		t.Fatal(err)
	}
	r := &run{t: t, out: &buildtest.Output{}, done: make(chan struct{}), mark: randomHex(8), database: database}
	r.cmd = exec.Command(filepath.Join(binDir, "demo"), "--bin", binDir, "--assets", assets, "--database", database)
	r.cmd.Dir = dir
	r.cmd.Env = append(os.Environ(), "JETJOBS_MYSQL_DSN="+dsn, "DEMO_WORK_SECONDS="+work, "JETJOBS_DEMO_TEST_MARK="+r.mark)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	// A process left behind holding the output pipe must not hold up Wait: it is reported.
	r.cmd.WaitDelay = 5 * time.Second
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", r.out.String())
		}
		// Whatever a failed run left behind must not outlive the test.
		for _, pid := range marked(r.mark) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return r
}

// wait waits for the demo to exit and returns its exit code.
func (r *run) wait() int {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(runTimeout):
		r.t.Fatalf("the demo did not exit within %v", runTimeout)
	}
	return r.cmd.ProcessState.ExitCode()
}

// waitOutput waits until the demo's output matches re.
func (r *run) waitOutput(re *regexp.Regexp) {
	r.t.Helper()
	deadline := time.Now().Add(runTimeout)
	for !re.MatchString(r.out.String()) {
		if time.Now().After(deadline) {
			r.t.Fatalf("the demo's output never matched %v", re)
		}
		select {
		case <-r.done:
			r.t.Fatalf("the demo exited before its output matched %v", re)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

var pidRE = regexp.MustCompile(`\(pid (\d+)\)`)

// checkNothingLeft checks that every pid the demo printed is gone, and that no process
// carries the run's mark in its environment (handlers and whatever they started included).
func (r *run) checkNothingLeft() {
	r.t.Helper()
	pids := pidRE.FindAllStringSubmatch(r.out.String(), -1)
	if len(pids) == 0 {
		r.t.Error("the demo printed no pid")
	}
	for _, m := range pids {
		pid, _ := strconv.Atoi(m[1])
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			r.t.Errorf("process %d started by the demo is still there after it exited (kill 0: %v): %s", pid, err, cmdline(pid))
		}
	}
	for _, pid := range marked(r.mark) {
		r.t.Errorf("process %d, started by the demo, is still running: %s", pid, cmdline(pid))
	}
}

// checkOutcome checks the progress and errors tables of a finished demo.
func (r *run) checkOutcome() {
	r.t.Helper()
	out := r.out.String()
	want := []string{r.database + ".__analysis", "0", "0", strconv.Itoa(keys - failing), strconv.Itoa(failing), "0", strconv.Itoa(keys)}
	found := false
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Join(strings.Fields(line), " ") == strings.Join(want, " ") {
			found = true
		}
	}
	if !found {
		r.t.Errorf("jobsctl progress: no line %q (table, pending, reserved, success, error, ignore, total)", strings.Join(want, " "))
	}
	_, errorsTable, ok := strings.Cut(out, "$ "+filepath.Join(binDir, "jobsctl")+" errors")
	if !ok {
		r.t.Fatal("the demo did not show jobsctl errors")
	}
	for subject := 1; subject <= 8; subject++ {
		key := fmt.Sprintf("subject_id=%d,session_id=13", subject)
		if !strings.Contains(errorsTable, key) || !strings.Contains(errorsTable, fmt.Sprintf("ValueError: subject %d, session 13", subject)) {
			r.t.Errorf("jobsctl errors does not list %s with its ValueError", key)
		}
	}
	if n := strings.Count(errorsTable, "session_id=13"); n != failing {
		r.t.Errorf("jobsctl errors lists %d failed jobs, want %d", n, failing)
	}
	if strings.Contains(out, "killing it") {
		r.t.Error("the demo had to kill a program that did not stop")
	}
}

func TestDemo(t *testing.T) {
	t.Run("uses the server at JETJOBS_MYSQL_DSN, ends by itself without a terminal, and runs again", func(t *testing.T) {
		t.Parallel()
		server := mysqltest.ServerDSN(t)
		database := "jj_demo_" + randomHex(4)
		t.Cleanup(func() { dropDatabase(t, server, database) })
		dir := t.TempDir()
		for i := 1; i <= 2; i++ {
			r := startDemo(t, server, database, dir, "0")
			if code := r.wait(); code != 0 {
				t.Fatalf("run %d: exit %d", i, code)
			}
			if strings.Contains(r.out.String(), "private") {
				t.Errorf("run %d started a private server although one answers at %s", i, server)
			}
			r.checkOutcome()
			r.checkNothingLeft()
		}
	})

	t.Run("starts a private server when none answers, and stops it", func(t *testing.T) {
		t.Parallel()
		r := startDemo(t, unreachableDSN(t), "jetjobs_demo", t.TempDir(), "0")
		if code := r.wait(); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if !regexp.MustCompile(`private MySQL server running \(pid \d+\)`).MatchString(r.out.String()) {
			t.Error("the demo did not report a private server")
		}
		r.checkOutcome()
		r.checkNothingLeft()
	})

	t.Run("Ctrl-C stops the worker, the scheduler, the handlers and the private server", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		r := startDemo(t, unreachableDSN(t), "jetjobs_demo", dir, "0.5")
		r.waitOutput(regexp.MustCompile(`worker running \(pid \d+\)`))
		// Let handlers start, so that some are running when the signal comes.
		waitFor(t, "a handler to run", func() bool { return len(marked(r.mark)) > 4 })
		r.cmd.Process.Signal(os.Interrupt)
		if code := r.wait(); code != 130 {
			t.Errorf("exit %d after Ctrl-C, want 130", code)
		}
		r.checkNothingLeft()
		if _, err := os.Stat(filepath.Join(dir, ".demo", "mysql")); !os.IsNotExist(err) {
			t.Errorf("the private server's directory is still there: %v", err)
		}
	})
}

// unreachableDSN is a DSN where no server answers.
func unreachableDSN(t *testing.T) string {
	t.Helper()
	port, err := mysqlserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port)
}

func dropDatabase(t *testing.T, server, database string) {
	db, err := sql.Open("mysql", server)
	if err != nil {
		t.Error(err)
		return
	}
	defer db.Close()
	if _, err := db.Exec("DROP DATABASE IF EXISTS `" + database + "`"); err != nil {
		t.Errorf("drop the demo database %s: %v", database, err)
	}
}

// marked lists the processes whose environment holds JETJOBS_DEMO_TEST_MARK=mark.
func marked(mark string) []int {
	want := []byte("JETJOBS_DEMO_TEST_MARK=" + mark + "\x00")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err == nil && bytes.Contains(env, want) && !isZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z'
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(runTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", runTimeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
