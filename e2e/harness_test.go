package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/buildtest"
	"github.com/jetjobs/jetjobs/internal/djtest"
	"github.com/jetjobs/jetjobs/internal/mysqltest"
)

// binDir holds the programs built once for the package.
var binDir string

func TestMain(m *testing.M) {
	dir, remove, err := buildtest.Build("../cmd/scheduler", "../cmd/worker", "../cmd/jobsctl")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	mysqltest.Main(m, remove)
}

// waitTimeout bounds every wait for the system to reach a state; generous, because CI is a
// loaded two-core machine. Waiting is polling with a deadline, never a fixed sleep.
const waitTimeout = 120 * time.Second

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// env is one end-to-end test's world: its database, its NATS URL, a directory with the
// config file, the handler script and the per-call log.
type env struct {
	t       *testing.T
	db      *mysqltest.DB
	natsURL string
	dir     string
	config  string
	calls   string
	extra   []string         // environment added to every process
	nats    map[string]any   // overrides of the config's nats section
	tables  []map[string]any // the config's tables; nil: the pipeline's __analysis
	// dispatch is the config's dispatch; "": not given (the default, auto).
	dispatch string
}

// handlerScript is the --exec handler: it logs each call's start and end (key, worker pid,
// attempt, nanosecond time), and outputs the target row. SLOW_KEY sleeps on its first attempt;
// FAIL_KEY always fails; RETRY_KEY asks for a retry on its first attempt.
const handlerScript = `#!/bin/sh
k="$JETJOBS_KEY_SUBJECT_ID:$JETJOBS_KEY_SESSION_ID"
cat > /dev/null
# The worker runs this script directly (its parent), or through /bin/sh -c (its grandparent).
# 0: the worker died before the script could look (a killed worker's orphan).
wpid=$PPID
if [ "$(cat /proc/$PPID/comm 2>/dev/null)" != worker ]; then
  read -r _ _ _ wpid _ < /proc/$PPID/stat 2>/dev/null || wpid=0
fi
echo "start $k $wpid $JETJOBS_ATTEMPT $(date +%s%N) $JETJOBS_TABLE" >> "$CALLS_LOG"
if [ "$k" = "$SLOW_KEY" ] && [ "$JETJOBS_ATTEMPT" = 1 ]; then sleep 600; fi
if [ "$k" = "$HOLD_KEY" ]; then sleep 600; fi
if [ "$k" = "$FAIL_KEY" ]; then echo "fail $k $wpid $JETJOBS_ATTEMPT $(date +%s%N)" >> "$CALLS_LOG"; echo "traceback line 1" >&2; echo "ValueError: bad session $k" >&2; exit 3; fi
if [ "$k" = "$RETRY_KEY" ] && [ "$JETJOBS_ATTEMPT" = 1 ]; then echo "fail $k $wpid $JETJOBS_ATTEMPT $(date +%s%N)" >> "$CALLS_LOG"; echo "busy, try later" >&2; exit 75; fi
echo "end $k $wpid $JETJOBS_ATTEMPT $(date +%s%N) $JETJOBS_TABLE" >> "$CALLS_LOG"
echo "{\"result\": $JETJOBS_KEY_SESSION_ID.5}"
`

func newEnv(t *testing.T, natsURL string) *env {
	t.Helper()
	e := &env{t: t, db: mysqltest.New(t), natsURL: natsURL, dir: t.TempDir()}
	e.calls = filepath.Join(e.dir, "calls.log")
	if err := os.WriteFile(e.calls, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "handler.sh"), []byte(handlerScript), 0o755); err != nil {
		t.Fatal(err)
	}
	e.writeConfig(map[string]any{})
	return e
}

