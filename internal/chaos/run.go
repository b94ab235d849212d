package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jetjobs/jetjobs/internal/procfs"
)

// ErrUsage marks bad options (the command line exits with 2).
var ErrUsage = errors.New("chaos: bad usage")

// The pipeline: DataJoint's sample subject → session → __analysis, keys subject:session.
const (
	targetTable        = "__analysis"
	jobsTable          = "~~analysis"
	sessionsPerSubject = 100
	subjectPrefix      = "chaos"
)

// Pacing of the harness's own loops.
const (
	superviseInterval = 200 * time.Millisecond
	feedInterval      = 250 * time.Millisecond
	drainPoll         = 500 * time.Millisecond
	handlersGoneWait  = 15 * time.Second
)

// runLog writes the run's progress, each line stamped with the time since the start.
type runLog struct {
	mu   sync.Mutex
	w    io.Writer
	t0   time.Time
	name string // the first word of every line; default "chaos"
}

func (l *runLog) since() time.Duration { return time.Since(l.t0) }

func (l *runLog) at(t time.Time) time.Duration { return t.Sub(l.t0) }

func (l *runLog) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	name := l.name
	if name == "" {
		name = "chaos"
	}
	fmt.Fprintf(l.w, "%s %8.3fs %s\n", name, l.since().Seconds(), fmt.Sprintf(format, args...))
}

// harness is one chaos run's world.
type harness struct {
	opts    Options
	dir     string
	bins    string
	log     *runLog
	rng     *rand.Rand
	mysql   *mysqlWorld
	nats    *natsWorld
	watcher *callWatcher
	links   []*workerLinks // by worker slot

	table     string // schema.table
	prefix    string // subject prefix
	config    string // the programs' config file
	handler   string // the handler script
	callsPath string
	induced   map[string]bool // keys whose handler always fails

	mu         sync.Mutex
	workers    []*proc // slots; nil while a replacement is due
	schedulers []*proc
	all        []*proc // every program started, for the cleanup
	started    map[string]int
	faults     []faultRecord
	notes      []string // unexpected process exits and other findings outside the counts
}

// Run runs one chaos run: it starts the servers and programs, feeds the pipeline while faults
// happen for opts.Duration, heals everything, lets the system drain and checks the result. The
// error is for a run that could not be carried out (setup, interruption); violations are in the
// Result.
func Run(ctx context.Context, opts Options) (*Result, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	h := &harness{
		opts:    opts,
		log:     &runLog{w: opts.Log, t0: time.Now()},
		rng:     rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x6a65746a6f6273)),
		table:   database + "." + targetTable,
		prefix:  subjectPrefix,
		started: map[string]int{},
	}
	dir, err := os.MkdirTemp(opts.Dir, "jetjobs-chaos-")
	if err != nil {
		return nil, err
	}
	h.dir = dir
	res, err := h.run(ctx)
	keep := opts.Keep && (err != nil || res == nil || !res.OK())
	h.cleanup(keep)
	if keep {
		h.log.printf("kept the run's directory: %s", dir)
		if res != nil {
			res.Dir = dir
		}
	} else {
		os.RemoveAll(dir)
	}
	return res, err
}

