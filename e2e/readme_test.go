package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/djtest"
	"github.com/jetjobs/jetjobs/internal/natstest"
)

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

// snippetOf returns the README section's only snippet in lang.
func snippetOf(t *testing.T, section, lang string) snippet {
	t.Helper()
	var found []snippet
	for _, s := range readmeSection(t, section) {
		if s.lang == lang {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("the README's section %q has %d %s snippets, want 1", section, len(found), lang)
	}
	return found[0]
}

// The configuration example of the README's Configuration section is a valid configuration.
func TestREADMEConfigurationExample(t *testing.T) {
	s := snippetOf(t, "Configuration", "json")
	cfg, err := config.Parse([]byte(s.text))
	if err != nil {
		t.Fatalf("README line %d: %v", s.line, err)
	}
	if cfg.NATS.Replicas != 3 || !cfg.Jobs.KeepCompleted || cfg.Jobs.MaxAttempts != 5 || len(cfg.Tables) != 2 ||
		cfg.Tables[1].KeySource == "" {
		t.Errorf("README line %d read as %+v", s.line, cfg)
	}
}

// The Python handler of the README's "Writing handlers" section, run as written by the worker
// program (--exec … --persistent) with the repository's package: every key computed with its
// result.
func TestREADMEPythonHandler(t *testing.T) {
	s := snippetOf(t, "Writing handlers", "python")
	root, err := djtest.Root()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, natstest.Embedded(t).ClientURL())
	e.extra = []string{"PYTHONPATH=" + filepath.Join(root, "python")}
	e.pipeline(2, 10)
	handler := filepath.Join(e.dir, "handler.py")
	if err := os.WriteFile(handler, []byte(s.text), 0o644); err != nil {
		t.Fatal(err)
	}
	e.start("scheduler")
	w := e.start("worker", "--exec", "python3 "+handler, "--persistent", "-j", "2")
	waitFor(t, "every key computed", func() bool {
		if w.exited() {
			t.Fatalf("the worker exited:\n%s", w.output())
		}
		return e.count("SELECT COUNT(*) FROM __analysis") == 20
	})
	if n := e.count("SELECT COUNT(*) FROM __analysis WHERE result = session_id * 1.5"); n != 20 {
		t.Errorf("%d of 20 rows hold session_id × 1.5", n)
	}
}

// The Go program of the README's "Writing handlers" section, built as written in a module of
// its own that requires this one, and run against the test's database and stream (its table
// and subject prefix replaced, the only change): it computes every key, records session 13 as
// the error its compute returns, and a SIGTERM stops it with its summary.
func TestREADMEGoProgram(t *testing.T) {
	s := snippetOf(t, "Writing handlers", "go")
	root, err := djtest.Root()
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, natstest.External(t))
	for _, must := range []string{`"jetjobs_demo.__analysis"`, `Prefix: "jetjobs"`, `"nats://127.0.0.1:4222"`, `"root@tcp(127.0.0.1:3306)/"`} {
		if !strings.Contains(s.text, must) {
			t.Fatalf("README line %d: the program no longer holds %s, which this test replaces", s.line, must)
		}
	}
	program := strings.NewReplacer(
		`"jetjobs_demo.__analysis"`, `"`+e.table()+`"`,
		`Prefix: "jetjobs"`, `Prefix: "`+e.prefix()+`"`,
		`"nats://127.0.0.1:4222"`, `"`+e.natsURL+`"`,
		`"root@tcp(127.0.0.1:3306)/"`, `"`+e.db.ServerDSN+`"`,
	).Replace(s.text)
	dir := t.TempDir()
	goMod := "module analysis\n\ngo 1.26\n\nrequire github.com/jetjobs/jetjobs v0.0.0\n\nreplace github.com/jetjobs/jetjobs => " + root + "\n"
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"go.mod": []byte(goMod), "go.sum": sum, "main.go": []byte(program)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "analysis-worker")
	build := exec.Command("go", "build", "-mod=mod", "-o", bin, ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("README line %d does not build: %v\n%s", s.line, err, out)
	}

	e.pipeline(2, 15)
	e.start("scheduler")
	w := e.startBinary("analysis-worker", bin)
	waitFor(t, "every key computed or failed", func() bool {
		if w.exited() {
			t.Fatalf("the program exited:\n%s", w.output())
		}
		return e.count("SELECT COUNT(*) FROM __analysis") == 28 && e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'error'") == 2
	})
	if n := e.count("SELECT COUNT(*) FROM __analysis WHERE ABS(result - (subject_id * 37 + session_id * 11) / 10) < 0.001"); n != 28 {
		t.Errorf("%d of 28 rows hold the program's result", n)
	}
	if n := e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'error' AND error_message LIKE '%session 13: the recording is corrupt'"); n != 2 {
		t.Errorf("%d error rows with compute's message, want 2", n)
	}
	w.signal(syscall.SIGTERM)
	if code := w.wait(t); code != 0 || !strings.Contains(w.output(), "28 jobs succeeded, 2 failed") {
		t.Errorf("exit code %d after SIGTERM, want 0 and its summary:\n%s", code, w.output())
	}
}
