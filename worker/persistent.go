package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jetjobs/jetjobs/tracing"
)

// The persistent handler protocol, written down in docs/handler-protocol.md.
const (
	// ProtocolName and ProtocolVersion are what a persistent handler's first line on stdout,
	// its handshake, says: {"protocol": "jetjobs-handler", "version": 1}.
	ProtocolName    = "jetjobs-handler"
	ProtocolVersion = 1
	// EnvProtocol tells a persistent handler the protocol version the worker speaks
	// (JETJOBS_PROTOCOL=1).
	EnvProtocol = "JETJOBS_PROTOCOL"
	// PersistentStartTimeoutDefault bounds a persistent handler's start, from its launch to
	// its handshake: long enough for a Python program to import a pipeline and connect.
	PersistentStartTimeoutDefault = time.Minute

	// restartDelayInitial and restartDelayMax pace the starts after a handler failed to
	// start: the next start waits 1 s, then 2 s, 4 s, … up to a minute, so that a handler
	// that crashes at start is not restarted in a loop.
	restartDelayInitial = time.Second
	restartDelayMax     = time.Minute
	// stopWait is how long Stop lets a handler exit by itself after closing its stdin, before
	// its process group is killed.
	stopWait = 5 * time.Second
	// exitWait is how long a program whose stdout ended may take to exit by itself (an
	// interpreter finishing) before its process group is killed: its exit status tells why.
	exitWait = time.Second
	// maxLogLine is the longest stderr line logged in one piece.
	maxLogLine = 16 << 10
	// deadlineLayout is the request's deadline: RFC 3339 in UTC, to the millisecond.
	deadlineLayout = "2006-01-02T15:04:05.000Z07:00"
)

// ErrHandlerStopped: a job was given to a persistent handler after Stop.
var ErrHandlerStopped = errors.New("worker: the persistent handler was stopped")

// PersistentOptions configure a persistent handler.
type PersistentOptions struct {
	// Command is the handler's command line, run as ExecOptions.Command is: directly, or by
	// /bin/sh -c when it uses shell syntax. Required.
	Command string
	// Timeout bounds each job: a handler still computing it after this long is killed (its
	// whole process group) and restarted, and the job is recorded as an error. 0 means no
	// limit.
	Timeout time.Duration
	// StartTimeout bounds a handler's start, from its launch to its handshake line. Default
	// PersistentStartTimeoutDefault.
	StartTimeout time.Duration
	// Logger receives the handlers' stderr, line by line, and their starts, deaths and
	// restarts. Default slog.Default().
	Logger *slog.Logger
}

// PersistentHandler runs a handler program that computes many jobs, one at a time, over the
// line-delimited JSON protocol of docs/handler-protocol.md: a Python program pays its imports
// and its database connection once, not once per job. It keeps one program per job running
// at once (so, under a worker, one per slot), started when first needed or by Start.
//
// A handler that dies, breaks the protocol, exceeds Timeout, or whose job is cancelled (its
// lease was lost, or the worker stops and the grace period ended) is killed with its whole
// process group; its job is recorded as an error (or released, when cancelled), and the next
// job starts a new one. A handler that fails to start fails the job that started it, and the
// next start waits, from a second up to a minute, so a crash at start is never retried in a
// loop. Stop ends the programs; call it after the worker stopped.
type PersistentHandler struct {
	opts PersistentOptions
	log  *slog.Logger

	mu    sync.Mutex
	idle  []*handlerProc // started and waiting for a job, most recently used last
	procs map[*handlerProc]struct{}
	// stopped is set by Stop: no program starts after it.
	stopped bool
	// failures counts the starts that failed in a row; while it is not zero, one start at
	// a time (probing) is made, not before retryAt.
	failures int
	retryAt  time.Time
	probing  bool
	// changed is closed (and replaced) when a start ended or Stop was called.
	changed chan struct{}
	// ending counts the programs being ended in the background; Stop waits for them.
	ending sync.WaitGroup
}

// Persistent returns a persistent handler; no program starts until Start or the first job.
// Its Handle method is the Handler to give the worker.
func Persistent(opts PersistentOptions) *PersistentHandler {
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = PersistentStartTimeoutDefault
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &PersistentHandler{
		opts:    opts,
		log:     opts.Logger.With("handler", opts.Command),
		procs:   map[*handlerProc]struct{}{},
		changed: make(chan struct{}),
	}
}

