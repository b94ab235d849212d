package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinary builds jobsctl and checks that the process's exit codes and streams are wired:
// help on stdout with 0, a usage error on stderr with 2, a failed operation with 1.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "jobsctl")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(args ...string) (string, string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin"}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return stdout.String(), stderr.String(), exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return stdout.String(), stderr.String(), 0
	}
	if out, _, code := run("--help"); code != 0 || !strings.Contains(out, "Commands:") {
		t.Errorf("--help: exit %d, stdout %q", code, out)
	}
	if _, errOut, code := run("nosuch"); code != 2 || !strings.Contains(errOut, `unknown command "nosuch"`) {
		t.Errorf("nosuch: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := run("progress", "a.b", "--mysql", "root@tcp(127.0.0.1:1)/", "--timeout", "1s"); code != 1 || !strings.Contains(errOut, "connect to MySQL") {
		t.Errorf("unreachable MySQL: exit %d, stderr %q", code, errOut)
	}
	if out, _, code := run("completion", "bash"); code != 0 || !strings.Contains(out, "complete -F _jobsctl jobsctl") {
		t.Errorf("completion bash: exit %d", code)
	}
}
