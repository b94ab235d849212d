package schedulercmd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/mysqltest"
	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

// envHelper makes the test binary run Main with the JSON-encoded command line it holds (the
// program's name first), as the scheduler's main does, so that a test can signal a real
// scheduler process.
const envHelper = "JETJOBS_TEST_SCHEDULER_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(envHelper); args != "" {
		var argv []string
		if err := json.Unmarshal([]byte(args), &argv); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(Main(argv[1:], os.Stdout, os.Stderr))
	}
	mysqltest.Main(m)
}

// noEnv is an empty environment, so the tests ignore the developer's JETJOBS_ variables.
func noEnv(string) string { return "" }

// runWith runs the program in this process, as Main does but without signals, until ctx ends.
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	return run(ctx, args, program{stdout: stdout, stderr: stderr, getenv: getenv})
}

func TestHelp(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := runWith(t.Context(), []string{"--help"}, &stdout, &stderr, noEnv); code != cli.ExitOK {
		t.Fatalf("--help exited %d: %s", code, stderr.String())
	}
	help := strings.Join(strings.Fields(stdout.String()), " ") // undo the wrapping
	for _, want := range []string{
		"--config", "--mysql", "--nats", "--embedded-nats", "--embedded-nats-listen", "--embedded-nats-store",
		"--metrics-addr", "--log-level", "--help",
		config.EnvConfig, config.EnvMySQLDSN, config.EnvNATSURL,
		tracing.EnvTracesExporter, tracing.EnvMetricsExporter, "(default none)", "jetjobs_jobs_published_total",
		`(default "127.0.0.1:4222")`, `(default "info")`, "jetjobs", "/healthz", "/readyz", "/metrics",
		"Exit status",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("--help does not mention %q:\n%s", want, help)
		}
	}
	if store := defaultStoreDir(); store != "" && !strings.Contains(help, `(default "`+store+`")`) {
		t.Errorf("--help does not show the default store %s", store)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeConfig := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	badValue := writeConfig("bad-value.json", `{"jobs": {"default_priority": "high"}}`)
	unknownKey := writeConfig("unknown-key.json", `{"jobs": {"refresh_intervall": 5}}`)
	outOfRange := writeConfig("range.json", `{"jobs": {"default_priority": 300}, "tables": [{"table": "a.b"}]}`)
	store := filepath.Join(dir, "nats")

	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string // in stderr
	}{
		{"unknown flag", []string{"--frobnicate"}, nil, "frobnicate"},
		{"bad log level", []string{"--log-level", "loud", "a.b"}, nil, "--log-level"},
		{"bad value in the config file", []string{"--config", badValue, "a.b"}, nil, "default_priority"},
		{"unknown key in the config file", []string{"--config", unknownKey, "a.b"}, nil, "refresh_intervall"},
		{"config file from the environment", []string{"a.b"}, map[string]string{config.EnvConfig: badValue}, "default_priority"},
		{"value out of range", []string{"--config", outOfRange}, nil, "jobs.default_priority"},
		{"missing config file", []string{"--config", filepath.Join(dir, "none.json"), "a.b"}, nil, "none.json"},
		{"no table", nil, nil, "no table"},
		{"table without schema", []string{"analysis"}, nil, "schema.table"},
		{"bad DSN", []string{"--mysql", "root@nowhere(", "a.b"}, nil, "mysql.dsn"},
		{"bad embedded NATS address", []string{"--embedded-nats-listen", "nonsense", "--embedded-nats-store", store, "a.b"}, nil, "--embedded-nats-listen"},
		{"embedded NATS beyond loopback", []string{"--embedded-nats-listen", "0.0.0.0:4222", "--embedded-nats-store", store, "a.b"}, nil, "loopback"},
		{"a table listed twice", []string{"--embedded-nats-listen", "127.0.0.1:0", "--embedded-nats-store", store, "--mysql", mysqltest.ServerDSN(t), "a.b", "a.b"}, nil, "a.b is listed twice"},
		{"unknown traces exporter", []string{"a.b"}, map[string]string{tracing.EnvTracesExporter: "zipkin"}, tracing.EnvTracesExporter + `="zipkin"`},
		{"unknown metrics exporter", []string{"a.b"}, map[string]string{tracing.EnvMetricsExporter: "otlp,statsd"}, "statsd"},
		{"unknown OTLP protocol", []string{"a.b"}, map[string]string{tracing.EnvTracesExporter: "otlp", tracing.EnvOTLPProtocol: "http/json"}, tracing.EnvOTLPProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			getenv := func(k string) string { return tc.env[k] }
			code := runWith(t.Context(), tc.args, &stdout, &stderr, getenv)
			if code != cli.ExitUsage {
				t.Errorf("exit code %d, want %d; stderr: %s", code, cli.ExitUsage, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr does not name %q: %s", tc.want, stderr.String())
			}
		})
	}
}

