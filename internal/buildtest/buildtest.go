// Package buildtest serves test packages that run the programs as separate processes (the
// end-to-end and demo tests): it builds them once and collects their output.
package buildtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
)

// Build compiles the main packages (paths relative to the test's directory) into a new
// temporary directory and returns it with a function that removes it.
func Build(pkgs ...string) (dir string, remove func(), err error) {
	dir, err = os.MkdirTemp("", "jetjobs-test-bin-")
	if err != nil {
		return "", nil, err
	}
	build := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build %v: %w", pkgs, err)
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// Output collects a process's stdout and stderr; the test may read it while the process runs.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