// writeConfig writes the config file: short leases and intervals so recoveries happen within
// seconds, with overrides of the jobs section.
func (e *env) writeConfig(jobs map[string]any) {
	e.t.Helper()
	j := map[string]any{
		"lease_duration":   3,
		"refresh_interval": 1,
		"retry_backoff":    1,
		"max_attempts":     3,
		"stale_timeout":    3600,
	}
	for k, v := range jobs {
		j[k] = v
	}
	n := map[string]any{"url": e.natsURL, "subject_prefix": e.prefix(), "ack_wait": 2}
	for k, v := range e.nats {
		n[k] = v
	}
	cfg := map[string]any{
		"mysql":  map[string]any{"dsn": e.db.ServerDSN},
		"nats":   n,
		"jobs":   j,
		"tables": e.tables,
	}
	if e.tables == nil {
		cfg["tables"] = []map[string]any{{"table": e.db.Name + ".__analysis"}}
	}
	if e.dispatch != "" {
		cfg["dispatch"] = e.dispatch
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	e.config = filepath.Join(e.dir, "jetjobs.json")
	if err := os.WriteFile(e.config, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) table() string { return e.db.Name + ".__analysis" }

// pipeline creates DataJoint's sample pipeline: subject → session → __analysis, with
// subjects × sessions keys.
func (e *env) pipeline(subjects, sessions int) {
	e.t.Helper()
	e.db.Exec(e.t,
		"CREATE TABLE subject (subject_id int NOT NULL, PRIMARY KEY (subject_id))",
		"CREATE TABLE session (subject_id int NOT NULL, session_id int NOT NULL, PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
		"CREATE TABLE __analysis (subject_id int NOT NULL, session_id int NOT NULL, result float NOT NULL, PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id, session_id) REFERENCES session (subject_id, session_id))",
		fmt.Sprintf("INSERT INTO subject SELECT seq FROM seq_0_to_%d", subjects-1),
		fmt.Sprintf("INSERT INTO session SELECT s.subject_id, q.seq FROM subject s, seq_0_to_%d q", sessions-1),
	)
}

// proc is a running program whose output is kept.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *buildtest.Output
	done chan struct{}
	err  error
}

// start runs program (scheduler, worker, jobsctl) with the env's config; it is killed at the
// end of the test if still running, and its output is logged when the test fails.
func (e *env) start(program string, args ...string) *proc {
	e.t.Helper()
	return e.startBinary(program, filepath.Join(binDir, program), args...)
}

// startBinary is start for a program built elsewhere, at path.
func (e *env) startBinary(program, path string, args ...string) *proc {
	e.t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "JETJOBS_CONFIG="+e.config, "CALLS_LOG="+e.calls)
	cmd.Env = append(cmd.Env, e.extra...)
	p := &proc{name: program, cmd: cmd, out: &buildtest.Output{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	e.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
		if e.t.Failed() {
			e.t.Logf("--- output of %s %v (pid %d):\n%s", program, args, cmd.Process.Pid, p.out.String())
		}
	})
	return p
}

// run runs program to completion and returns its output and exit code.
func (e *env) run(program string, args ...string) (string, int) {
	e.t.Helper()
	p := e.start(program, args...)
	return p.output(), p.wait(e.t)
}

func (p *proc) output() string {
	<-p.done
	return p.out.String()
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not exit within %v; output:\n%s", p.name, waitTimeout, p.out.String())
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

func (p *proc) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// call is one line of the handler's per-call log.
type call struct {
	phase   string // start, end, or fail (the handler exits with an error)
	key     string // subject:session
	pid     int    // the worker that ran it
	attempt int
	at      time.Time
}

func (e *env) readCalls() []call {
	e.t.Helper()
	f, err := os.Open(e.calls)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	var calls []call
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			e.t.Fatalf("bad call log line %q", sc.Text())
		}
		pid, _ := strconv.Atoi(fields[2])
		attempt, _ := strconv.Atoi(fields[3])
		ns, _ := strconv.ParseInt(fields[4], 10, 64)
		calls = append(calls, call{phase: fields[0], key: fields[1], pid: pid, attempt: attempt, at: time.Unix(0, ns)})
	}
	return calls
}

// count runs a COUNT(*) query in the test database.
func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.SQL.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// checksum fingerprints the whole jobs table, to prove that bad input changed no row.
func (e *env) checksum() string {
	e.t.Helper()
	var table string
	var sum *int64
	if err := e.db.SQL.QueryRow("CHECKSUM TABLE `~~analysis`").Scan(&table, &sum); err != nil {
		e.t.Fatal(err)
	}
	if sum == nil {
		return "no table"
	}
	return strconv.FormatInt(*sum, 10)
}