func (h *harness) run(ctx context.Context) (*Result, error) {
	// Whatever ends the run ends its goroutines too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	o := h.opts
	h.log.printf("seed %d: %d keys, %v of faults, %d workers (-j %d), %d schedulers, NATS %s%s, in %s",
		o.Seed, o.Keys, o.Duration, o.Workers, o.Concurrency, o.Schedulers, o.NATS, map[bool]string{true: " cluster of 3", false: ""}[o.Cluster], h.dir)
	if err := os.MkdirAll(filepath.Join(h.dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	h.bins = o.BinDir
	if h.bins == "" {
		h.log.printf("building the programs")
		bins, remove, err := Build()
		if err != nil {
			return nil, fmt.Errorf("%w (the go command builds them from the jetjobs module: run inside it, or give prebuilt programs with --bin)", err)
		}
		defer remove()
		h.bins = bins
	}
	natsBin := binPath(h.bins, "natsd")
	if o.NATS == NATS29 {
		natsBin = DebianNATSServer
		if _, err := os.Stat(natsBin); err != nil {
			return nil, fmt.Errorf("NATS 2.9: %w (Debian: apt-get install nats-server)", err)
		}
	}

	var err error
	if h.mysql, err = startMySQL(ctx, h.dir); err != nil {
		return nil, err
	}
	if h.nats, err = startNATS(ctx, h.dir, natsBin, o.Cluster, h.log); err != nil {
		return nil, fmt.Errorf("start NATS: %w", err)
	}
	if err := h.setup(ctx); err != nil {
		return nil, err
	}
	if h.watcher, err = newCallWatcher(h.callsPath); err != nil {
		return nil, err
	}
	h.log.printf("MariaDB %s, NATS %s", h.mysql.schedulerDSN(), h.nats.urls())
	for i := range o.Workers {
		l, err := newWorkerLinks(h.mysql, h.nats)
		if err != nil {
			return nil, err
		}
		h.links = append(h.links, l)
		h.log.printf("worker slot %d: %s", i, l)
	}

	// The programs, kept running by the supervisor.
	h.workers = make([]*proc, o.Workers)
	h.schedulers = make([]*proc, o.Schedulers)
	superviseCtx, stopSupervising := context.WithCancel(ctx)
	supervised := make(chan struct{})
	go func() { defer close(supervised); h.supervise(superviseCtx) }()
	stopSupervisor := func() {
		stopSupervising()
		<-supervised
	}
	defer stopSupervisor()

	// Keys arrive during the first part of the fault phase; faults hit the whole phase.
	faultCtx, stopFaults := context.WithTimeout(ctx, o.Duration)
	defer stopFaults()
	fed := make(chan error, 1)
	go func() { fed <- h.feed(ctx, time.Duration(float64(o.Duration)*DefaultFeedShare)) }()
	if kinds := h.enabledFaults(); len(kinds) > 0 {
		h.log.printf("fault phase: %d kinds enabled: %s", len(kinds), strings.Join(kinds, ", "))
	} else {
		h.log.printf("no faults: a baseline run")
	}
	h.runFaults(faultCtx)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	h.log.printf("fault phase over: healing everything")
	if err := h.healAll(); err != nil {
		return nil, fmt.Errorf("heal: %w", err)
	}
	if err := <-fed; err != nil {
		return nil, err
	}
	h.log.printf("every key inserted; draining (deadline %v)", o.Drain)
	drained := h.drain(ctx)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if !drained {
		h.log.printf("not drained after %v", o.Drain)
	}
	snap, err := h.snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the final state: %w", err)
	}
	stopSupervisor()
	h.stopPrograms()
	h.waitHandlersGone()
	h.watcher.close()
	res := h.check(snap)
	res.Seconds = h.log.since().Seconds()
	return res, nil
}

// setup creates the pipeline's tables and subjects, the handler, the call log and the config.
func (h *harness) setup(ctx context.Context) error {
	subjects := (h.opts.Keys + sessionsPerSubject - 1) / sessionsPerSubject
	for _, q := range []string{
		"CREATE TABLE subject (subject_id int NOT NULL, PRIMARY KEY (subject_id))",
		"CREATE TABLE session (subject_id int NOT NULL, session_id int NOT NULL, PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
		"CREATE TABLE " + targetTable + " (subject_id int NOT NULL, session_id int NOT NULL, result float NOT NULL, PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id, session_id) REFERENCES session (subject_id, session_id))",
		fmt.Sprintf("INSERT INTO subject SELECT seq FROM seq_0_to_%d", subjects-1),
	} {
		if _, err := h.mysql.exec(ctx, q); err != nil {
			return fmt.Errorf("create the pipeline: %s: %w", q, err)
		}
	}
	// Induced errors: about one key per thousand, chosen by the seed.
	h.induced = map[string]bool{}
	n := max(1, h.opts.Keys*DefaultInducedPerMille/1000)
	for len(h.induced) < n {
		h.induced[keyName(h.rng.IntN(h.opts.Keys))] = true
	}
	h.handler = filepath.Join(h.dir, handlerName)
	if err := os.WriteFile(h.handler, []byte(handlerScript), 0o755); err != nil {
		return err
	}
	h.callsPath = filepath.Join(h.dir, "calls.log")
	cfg := map[string]any{
		"mysql": map[string]any{"dsn": h.mysql.schedulerDSN()},
		"nats": map[string]any{
			"url": h.nats.urls(), "subject_prefix": h.prefix, "ack_wait": ackWaitSeconds,
			"replicas": len(h.nats.nodes),
		},
		"jobs": map[string]any{
			"lease_duration": leaseSeconds, "refresh_interval": refreshSeconds,
			"retry_backoff": 1, "max_attempts": 3, "stale_timeout": 3600,
		},
		"tables": []map[string]any{{"table": h.table}},
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	h.config = filepath.Join(h.dir, "jetjobs.json")
	return os.WriteFile(h.config, data, 0o644)
}

// keyName is the i-th key of the pipeline, "subject:session".
func keyName(i int) string {
	return strconv.Itoa(i/sessionsPerSubject) + ":" + strconv.Itoa(i%sessionsPerSubject)
}

func (h *harness) inducedList() string {
	keys := make([]string, 0, len(h.induced))
	for k := range h.induced {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, " ")
}

// feed inserts the sessions (the keys) evenly over span, retrying through MySQL faults.
func (h *harness) feed(ctx context.Context, span time.Duration) error {
	steps := max(1, int(span/feedInterval))
	batch := (h.opts.Keys + steps - 1) / steps
	next := time.Now()
	for i := 0; i < h.opts.Keys; i += batch {
		var values []string
		for k := i; k < min(i+batch, h.opts.Keys); k++ {
			values = append(values, fmt.Sprintf("(%d,%d)", k/sessionsPerSubject, k%sessionsPerSubject))
		}
		q := "INSERT IGNORE INTO session VALUES " + strings.Join(values, ",")
		for {
			_, err := h.mysql.exec(ctx, q)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted: %w", ctx.Err())
			}
			sleepCtx(ctx, superviseInterval)
		}
		next = next.Add(feedInterval)
		sleepCtx(ctx, time.Until(next))
	}
	return nil
}

// supervise keeps every worker and scheduler slot filled until ctx ends, as a service manager
// would: a slot emptied by a fault gets a new process at once, and so does one whose process
// exited by itself, which is noted.
func (h *harness) supervise(ctx context.Context) {
	for {
		h.fillSlots(ctx, "worker", h.workers)
		h.fillSlots(ctx, "scheduler", h.schedulers)
		if !sleepCtx(ctx, superviseInterval) {
			return
		}
	}
}

func (h *harness) fillSlots(ctx context.Context, program string, slots []*proc) {
	// Slots are filled in order, so that the processes' numbers follow the slots at the start.
	for i := range slots {
		h.mu.Lock()
		p := slots[i]
		h.mu.Unlock()
		if p != nil && !p.exited() {
			continue
		}
		if p != nil && !p.isStopping() {
			h.note("%s (pid %d) exited by itself (%s) at %.3fs; last log lines:\n%s", p.name, p.pid(), p.exitStatus(), h.log.since().Seconds(), indent(p.logTail(8)))
		}
		np, err := h.startProgram(program, i)
		if err != nil {
			h.log.printf("start a %s: %v", program, err)
			continue
		}
		h.mu.Lock()
		slots[i] = np
		h.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
	}
}

func (h *harness) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.log.printf("note: %s", msg)
	h.mu.Lock()
	h.notes = append(h.notes, msg)
	h.mu.Unlock()
}

