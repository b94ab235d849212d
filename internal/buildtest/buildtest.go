// Package buildtest builds programs once for a test package that runs them as separate
// processes (the end-to-end and demo tests).
package buildtest

import (
	"fmt"
	"os"
	"os/exec"
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