// checkInvariants checks, from the per-call log, that no key ran twice at once under live
// leases and that live workers computed every key at most once. A killed worker's runs may be
// repeated (their outcomes may not have been recorded), but only after its leases could have
// expired: a later run of the same key must start after killedAt+lease/2. Every run a live
// worker started must have ended (end or fail).
func (e *env) checkInvariants(killedAt map[int]time.Time, lease time.Duration) {
	e.t.Helper()
	type run struct {
		start time.Time
		pid   int
		ended string // "end", "fail", or "" while running
	}
	runs := map[string][]*run{}
	current := map[string]*run{} // key + pid → its open run
	for _, c := range e.readCalls() {
		id := fmt.Sprintf("%s/%d", c.key, c.pid)
		switch c.phase {
		case "start":
			r := &run{start: c.at, pid: c.pid}
			runs[c.key] = append(runs[c.key], r)
			current[id] = r
		case "end", "fail":
			if r := current[id]; r != nil {
				r.ended = c.phase
				delete(current, id)
			}
		}
	}
	// A run whose worker was already gone when it started belongs to a killed worker.
	var lastKill time.Time
	for _, at := range killedAt {
		if at.After(lastKill) {
			lastKill = at
		}
	}
	for key, rs := range runs {
		computed := 0
		for _, r := range rs {
			killed, isKilled := killedAt[r.pid]
			if r.pid == 0 && !lastKill.IsZero() {
				killed, isKilled = lastKill, true
			}
			switch {
			case !isKilled && r.ended == "":
				e.t.Errorf("key %s started by live worker %d at %v never ended", key, r.pid, r.start)
			case !isKilled && r.ended == "end":
				computed++
			}
			if !isKilled {
				continue
			}
			for _, other := range rs {
				if other.pid != r.pid && other.start.After(r.start) && other.start.Before(killed.Add(lease/2)) {
					e.t.Errorf("key %s ran in worker %d at %v while killed worker %d (killed at %v) still held its lease", key, other.pid, other.start, r.pid, killed)
				}
			}
		}
		if computed > 1 {
			var desc []string
			for _, r := range rs {
				desc = append(desc, fmt.Sprintf("pid %d start %s ended %q", r.pid, r.start.Format("15:04:05.000"), r.ended))
			}
			e.t.Errorf("key %s was computed %d times by live workers (killed: %v): %s", key, computed, killedAt, strings.Join(desc, "; "))
		}
	}
}

// snippet is a fenced code block of the README.
type snippet struct {
	lang, text string
	line       int // where it starts in the README
}

// readmeSection returns the fenced code blocks of the README's section titled title.
func readmeSection(t *testing.T, title string) []snippet {
	t.Helper()
	root, err := djtest.Root()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var snippets []snippet
	var in *snippet
	inSection := false
	for i, line := range strings.Split(string(data), "\n") {
		switch {
		case in != nil && line == "```":
			snippets = append(snippets, *in)
			in = nil
		case in != nil:
			in.text += line + "\n"
		case strings.HasPrefix(line, "## "):
			inSection = line == "## "+title
		case inSection && strings.HasPrefix(line, "```"):
			in = &snippet{lang: strings.TrimPrefix(line, "```"), line: i + 1}
		}
	}
	if len(snippets) == 0 {
		t.Fatalf("the README has no section %q with code", title)
	}
	return snippets
}

// killWorkerRunning waits for key's handler to start, SIGKILLs the worker that runs it (one of
// workers), and returns when, by pid.
func (e *env) killWorkerRunning(workers []*proc, key string) map[int]time.Time {
	e.t.Helper()
	var victim int
	waitFor(e.t, "the job of "+key+" to start", func() bool {
		for _, c := range e.readCalls() {
			if c.phase == "start" && c.key == key {
				victim = c.pid
				return true
			}
		}
		return false
	})
	killedAt := map[int]time.Time{}
	for _, w := range workers {
		if w.cmd.Process.Pid == victim {
			w.signal(syscall.SIGKILL)
			killedAt[victim] = time.Now()
		}
	}
	if len(killedAt) != 1 {
		e.t.Fatalf("the job of %s ran in pid %d, which is none of the workers", key, victim)
	}
	return killedAt
}