// startProgram starts a scheduler, or a worker for a slot (through the slot's proxies), with a
// metrics port.
func (h *harness) startProgram(program string, slot int) (*proc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.started[program]++
	name := fmt.Sprintf("%s-%d", program, h.started[program])
	h.mu.Unlock()
	args := []string{"--config", h.config, "--metrics-addr", addr}
	var env []string
	if program == "worker" {
		args = append(args,
			"--mysql", h.links[slot].mysqlDSN(), "--nats", h.links[slot].natsURLs(),
			"--exec", h.handler, "-j", strconv.Itoa(h.opts.Concurrency), "--suppress-errors",
			"--grace", workerGrace.String())
		env = []string{
			"CHAOS_CALLS=" + h.callsPath,
			"CHAOS_FAIL_KEYS=" + h.inducedList(),
			"CHAOS_MAX_SLEEP_MS=" + strconv.Itoa(int(h.opts.MaxSleep/time.Millisecond)),
			"CHAOS_SLOW_PERMILLE=" + strconv.Itoa(h.opts.SlowPerMille),
			"CHAOS_SLOW_MIN_MS=" + strconv.Itoa(int(slowMin/time.Millisecond)),
			"CHAOS_SLOW_MAX_MS=" + strconv.Itoa(int(slowMax/time.Millisecond)),
		}
	}
	p, err := startProc(name, filepath.Join(h.dir, "logs", name+".log"), env, binPath(h.bins, program), args...)
	if err != nil {
		return nil, err
	}
	p.metrics = addr
	h.mu.Lock()
	h.all = append(h.all, p)
	h.mu.Unlock()
	h.log.printf("started %s (pid %d)", name, p.pid())
	return p, nil
}

