package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/tracing"
)

// The exec handler protocol.
const (
	// ExitRetryable (EX_TEMPFAIL) asks for a retry with backoff.
	ExitRetryable = 75
	// EnvTable, EnvAttempt, EnvKeyPrefix and EnvLeaseToken name the variables an exec handler
	// receives: JETJOBS_TABLE=schema.table, JETJOBS_ATTEMPT=n, JETJOBS_KEY_<COLUMN>=value, and
	// JETJOBS_LEASE_TOKEN, the job's lease token (for logs; the worker does the fenced writes).
	EnvTable      = "JETJOBS_TABLE"
	EnvAttempt    = "JETJOBS_ATTEMPT"
	EnvKeyPrefix  = "JETJOBS_KEY_"
	EnvLeaseToken = "JETJOBS_LEASE_TOKEN"

	// maxCaptured bounds what is kept of a handler's stdout and stderr.
	maxCaptured = 4 << 20
	// outputWaitDelay is how long the worker waits, after a handler exited, for its stdout and
	// stderr to close: a background process it started may hold them open. Then they are
	// closed, the handler's process group is killed, and its job is recorded with the output
	// read so far.
	outputWaitDelay = time.Second
)

// ExecOptions configure an external command handler.
type ExecOptions struct {
	// Command is the handler's command line. Without shell syntax (quotes, pipes,
	// redirections, variables, globs…) it is run directly, so the handler process itself dies
	// with a killed worker; otherwise by /bin/sh -c (a killed worker then kills the shell,
	// and a handler that must not outlive it should be started with exec).
	Command string
	// Timeout kills the command's whole process group after this long; 0 means no limit.
	Timeout time.Duration
}

// Exec returns a Handler that runs an external command per job, in any language: the key as
// JSON on stdin and as JETJOBS_KEY_<COLUMN> variables, plus JETJOBS_TABLE and
// JETJOBS_ATTEMPT. Exit 0 is success, and a JSON object or array on stdout is inserted as
// target rows; exit 75 is a retryable failure; TRACEPARENT carries the job's trace context;
// any other exit is an error whose message is the last non-empty line of stderr (the
// exception line of a traceback, as DataJoint stores it) and whose stack is all of stderr.
func Exec(opts ExecOptions) Handler {
	return func(ctx context.Context, job *Job) (Result, error) {
		if opts.Timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
			defer cancel()
		}
		cmd := command(opts.Command)
		// Its own process group, so a timeout kills everything it started; killed with the
		// worker, so a crashed worker leaves no handler running under a lease nobody renews.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		cmd.Stdin = bytes.NewReader(job.KeyJSON)
		stdout := &tailBuffer{limit: maxCaptured}
		stderr := &tailBuffer{limit: maxCaptured}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		cmd.WaitDelay = outputWaitDelay
		// TRACEPARENT (and TRACESTATE, BAGGAGE) carry the job's trace context.
		cmd.Env = tracing.AppendEnv(ctx, append(os.Environ(), jobEnv(job)...))
		if err := cmd.Start(); err != nil {
			return Result{}, fmt.Errorf("start handler %q: %w", opts.Command, err)
		}
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		var err error
		select {
		case err = <-waited:
		case <-ctx.Done():
			// Kill the whole process group: the shell and everything it started.
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-waited
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && opts.Timeout > 0 {
				return Result{}, &ExecError{Message: fmt.Sprintf("handler timed out after %v and was killed", opts.Timeout), Stderr: stderr.String()}
			}
			return Result{}, ctx.Err()
		}
		// A handler that exited may have left children holding the group: end them too.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, exec.ErrWaitDelay) {
			// It exited with status 0, but something it started kept its output open.
			err = nil
		}
		if err == nil {
			if stdout.dropped {
				return Result{}, &ExecError{Message: fmt.Sprintf("handler stdout exceeds %d bytes; write large results to the database from the handler instead", maxCaptured), Stderr: stderr.String()}
			}
			rows, perr := parseRows(stdout.Bytes(), "handler stdout")
			if perr != nil {
				return Result{}, &ExecError{Message: perr.Error(), Stderr: stderr.String()}
			}
			return Result{Rows: rows}, nil
		}
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			return Result{}, fmt.Errorf("run handler %q: %w", opts.Command, err)
		}
		failure := &ExecError{Code: exitErr.ExitCode(), Stderr: stderr.String()}
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			failure.Signal = ws.Signal()
		}
		failure.Message = lastLine(failure.Stderr)
		if failure.Message == "" {
			failure.Message = fmt.Sprintf("handler exited with status %d", failure.Code)
			if failure.Signal != 0 {
				failure.Message = fmt.Sprintf("handler killed by signal %v", failure.Signal)
			}
		}
		if failure.Code == ExitRetryable {
			return Result{}, Retryable(failure)
		}
		return Result{}, failure
	}
}

