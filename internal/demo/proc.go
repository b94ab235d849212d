package demo

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// proc is a program the demo started, in a process group of its own.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been waited for
	err  error         // its exit status, once done is closed
}

// start runs a program from the bin directory with env, in its own process group, with a
// parent-death signal, and registers it for Kill.
func (d *Demo) start(name string, args, env []string, stdout, stderr io.Writer) (*proc, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.killed {
		return nil, ErrInterrupted
	}
	cmd := exec.Command(d.program(name), args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Stdin stays /dev/null: the programs never read it, and a terminal is the demo's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	d.procs = append(d.procs, p)
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

// stop sends SIGTERM to the program's process group and waits for it to exit; after wait it
// kills the group. Stopping a program that has exited does nothing.
func (d *Demo) stop(p *proc, wait time.Duration) {
	if p.exited() {
		return
	}
	if p.name != "jobsctl" {
		d.say("stopping the %s (pid %d)\n", p.name, p.pid())
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(wait):
		d.say("the %s (pid %d) did not stop within %v; killing it\n", p.name, p.pid(), wait)
		p.kill()
		<-p.done
	}
}

// kill kills the program's process group at once.
func (p *proc) kill() {
	if !p.exited() {
		p.signal(syscall.SIGKILL)
	}
}

func (p *proc) signal(sig syscall.Signal) {
	// The group first: the program and whatever it started there. The process itself too, in
	// case it left the group.
	if err := syscall.Kill(-p.pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		p.cmd.Process.Signal(sig)
		return
	}
	p.cmd.Process.Signal(os.Signal(sig))
}