// Start starts n handler programs now and waits for their handshakes, so that the first jobs
// do not wait for them and a handler that cannot start is reported before any job is taken.
// The error is the first start that failed (an *ExecError with the program's stderr).
func (p *PersistentHandler) Start(ctx context.Context, n int) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			hp, err := p.start(ctx, false)
			if err == nil {
				p.release(hp)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Stop ends every handler program: it closes their stdin (a handler exits at its end), gives
// them stopWait to exit, then kills their process groups. Jobs still running are cancelled
// that way; Stop is meant for after the worker stopped.
func (p *PersistentHandler) Stop() {
	p.mu.Lock()
	p.stopped = true
	procs := make([]*handlerProc, 0, len(p.procs))
	for hp := range p.procs {
		procs = append(procs, hp)
	}
	p.procs = map[*handlerProc]struct{}{}
	p.idle = nil
	p.notifyLocked()
	p.mu.Unlock()
	for _, hp := range procs {
		p.ending.Go(hp.stop)
	}
	p.ending.Wait()
}

// Handle computes job with a handler program: it is the Handler to give the worker.
func (p *PersistentHandler) Handle(ctx context.Context, job *Job) (Result, error) {
	hp, err := p.acquire(ctx)
	if err != nil {
		return Result{}, err
	}
	result, err, keep := hp.compute(ctx, job, p.opts.Timeout)
	if keep {
		p.release(hp)
	} else {
		p.discard(hp)
	}
	return result, err
}

// acquire returns a started handler that is not computing anything: an idle one, or a new one.
func (p *PersistentHandler) acquire(ctx context.Context) (*handlerProc, error) {
	for {
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return nil, ErrHandlerStopped
		}
		for len(p.idle) > 0 {
			hp := p.idle[len(p.idle)-1]
			p.idle = p.idle[:len(p.idle)-1]
			if !hp.exitedYet() {
				p.mu.Unlock()
				return hp, nil
			}
			// It died while idle (reap logged it): a new one takes its place.
			delete(p.procs, hp)
			p.ending.Go(hp.stop)
		}
		wait := time.Until(p.retryAt)
		if p.failures == 0 || (!p.probing && wait <= 0) {
			probe := p.failures > 0
			if probe {
				p.probing = true
			}
			p.mu.Unlock()
			return p.start(ctx, probe)
		}
		changed := p.changed
		p.mu.Unlock()
		// Another start is being made, or the next one may not be made yet.
		timer := time.NewTimer(max(wait, 0))
		if wait <= 0 {
			timer.Stop() // wait for the start under way
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// start starts a handler program and accounts for the outcome: a failure (not a cancelled
// start) makes the next start wait.
func (p *PersistentHandler) start(ctx context.Context, probe bool) (*handlerProc, error) {
	began := time.Now()
	hp, err := spawn(ctx, p.opts, p.log)
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.notifyLocked()
	if probe {
		p.probing = false
	}
	switch {
	case err == nil && p.stopped:
		p.ending.Go(hp.stop)
		return nil, ErrHandlerStopped
	case err == nil:
		p.failures, p.retryAt = 0, time.Time{}
		p.procs[hp] = struct{}{}
		hp.log.Info("handler started", "took", time.Since(began).Round(time.Millisecond))
		return hp, nil
	case ctx.Err() != nil:
		return nil, err // cancelled: the handler is not to blame
	}
	p.failures++
	delay := min(restartDelayInitial<<min(p.failures-1, 10), restartDelayMax)
	p.retryAt = time.Now().Add(delay)
	p.log.Error("the handler failed to start; the next start waits", "err", err, "failures_in_a_row", p.failures, "retry_in", delay)
	return nil, err
}

func (p *PersistentHandler) release(hp *handlerProc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		p.ending.Go(hp.stop)
		return
	}
	p.idle = append(p.idle, hp)
}

// discard ends a handler that may not compute another job (compute killed it), in the
// background.
func (p *PersistentHandler) discard(hp *handlerProc) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.procs, hp)
	p.ending.Go(hp.stop)
}

func (p *PersistentHandler) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// handlerProc is one running handler program.
type handlerProc struct {
	cmd    *exec.Cmd
	pid    int
	log    *slog.Logger
	stdin  *os.File
	stdout *os.File
	stderr *stderrSink
	// lines carries stdout's lines; it is closed at the end of stdout, or at a line longer
	// than maxCaptured (readErr says which).
	lines   chan []byte
	readErr error
	// exited is closed once the program was reaped; waitErr is then its exit status.
	exited  chan struct{}
	waitErr error
	// quit ends the stdout reader; set by stop.
	quit       chan struct{}
	stopOnce   sync.Once
	goroutines sync.WaitGroup
	// dying is set when the worker ended the program, whose exit is then no news.
	dying  atomic.Bool
	nextID uint64
}