// pipeline creates a parent table with keys 1..n and a target whose key comes from it, and
// returns the target's name.
func pipeline(t *testing.T, n int) (*mysqltest.DB, string) {
	t.Helper()
	db := mysqltest.New(t)
	db.Exec(t,
		"CREATE TABLE subject (subject_id INT NOT NULL, PRIMARY KEY (subject_id))",
		"CREATE TABLE __analysis (subject_id INT NOT NULL, result DOUBLE, PRIMARY KEY (subject_id), "+
			"FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
	)
	for i := 1; i <= n; i++ {
		db.Exec(t, fmt.Sprintf("INSERT INTO subject VALUES (%d)", i))
	}
	return db, db.Name + ".__analysis"
}

// logWatch collects a program's log lines and extracts attributes from them.
type logWatch struct {
	mu    sync.Mutex
	lines []string
	out   io.Writer
	buf   []byte
}

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out.Write(p)
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines = append(w.lines, string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

// attr returns the value of key= in the first line containing msg, or "".
func (w *logWatch) attr(msg, key string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		if !strings.Contains(l, msg) {
			continue
		}
		if _, rest, ok := strings.Cut(l, " "+key+"="); ok {
			return strings.Trim(strings.Fields(rest)[0], `"`)
		}
	}
	return ""
}

func (w *logWatch) contains(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.ContainsFunc(w.lines, func(l string) bool { return strings.Contains(l, s) })
}