// ExecError is a failed external handler: its exit code, the message (the last non-empty line
// of stderr, or what went wrong) and all of stderr, which becomes the job's error_stack.
type ExecError struct {
	Code    int
	Signal  syscall.Signal // the signal that killed the handler, 0 when it exited
	Message string
	Stderr  string
}

func (e *ExecError) Error() string { return e.Message }

// Stack returns all of the handler's stderr.
func (e *ExecError) Stack() string { return e.Stderr }

// shellSyntax lists the characters that make a command line need /bin/sh.
const shellSyntax = "|&;<>()$`\\\"'*?[#~=%{}!\n"

// command runs line directly when it is a plain program and arguments, else through the shell.
func command(line string) *exec.Cmd {
	if fields := strings.Fields(line); len(fields) > 0 && !strings.ContainsAny(line, shellSyntax) {
		return exec.Command(fields[0], fields[1:]...)
	}
	return exec.Command("/bin/sh", "-c", line)
}

func jobEnv(job *Job) []string {
	env := []string{EnvTable + "=" + job.Table, EnvAttempt + "=" + strconv.Itoa(job.Attempt), EnvLeaseToken + "=" + job.leaseToken}
	for col, v := range job.Key {
		env = append(env, EnvKeyPrefix+envName(col)+"="+fmt.Sprint(v))
	}
	return env
}

// envName upper-cases a column name and replaces characters not allowed in variable names.
func envName(col string) string {
	b := []byte(strings.ToUpper(col))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// parseRows reads target rows, what (a handler's stdout, or a reply's rows): nothing, a JSON
// object (one row) or an array of objects.
func parseRows(out []byte, what string) ([]jobsdb.Row, error) {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	var rows []jobsdb.Row
	switch out[0] {
	case '{':
		var row jobsdb.Row
		if err := dec.Decode(&row); err != nil {
			return nil, fmt.Errorf("%s is not a valid JSON object: %v", what, err)
		}
		rows = []jobsdb.Row{row}
	case '[':
		if err := dec.Decode(&rows); err != nil {
			return nil, fmt.Errorf("%s is not a valid JSON array of objects: %v", what, err)
		}
	default:
		return nil, fmt.Errorf("%s must be empty, a JSON object or a JSON array of objects (rows for the target); it starts with %q", what, firstLine(out))
	}
	if dec.More() {
		return nil, fmt.Errorf("%s has data after its JSON value", what)
	}
	return rows, nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}

// lastLine is the last non-empty line of a handler's stderr: the exception line of a
// traceback ("ValueError: …"), which DataJoint stores as the job's error_message.
func lastLine(stderr string) string {
	s := strings.TrimRight(stderr, " \t\r\n")
	return strings.TrimSpace(s[strings.LastIndexByte(s, '\n')+1:])
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	limit   int
	buf     []byte
	dropped bool // the beginning was dropped
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.limit; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
	return len(p), nil
}

func (t *tailBuffer) Bytes() []byte { return t.buf }

// String is what was kept as valid UTF-8: a tail that begins inside a character begins at the
// next character instead, and invalid bytes are replaced by U+FFFD.
func (t *tailBuffer) String() string {
	b := t.buf
	if t.dropped {
		for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.RuneStart(b[0]); i++ {
			b = b[1:]
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