// spawn starts the program and waits for its handshake.
func spawn(ctx context.Context, opts PersistentOptions, log *slog.Logger) (*handlerProc, error) {
	cmd := command(opts.Command)
	// Its own process group, so that killing it kills everything it started; killed with the
	// worker, so that a crashed worker leaves no handler behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(), EnvProtocol+"="+strconv.Itoa(ProtocolVersion))
	var pipes [3][2]*os.File // stdin, stdout, stderr: read end, write end
	for i := range pipes {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(pipes[:i])
			return nil, fmt.Errorf("start handler %q: %w", opts.Command, err)
		}
		pipes[i] = [2]*os.File{r, w}
	}
	stderr, err := newStderrSink(pipes[2][0])
	if err != nil {
		closeAll(pipes[:])
		return nil, fmt.Errorf("start handler %q: %w", opts.Command, err)
	}
	stderr.log = log
	stderr.begin(nil) // the start's stderr, for the error if it fails
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pipes[0][0], pipes[1][1], pipes[2][1]
	err = cmd.Start()
	// The program's ends of the pipes are the program's now.
	closeAll([][2]*os.File{{pipes[0][0], pipes[1][1]}, {pipes[2][1]}})
	if err != nil {
		closeAll([][2]*os.File{{pipes[0][1], pipes[1][0]}, {pipes[2][0]}})
		return nil, &ExecError{Message: fmt.Sprintf("handler failed to start: %v", err)}
	}
	hp := &handlerProc{
		cmd: cmd, pid: cmd.Process.Pid, stdin: pipes[0][1], stdout: pipes[1][0], stderr: stderr,
		lines: make(chan []byte), exited: make(chan struct{}), quit: make(chan struct{}),
	}
	hp.log = log.With("pid", hp.pid)
	stderr.setLog(hp.log)
	hp.goroutines.Add(3)
	go hp.reap()
	go hp.readStdout()
	go hp.stderr.run(&hp.goroutines)

	timer := time.NewTimer(opts.StartTimeout)
	defer timer.Stop()
	var reason string
	select {
	case line, ok := <-hp.lines:
		switch {
		case !ok && hp.readErr != io.EOF:
			reason = fmt.Sprintf("its first line on stdout is not a handshake: %v", hp.readErr)
		case !ok:
			// It exited (or closed stdout) before its handshake; the status tells.
		default:
			if err := checkHandshake(line); err != nil {
				reason = err.Error()
			} else {
				hp.stderr.end()
				return hp, nil
			}
		}
	case <-timer.C:
		reason = fmt.Sprintf("it sent no handshake within %v (--start-timeout)", opts.StartTimeout)
	case <-ctx.Done():
		hp.kill()
		hp.stop()
		return nil, ctx.Err()
	}
	hp.dying.Store(true) // reported below, not as a death
	if reason == "" {
		hp.awaitExit()
	}
	hp.kill()
	<-hp.exited
	failure := &ExecError{Stderr: stderr.end()}
	hp.stop()
	failure.Code, failure.Signal = exitStatus(hp.waitErr)
	if reason == "" {
		reason = describeExit(failure.Code, failure.Signal) + " before its handshake"
	}
	failure.Message = "handler failed to start: " + reason
	if last := lastLine(failure.Stderr); last != "" {
		failure.Message += ": " + last
	}
	return nil, failure
}

// checkHandshake checks the handler's first line.
func checkHandshake(line []byte) error {
	var h struct {
		Protocol string `json:"protocol"`
		Version  int    `json:"version"`
	}
	if err := json.Unmarshal(line, &h); err != nil || h.Protocol != ProtocolName {
		return fmt.Errorf(`its first line on stdout is %q, not the handshake {"protocol": %q, "version": %d}: `+
			"stdout carries the protocol only; logs and prints belong on stderr", firstLine(line), ProtocolName, ProtocolVersion)
	}
	if h.Version != ProtocolVersion {
		return fmt.Errorf("it speaks version %d of the protocol; this worker speaks version %d", h.Version, ProtocolVersion)
	}
	return nil
}