func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// fetchKeys connects to the NATS server at url and fetches n messages of the table.
func fetchKeys(t *testing.T, url, schema, table string, n int) []string {
	t.Helper()
	nc, err := queue.Connect(t.Context(), queue.ConnectOptions{URL: url, Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	stream, err := queue.Open(t.Context(), nc, schema, table, queue.Config{Prefix: config.DefaultSubjectPrefix})
	if err != nil {
		t.Fatal(err)
	}
	f := stream.NewFetcher(nil)
	defer f.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var keys []string
	for len(keys) < n {
		msgs, err := f.Fetch(ctx, n-len(keys))
		if err != nil {
			t.Fatalf("fetch after %d of %d keys: %v", len(keys), n, err)
		}
		for _, m := range msgs {
			keys = append(keys, string(m.Key()))
		}
	}
	slices.Sort(keys)
	return keys
}

func TestRunWithEmbeddedNATS(t *testing.T) {
	t.Parallel()
	db, table := pipeline(t, 3)
	logs := &logWatch{out: t.Output()}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- runWith(ctx, []string{
			"--mysql", db.ServerDSN, // tables are named schema.table: no default database needed
			"--embedded-nats-listen", "127.0.0.1:0",
			"--embedded-nats-store", t.TempDir(),
			"--metrics-addr", "127.0.0.1:0",
			"--log-level", "debug",
			table,
		}, io.Discard, logs, noEnv)
	}()

	waitfor.Within(t, 20*time.Second, "the embedded NATS server and the HTTP server are up", func() bool {
		return logs.attr("embedded NATS server started", "url") != "" && logs.attr("serving HTTP", "addr") != ""
	})
	natsURL := logs.attr("embedded NATS server started", "url")
	base := "http://" + logs.attr("serving HTTP", "addr")
	if code, _ := httpGet(base + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	waitfor.Within(t, 20*time.Second, "/readyz answers 200", func() bool {
		code, _ := httpGet(base + "/readyz")
		return code == http.StatusOK
	})

	keys := fetchKeys(t, natsURL, db.Name, "__analysis", 3)
	want := []string{`{"subject_id":1}`, `{"subject_id":2}`, `{"subject_id":3}`}
	if !slices.Equal(keys, want) {
		t.Errorf("published keys %v, want %v", keys, want)
	}
	var metrics string
	waitfor.Within(t, 20*time.Second, "/metrics counts the 3 published jobs", func() bool {
		var code int
		code, metrics = httpGet(base + "/metrics")
		return code == http.StatusOK && metricValue(metrics, "jetjobs_jobs_published_total", table) == "3"
	})
	if v := metricValue(metrics, "jetjobs_refresh_added_total", table); v != "3" {
		t.Errorf("/metrics: jetjobs_refresh_added_total for %s = %q, want 3", table, v)
	}

	cancel()
	select {
	case code := <-done:
		if code != cli.ExitOK {
			t.Errorf("exit code %d after the context ended, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the scheduler did not stop within 20s")
	}
	var free int
	if err := db.SQL.QueryRow("SELECT IS_FREE_LOCK(?)", leadership.LockName(table)).Scan(&free); err != nil {
		t.Fatal(err)
	}
	if free != 1 {
		t.Error("the table's lock is still held after the scheduler stopped")
	}
	if !logs.contains("embedded NATS server stopped") {
		t.Error("the embedded NATS server was not shut down")
	}
}

// metricValue returns the value of the Prometheus sample name{…jetjobs_table="table"…} in a
// /metrics body, or "".
func metricValue(body, name, table string) string {
	for line := range strings.Lines(body) {
		labels, ok := strings.CutPrefix(line, name+"{")
		if !ok || !strings.Contains(labels, `jetjobs_table="`+table+`"`) {
			continue
		}
		if fields := strings.Fields(labels); len(fields) > 1 {
			return fields[len(fields)-1]
		}
	}
	return ""
}

func TestSIGTERMStopsCleanly(t *testing.T) {
	t.Parallel()
	db, table := pipeline(t, 1)
	args, err := json.Marshal([]string{"scheduler",
		"--mysql", db.DSN,
		"--embedded-nats-listen", "127.0.0.1:0",
		"--embedded-nats-store", t.TempDir(),
		table,
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &logWatch{out: t.Output()}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"="+string(args))
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	})

	waitfor.Within(t, 30*time.Second, "the scheduler refreshed the table as its leader", func() bool { return logs.contains("msg=refreshed") })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("after SIGTERM the scheduler exited with %v, want status 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the scheduler did not exit within 20s of SIGTERM")
	}
	for _, want := range []string{"stopped leading table", "scheduler stopped", "embedded NATS server stopped"} {
		if !logs.contains(want) {
			t.Errorf("log does not show %q", want)
		}
	}
	var free int
	if err := db.SQL.QueryRow("SELECT IS_FREE_LOCK(?)", leadership.LockName(table)).Scan(&free); err != nil {
		t.Fatal(err)
	}
	if free != 1 {
		t.Error("the table's lock is still held after SIGTERM")
	}
}

func TestTablesThatCannotBeScheduled(t *testing.T) {
	t.Parallel()
	db, table := pipeline(t, 1)
	db.Exec(t, "CREATE TABLE lonely (id INT NOT NULL, PRIMARY KEY (id))")
	for _, tc := range []struct {
		name   string
		tables []string
		want   []string // in stderr
	}{
		{"an unknown table", []string{table, db.Name + ".nope"}, []string{db.Name + ".nope", "configured tables: " + table + ", " + db.Name + ".nope"}},
		{"a table without key columns", []string{db.Name + ".lonely"}, []string{db.Name + ".lonely", "no FK-derived primary key columns"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			args := append([]string{"--mysql", db.ServerDSN, "--embedded-nats-listen", "127.0.0.1:0", "--embedded-nats-store", t.TempDir()}, tc.tables...)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			code := runWith(ctx, args, io.Discard, &stderr, noEnv)
			if ctx.Err() != nil {
				t.Fatalf("the scheduler did not exit by itself within 30s; stderr: %s", stderr.String())
			}
			if code != cli.ExitUsage {
				t.Errorf("exit code %d, want %d; stderr: %s", code, cli.ExitUsage, stderr.String())
			}
			for _, want := range tc.want {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr does not say %q: %s", want, stderr.String())
				}
			}
		})
	}
}
