package worker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetjobs/jetjobs/worker"
)

// docHandlers writes the example handlers of docs/handler-protocol.md to files, as the page
// has them: the shell one and the Python one (with the repository's package on its path).
func docHandlers(t testing.TB) (shell, python string) {
	t.Helper()
	data, err := os.ReadFile("../docs/handler-protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, examples, ok := strings.Cut(string(data), "## A whole handler")
	if !ok {
		t.Fatal("docs/handler-protocol.md has no section with example handlers")
	}
	block := func(lang string) string {
		_, rest, ok := strings.Cut(examples, "```"+lang+"\n")
		code, _, closed := strings.Cut(rest, "```")
		if !ok || !closed {
			t.Fatalf("docs/handler-protocol.md has no %s example handler", lang)
		}
		return code
	}
	dir := t.TempDir()
	shell, python = filepath.Join(dir, "handler.sh"), filepath.Join(dir, "handler.py")
	if err := os.WriteFile(shell, []byte(block("sh")), 0o755); err != nil {
		t.Fatal(err)
	}
	code := "import sys\nsys.path.insert(0, " + pyString(pythonDir(t)) + ")\n" + block("python")
	if err := os.WriteFile(python, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	return shell, "python3 " + python
}

func pyString(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

// The example handlers of the protocol's page speak the protocol.
func TestProtocolDocExamplesWork(t *testing.T) {
	t.Parallel()
	shell, python := docHandlers(t)
	job := &worker.Job{Table: "lab.__analysis", Key: map[string]any{"session_id": 4}, KeyJSON: []byte(`{"session_id":4}`), Attempt: 1}
	for name, tc := range map[string]struct {
		command string
		rows    int
	}{"shell": {shell, 0}, "python": {python, 1}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, _ := persistent(t, worker.PersistentOptions{Command: tc.command})
			for range 3 {
				res, err := p.Handle(context.Background(), job)
				if err != nil || len(res.Rows) != tc.rows {
					t.Fatalf("result %+v, %v", res, err)
				}
			}
			if name == "python" {
				res, _ := p.Handle(context.Background(), job)
				if v := fmt.Sprint(res.Rows[0]["result"]); v != "6.0" {
					t.Fatalf("row %v, want result 6.0", res.Rows[0])
				}
			}
		})
	}
}