// request is one job, as the handler receives it.
type request struct {
	ID       uint64            `json:"id"`
	Table    string            `json:"table"`
	Key      json.RawMessage   `json:"key"`
	Attempt  int               `json:"attempt"`
	Priority int               `json:"priority"`
	Deadline *string           `json:"deadline"`
	Trace    map[string]string `json:"trace"`
}

// reply is the handler's answer to a request.
type reply struct {
	ID      *uint64         `json:"id"`
	OK      *bool           `json:"ok"`
	Rows    json.RawMessage `json:"rows"`
	Message string          `json:"message"`
	Stack   string          `json:"stack"`
	Retry   bool            `json:"retry"`
}

// compute sends job to the program and waits for its reply. keep says whether the program may
// compute another job; when it may not, it was killed.
func (hp *handlerProc) compute(ctx context.Context, job *Job, timeout time.Duration) (result Result, err error, keep bool) {
	req := request{Table: job.Table, Key: job.KeyJSON, Attempt: job.Attempt, Priority: job.Priority, Trace: traceContext(ctx)}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
		deadline := time.Now().Add(timeout).UTC().Format(deadlineLayout)
		req.Deadline = &deadline
	}
	hp.nextID++
	req.ID = hp.nextID
	line, err := json.Marshal(req)
	if err != nil {
		return Result{}, fmt.Errorf("encode the request: %w", err), true
	}
	hp.stderr.begin(job)
	// A cancelled job (lost lease, timeout, the worker's stop) kills the program at once.
	stop := context.AfterFunc(ctx, hp.kill)
	if _, err := hp.stdin.Write(append(line, '\n')); err != nil {
		stop()
		return hp.died(ctx, timeout, false)
	}
	select {
	case l, ok := <-hp.lines:
		// The program may compute another job unless the cancellation came first.
		keep := stop()
		if !ok {
			return hp.died(ctx, timeout, true)
		}
		stderr := hp.stderr.end()
		result, err := parseReply(l, req.ID, stderr)
		if err != nil {
			hp.kill()
			hp.log.Warn("the handler broke the protocol; killed, a new one starts for the next job", "err", err)
			return Result{}, &ExecError{Message: "handler broke the protocol: " + err.Error(), Stderr: stderr}, false
		}
		return result.Result, result.err, keep
	case <-ctx.Done():
		stop()
		return hp.interrupted(ctx, timeout)
	}
}

// died is the outcome of a job whose program ended (or closed its stdout, which stdoutEnded
// says) before replying.
func (hp *handlerProc) died(ctx context.Context, timeout time.Duration, stdoutEnded bool) (Result, error, bool) {
	if ctx.Err() != nil {
		return hp.interrupted(ctx, timeout)
	}
	hp.awaitExit()
	hp.kill() // whatever is left of its process group
	<-hp.exited
	failure := &ExecError{Stderr: hp.stderr.end()}
	if stdoutEnded && hp.readErr != io.EOF {
		failure.Message = "handler broke the protocol: " + hp.readErr.Error()
		return Result{}, failure, false
	}
	failure.Code, failure.Signal = exitStatus(hp.waitErr)
	failure.Message = lastLine(failure.Stderr)
	if failure.Message == "" {
		failure.Message = "handler " + describeExit(failure.Code, failure.Signal) + " while computing the job"
	}
	return Result{}, failure, false
}

// interrupted is the outcome of a job cancelled while its program computed it: the program
// was killed.
func (hp *handlerProc) interrupted(ctx context.Context, timeout time.Duration) (Result, error, bool) {
	hp.kill() // done by the cancellation already; the cancellation may still be under way
	stderr := hp.stderr.end()
	if timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		hp.log.Warn("the handler timed out; killed, a new one starts for the next job", "timeout", timeout)
		return Result{}, &ExecError{Message: fmt.Sprintf("handler timed out after %v and was killed", timeout), Stderr: stderr}, false
	}
	return Result{}, ctx.Err(), false
}

// replyResult is a parsed reply: a result, or the job's failure.
type replyResult struct {
	Result
	err error
}

