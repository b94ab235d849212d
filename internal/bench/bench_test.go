package bench_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/jetjobs/jetjobs/internal/buildtest"
	"github.com/jetjobs/jetjobs/internal/mysqltest"
	"github.com/jetjobs/jetjobs/internal/natstest"
)

var binDir string

func TestMain(m *testing.M) {
	dir, remove, err := buildtest.Build("../../cmd/scheduler", "../../cmd/worker", "../../cmd/jetjobs-bench")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	mysqltest.Main(m, remove)
}

// The benchmark program runs the real programs on a small pipeline with each handler kind,
// checks every key was computed once (it fails otherwise) and prints the plans of the
// statements that pick due jobs and its line of figures.
func TestBenchmarkProgramPrintsItsFigures(t *testing.T) {
	dsn, url := mysqltest.ServerDSN(t), natstest.External(t)
	for _, args := range [][]string{
		{"--handler", "go", "--workers", "2"},
		{"--handler", "exec", "-j", "4"},
		{"--handler", "go", "--prepublished", "--storage", "memory"},
	} {
		t.Run(args[1], func(t *testing.T) {
			cmd := exec.Command(filepath.Join(binDir, "jetjobs-bench"), append([]string{"--bin", binDir,
				"--mysql", dsn, "--nats", url, "--n", "300", "--explain", "-q"}, args...)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("jetjobs-bench %v: %v\n%s", args, err, out)
			}
			line := regexp.MustCompile(`jetjobs bench: n=300 dispatch=nats mode=(sustained|prepublished) handler=(go|exec) workers=\d+ concurrency=\d+ ` +
				`storage=(file|memory) jobs/s=[1-9]\d* worker_us_per_job=[\d.]+ mysql_us_per_job=[\d.]+ nats_us_per_job=[\d.]+ ` +
				`scheduler_us_per_job=[\d.]+ peak_rss_mb=\d+ worker_allocs_per_job=[1-9]\d*\n`)
			if !line.Match(out) {
				t.Errorf("no line of figures in:\n%s", out)
			}
			if !regexp.MustCompile(`plans on 300 jobs:\n  \S+ \S+`).Match(out) {
				t.Errorf("no plans in:\n%s", out)
			}
		})
	}
}

// --explain-only prints the plans on a table of --n jobs and runs nothing: no line of figures.
func TestBenchmarkProgramExplainsOnly(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "jetjobs-bench"), "--bin", binDir, "--mysql", mysqltest.ServerDSN(t),
		"--nats", natstest.External(t), "--n", "2000", "--explain-only", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("jetjobs-bench --explain-only: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`plans on 2000 jobs:\n  due: type=range key=status `).Match(out) || regexp.MustCompile(`jobs/s=`).Match(out) {
		t.Errorf("want the plans alone, got:\n%s", out)
	}
}

// --latency inserts and notifies parent rows at a steady rate and prints the latency of each
// stage: one line with its percentiles.
func TestBenchmarkProgramMeasuresLatency(t *testing.T) {
	out, err := exec.Command(filepath.Join(binDir, "jetjobs-bench"), "--bin", binDir, "--mysql", mysqltest.ServerDSN(t),
		"--nats", natstest.External(t), "--latency", "--stages", "2", "--rate", "20", "--duration", "1s", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("jetjobs-bench --latency: %v\n%s", err, out)
	}
	line := regexp.MustCompile(`jetjobs latency: keys=20 rate=20/s stages=2 .*insert_notify_to_start_ms=[\d.]+/[\d.]+/[\d.]+ hop1_ms=[\d.]+/[\d.]+/[\d.]+ `)
	if !line.Match(out) {
		t.Errorf("no latency line in:\n%s", out)
	}
}