// healAll ends every fault: proxies back to pass-through, every server running.
func (h *harness) healAll() error {
	for _, l := range h.links {
		l.mysql.Heal()
		for _, p := range l.nats {
			p.Heal()
		}
	}
	if err := h.mysql.ensureRunning(); err != nil {
		return err
	}
	return h.nats.ensureRunning()
}

// drain waits until no job is pending or reserved and every key is computed or failed, or the
// deadline passes.
func (h *harness) drain(ctx context.Context) bool {
	deadline := time.Now().Add(h.opts.Drain)
	lastReport := time.Now()
	for {
		open, errs, openErr := h.openJobs(ctx)
		done, doneErr := h.mysql.count(ctx, "SELECT COUNT(*) FROM "+targetTable)
		if openErr == nil && doneErr == nil {
			if open == 0 && done+errs >= h.opts.Keys {
				h.log.printf("drained: %d computed, %d errors", done, errs)
				return true
			}
			if time.Since(lastReport) > 10*time.Second {
				h.log.printf("draining: %d computed, %d errors, %d pending or reserved", done, errs, open)
				lastReport = time.Now()
			}
		}
		if time.Now().After(deadline) || !sleepCtx(ctx, drainPoll) {
			return false
		}
	}
}

func (h *harness) openJobs(ctx context.Context) (open, errs int, err error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var o, e *int
	err = h.mysql.admin.QueryRowContext(ctx,
		"SELECT SUM(status IN ('pending','reserved')), SUM(status = 'error') FROM `"+jobsTable+"`").Scan(&o, &e)
	if o != nil {
		open = *o
	}
	if e != nil {
		errs = *e
	}
	return open, errs, err
}

// stopPrograms stops every worker, then every scheduler, with SIGTERM (killing what does not
// exit in time). A program that exits with an error is noted.
func (h *harness) stopPrograms() {
	h.mu.Lock()
	all := slices.Clone(h.all)
	h.mu.Unlock()
	for _, program := range []string{"worker", "scheduler"} {
		var wg sync.WaitGroup
		for _, p := range all {
			if !strings.HasPrefix(p.name, program+"-") || p.exited() {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.stop(syscall.SIGTERM, stopTimeout)
				if status := p.exitStatus(); status != "exit 0" {
					h.note("%s (pid %d) stopped by SIGTERM at the end: %s; last log lines:\n%s", p.name, p.pid(), status, indent(p.logTail(8)))
				}
			}()
		}
		wg.Wait()
	}
}

// waitHandlersGone waits until the watcher has seen every started handler end.
func (h *harness) waitHandlersGone() {
	deadline := time.Now().Add(handlersGoneWait)
	for h.watcher.running() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * watchInterval)
	}
	if n := h.watcher.running(); n > 0 {
		h.note("%d handlers still alive %v after every worker stopped", n, handlersGoneWait)
	}
}

// cleanup kills whatever still runs and stops the servers; keep keeps MariaDB's data.
func (h *harness) cleanup(keep bool) {
	h.mu.Lock()
	all := slices.Clone(h.all)
	h.mu.Unlock()
	for _, p := range all {
		if !p.exited() {
			for _, kid := range procfs.Children(p.pid()) {
				syscall.Kill(-kid, syscall.SIGKILL)
			}
			p.stop(syscall.SIGKILL, stopTimeout)
		}
	}
	if h.watcher != nil {
		h.watcher.close()
	}
	for _, l := range h.links {
		l.close()
	}
	if h.nats != nil {
		h.nats.close()
	}
	if h.mysql != nil {
		h.mysql.close(keep)
	}
}

func indent(s string) string {
	if s == "" {
		return "    (empty)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