// parseReply checks a reply line against the request id and turns it into the job's outcome;
// stderr is what the program wrote on stderr while computing the job. An error means the
// program broke the protocol.
func parseReply(line []byte, id uint64, stderr string) (replyResult, error) {
	var r reply
	dec := json.NewDecoder(bytes.NewReader(line))
	if err := dec.Decode(&r); err != nil {
		return replyResult{}, fmt.Errorf("its reply %q is not a JSON object: %v", firstLine(line), err)
	}
	switch {
	case r.ID == nil || r.OK == nil:
		return replyResult{}, fmt.Errorf(`its reply %q lacks "id" or "ok"`, firstLine(line))
	case *r.ID != id:
		return replyResult{}, fmt.Errorf("its reply is to request %d; the request was %d", *r.ID, id)
	case !*r.OK && !isNull(r.Rows):
		return replyResult{}, fmt.Errorf("its failure reply has rows; only a success has")
	}
	if *r.OK {
		if isNull(r.Rows) {
			return replyResult{}, nil
		}
		rows, err := parseRows(r.Rows, "the reply's rows")
		if err != nil {
			return replyResult{}, err
		}
		return replyResult{Result: Result{Rows: rows}}, nil
	}
	failure := &ExecError{Message: strings.TrimSpace(r.Message), Stderr: joinStack(stderr, r.Stack)}
	if failure.Message == "" {
		failure.Message = lastLine(stderr)
	}
	if failure.Message == "" {
		failure.Message = "the handler reported a failure without a message"
	}
	if r.Retry {
		return replyResult{err: Retryable(failure)}, nil
	}
	return replyResult{err: failure}, nil
}

func isNull(raw json.RawMessage) bool {
	s := bytes.TrimSpace(raw)
	return len(s) == 0 || string(s) == "null"
}

// joinStack is a failed job's stack: what the program wrote on stderr while computing it,
// then the stack its reply gave.
func joinStack(stderr, stack string) string {
	switch {
	case stderr == "":
		return stack
	case stack == "":
		return stderr
	case !strings.HasSuffix(stderr, "\n"):
		stderr += "\n"
	}
	return stderr + stack
}

// traceContext is the job's W3C trace context: traceparent, tracestate and baggage, when the
// job is traced.
func traceContext(ctx context.Context) map[string]string {
	m := map[string]string{}
	for _, kv := range tracing.AppendEnv(ctx, nil) {
		name, value, _ := strings.Cut(kv, "=")
		m[strings.ToLower(name)] = value
	}
	return m
}

// kill kills the program's process group.
func (hp *handlerProc) kill() {
	hp.dying.Store(true)
	syscall.Kill(-hp.pid, syscall.SIGKILL)
}

// awaitExit gives a program whose stdout ended exitWait to exit by itself.
func (hp *handlerProc) awaitExit() {
	timer := time.NewTimer(exitWait)
	defer timer.Stop()
	select {
	case <-hp.exited:
	case <-timer.C:
	}
}

func (hp *handlerProc) exitedYet() bool {
	select {
	case <-hp.exited:
		return true
	default:
		return false
	}
}

// stop ends the program, unless it was killed already by closing its stdin first, then
// killing its process group after stopWait; and waits for its goroutines.
func (hp *handlerProc) stop() {
	hp.stopOnce.Do(func() {
		hp.dying.Store(true)
		hp.stdin.Close()
		timer := time.NewTimer(stopWait)
		defer timer.Stop()
		select {
		case <-hp.exited:
		case <-timer.C:
			hp.log.Warn("the handler did not exit when its stdin closed; killing it", "waited", stopWait)
		}
		hp.kill()
		<-hp.exited
		close(hp.quit)
		hp.stdout.Close()
		hp.stderr.close()
		hp.goroutines.Wait()
	})
}

// reap waits for the program's exit, then kills what is left of its process group.
func (hp *handlerProc) reap() {
	defer hp.goroutines.Done()
	hp.waitErr = hp.cmd.Wait()
	syscall.Kill(-hp.pid, syscall.SIGKILL)
	close(hp.exited)
	if !hp.dying.Load() {
		code, sig := exitStatus(hp.waitErr)
		hp.log.Warn("the handler exited; a new one starts for the next job", "status", describeExit(code, sig))
	}
}

// readStdout passes stdout's lines to compute.
func (hp *handlerProc) readStdout() {
	defer hp.goroutines.Done()
	defer close(hp.lines)
	r := bufio.NewReaderSize(hp.stdout, 64<<10)
	for {
		line, err := readLine(r, maxCaptured)
		if err != nil {
			hp.readErr = err
			return
		}
		select {
		case hp.lines <- line:
		case <-hp.quit:
			hp.readErr = io.EOF
			return
		}
	}
}

// errLineTooLong: a line on the handler's stdout exceeds maxCaptured.
var errLineTooLong = fmt.Errorf("a line on its stdout exceeds %d bytes; write large results to the database from the handler instead", maxCaptured)

