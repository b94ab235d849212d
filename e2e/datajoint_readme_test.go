//go:build datajoint

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/djtest"
	"github.com/jetjobs/jetjobs/internal/natstest"
)

// Every snippet of the README's DataJoint section, run as written in the order given: the
// package installed with pip (into a virtual environment), the pipeline module and the
// configuration written to their files, the commands run by bash, the Python run, and its
// output compared with the output shown. The only change: the database "lab" is the test's.
func TestDataJointREADMESnippetsRunAsWritten(t *testing.T) {
	e := newEnv(t, natstest.Embedded(t).ClientURL())
	root, err := djtest.Root()
	if err != nil {
		t.Fatal(err)
	}
	// The snippets run in e.dir: "./python" is the repository's package.
	if err := os.Symlink(filepath.Join(root, "python"), filepath.Join(e.dir, "python")); err != nil {
		t.Fatal(err)
	}
	venv := filepath.Join(e.dir, "venv")
	if out, err := exec.Command("python3", "-m", "venv", "--system-site-packages", venv).CombinedOutput(); err != nil {
		t.Fatalf("python3 -m venv: %v\n%s", err, out)
	}
	env := append(os.Environ(), djtest.DataJointEnv(t, e.db.ServerDSN, e.dir)...)
	env = append(env,
		"PATH="+binDir+":"+filepath.Join(venv, "bin")+":"+os.Getenv("PATH"),
		"JETJOBS_MYSQL_DSN="+e.db.ServerDSN, "JETJOBS_NATS_URL="+e.natsURL,
		// pip from the local package only, built with the setuptools and wheel at hand.
		"PIP_NO_INDEX=1", "PIP_NO_BUILD_ISOLATION=0",
	)
	djtest.Require(t, append(env, "PYTHONPATH="+djtestPath(env)+":"+filepath.Join(root, "python")))
	rename := strings.NewReplacer(`"lab"`, `"`+e.db.Name+`"`, "lab.__analysis", e.db.Name+".__analysis")

	var lastOutput string
	for _, s := range readmeSection(t, "Using jetjobs with a DataJoint pipeline") {
		text := rename.Replace(s.text)
		switch first, _, _ := strings.Cut(text, "\n"); {
		case s.lang == "python" && strings.HasPrefix(first, "# ") && strings.HasSuffix(first, ".py"):
			write(t, filepath.Join(e.dir, strings.TrimPrefix(first, "# ")), text)
		case s.lang == "python":
			lastOutput = runSnippet(t, s, e.dir, env, "python3", "-c", text)
		case s.lang == "json":
			write(t, filepath.Join(e.dir, "jetjobs.json"), text)
		case s.lang == "sh":
			lastOutput = runSnippet(t, s, e.dir, env, "bash", "-e", "-c", text)
		case s.lang == "":
			matchOutput(t, s, rename.Replace(lastOutput), text)
		default:
			t.Fatalf("README line %d: a %q snippet, which this test cannot run", s.line, s.lang)
		}
	}
	if n := e.count("SELECT COUNT(*) FROM __analysis"); n != 76 {
		t.Errorf("%d rows computed, want 76", n)
	}
	if n := e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'error' AND error_message LIKE 'ValueError: subject %, session 13: the recording is corrupt'"); n != 4 {
		t.Errorf("%d errors as DataJoint records them, want 4", n)
	}
}

// djtestPath is the PYTHONPATH of env.
func djtestPath(env []string) string {
	path := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PYTHONPATH="); ok {
			path = v
		}
	}
	return path
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runSnippet runs a snippet's program to its end in a process group of its own, which is
// killed at the end of the test (a scheduler the snippet started in the background). The
// output goes to a file, which a program left in the background may go on writing.
func runSnippet(t *testing.T, s snippet, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	f, err := os.CreateTemp(t.TempDir(), "output")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := &fileOutput{f}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("README line %d (%s snippet): %v\n%s", s.line, s.lang, err, out.String())
		}
	case <-time.After(waitTimeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("README line %d (%s snippet) did not end within %v:\n%s", s.line, s.lang, waitTimeout, out.String())
	}
	return out.String()
}

type fileOutput struct{ f *os.File }

func (o *fileOutput) String() string {
	data, _ := os.ReadFile(o.f.Name())
	return string(data)
}

// matchOutput checks the output shown in the README: each of its lines appears in the
// program's output, in order; "…" stands for lines left out.
func matchOutput(t *testing.T, s snippet, output, shown string) {
	t.Helper()
	rest := output
	for _, line := range strings.Split(strings.TrimSpace(shown), "\n") {
		if line == "…" {
			continue
		}
		i := strings.Index(rest, line+"\n")
		if i < 0 || (i > 0 && rest[i-1] != '\n') {
			t.Fatalf("README line %d: the output shown has %q, which the program did not print (in that order):\n%s", s.line, line, output)
		}
		rest = rest[i+len(line)+1:]
	}
}