// readLine reads one line, without its end, of at most limit bytes.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > limit+1 {
			return nil, errLineTooLong
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			return bytes.TrimRight(line, "\r\n"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case len(line) > 0 && err == io.EOF:
			return line, nil // a last line without its end
		default:
			return nil, err
		}
	}
}

// exitStatus is the exit code and the killing signal of a program from its Wait error.
func exitStatus(waitErr error) (code int, sig syscall.Signal) {
	var exitErr *exec.ExitError
	if !errors.As(waitErr, &exitErr) {
		return 0, 0
	}
	if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitErr.ExitCode(), ws.Signal()
	}
	return exitErr.ExitCode(), 0
}

func describeExit(code int, sig syscall.Signal) string {
	if sig != 0 {
		return fmt.Sprintf("was killed by signal %v", sig)
	}
	return fmt.Sprintf("exited with status %d", code)
}

func closeAll(pipes [][2]*os.File) {
	for _, p := range pipes {
		for _, f := range p {
			if f != nil {
				f.Close()
			}
		}
	}
}

// stderrSink reads a handler's stderr: every line goes to the log, and what is written while
// a job runs (or while the program starts) is kept for the job's stack.
//
// A reply is read from stdout only after the program wrote everything it wrote on stderr
// before it (the protocol asks the program to flush stderr first): end drains the pipe under
// the same lock the reader reads it under, so nothing written before the reply is missed or
// given to the next job.
type stderrSink struct {
	f   *os.File
	rc  syscall.RawConn
	log *slog.Logger

	mu      sync.Mutex
	buf     []byte      // read buffer, used under mu
	current *tailBuffer // the job's (or the start's) stderr; nil between jobs
	attrs   []any       // the job's table and key, for log lines
	partial []byte      // the start of a line not ended yet
}

func newStderrSink(f *os.File) (*stderrSink, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &stderrSink{f: f, rc: rc, buf: make([]byte, 32<<10)}, nil
}

// run reads stderr until its end.
func (s *stderrSink) run(wg *sync.WaitGroup) {
	defer wg.Done()
	s.rc.Read(func(fd uintptr) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.drainLocked(int(fd))
	})
	s.mu.Lock()
	s.logPartialLocked()
	s.mu.Unlock()
}

// begin starts keeping stderr for job (nil: the program's start).
func (s *stderrSink) begin(job *Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drain() // what came before belongs to nobody
	s.logPartialLocked()
	s.current = &tailBuffer{limit: maxCaptured}
	s.attrs = nil
	if job != nil {
		s.attrs = []any{"table", job.Table, "key", string(job.KeyJSON)}
	}
}

// end stops keeping stderr and returns what was kept, including what is in the pipe now.
func (s *stderrSink) end() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drain()
	s.logPartialLocked()
	kept := ""
	if s.current != nil {
		kept = s.current.String()
	}
	s.current, s.attrs = nil, nil
	return kept
}

// drain reads what the pipe holds now, without waiting; the caller holds mu.
func (s *stderrSink) drain() {
	s.rc.Control(func(fd uintptr) { s.drainLocked(int(fd)) })
}

// drainLocked reads the pipe until it is empty; it reports whether the pipe ended.
func (s *stderrSink) drainLocked(fd int) (ended bool) {
	for {
		n, err := syscall.Read(fd, s.buf)
		switch {
		case n > 0:
			s.writeLocked(s.buf[:n])
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return false
		default:
			return true // the end (n == 0), or the pipe was closed
		}
	}
}

func (s *stderrSink) writeLocked(p []byte) {
	if s.current != nil {
		s.current.Write(p)
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.partial = append(s.partial, p...)
			if len(s.partial) >= maxLogLine {
				s.logPartialLocked()
			}
			return
		}
		s.partial = append(s.partial, p[:i]...)
		s.logPartialLocked()
		p = p[i+1:]
	}
}

// logPartialLocked logs the line begun, if any.
func (s *stderrSink) logPartialLocked() {
	if len(s.partial) == 0 {
		return
	}
	line := strings.ToValidUTF8(strings.TrimRight(string(s.partial), "\r"), "\uFFFD")
	s.partial = s.partial[:0]
	s.log.Info("handler stderr", append([]any{"line", line}, s.attrs...)...)
}

func (s *stderrSink) setLog(log *slog.Logger) {
	s.mu.Lock()
	s.log = log
	s.mu.Unlock()
}

func (s *stderrSink) close() { s.f.Close() }
