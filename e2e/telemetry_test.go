package e2e

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/tracing/tracingtest"
)

// TestTelemetryAcrossProcesses: a job's spans from the scheduler and a worker, two separate
// processes, share one trace (the publish span, carried in the NATS header, is the parent of
// the worker's process span); the --exec handler gets TRACEPARENT of that trace; and the
// worker's /metrics counts exactly the successes and failures of the run.
func TestTelemetryAcrossProcesses(t *testing.T) {
	e := newEnv(t, natstest.Embedded(t).ClientURL())
	e.pipeline(1, 4)
	spans := filepath.Join(e.dir, "spans.jsonl")
	e.extra = []string{"JETJOBS_TRACE_FILE=" + spans, "FAIL_KEY=0:3"}
	addr := freeAddr(t)
	scheduler := e.start("scheduler")
	w := e.start("worker", "--exec", filepath.Join(e.dir, "handler.sh")+` && echo "$TRACEPARENT" >> `+filepath.Join(e.dir, "traceparents"),
		"--suppress-errors", "--metrics-addr", addr)
	waitFor(t, "3 jobs computed and 1 failed", func() bool {
		return e.count("SELECT COUNT(*) FROM __analysis") == 3 &&
			e.count("SELECT COUNT(*) FROM `~~analysis` WHERE status = 'error'") == 1
	})
	// The counters follow the commits that the database shows: wait for them too.
	var metrics string
	waitFor(t, "the counters to count them", func() bool {
		metrics = scrape(t, "http://"+addr+"/metrics")
		return metricValue(t, metrics, "jetjobs_jobs_completed_total", e.table()) >= 3 &&
			metricValue(t, metrics, "jetjobs_jobs_failed_total", e.table()) >= 1
	})
	for name, want := range map[string]int{"jetjobs_jobs_completed_total": 3, "jetjobs_jobs_failed_total": 1, "jetjobs_jobs_reserved_total": 4} {
		if got := metricValue(t, metrics, name, e.table()); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	for _, p := range []*proc{w, scheduler} {
		p.signal(syscall.SIGTERM)
		if code := p.wait(t); code != 0 {
			t.Errorf("%s exit code %d", p.name, code)
		}
	}

	recorded, err := tracingtest.ReadFile(spans)
	if err != nil {
		t.Fatal(err)
	}
	publish := map[string]tracingtest.Span{} // by span ID
	for _, s := range recorded {
		if strings.HasPrefix(s.Name, "publish ") {
			if s.Service != "jetjobs-scheduler" {
				t.Errorf("publish span from service %q", s.Service)
			}
			publish[s.SpanID] = s
		}
	}
	if len(publish) != 4 {
		t.Fatalf("%d publish spans, want 4", len(publish))
	}
	processes := 0
	workerTraces := map[string]bool{}
	for _, s := range recorded {
		if s.Service != "jetjobs-worker" {
			continue
		}
		workerTraces[s.TraceID] = true
		if !strings.HasPrefix(s.Name, "process ") {
			continue
		}
		processes++
		parent, ok := publish[s.ParentSpanID]
		if !ok || !s.RemoteParent || parent.TraceID != s.TraceID {
			t.Errorf("worker span %s (trace %s) is not a child of a scheduler publish span", s.Name, s.TraceID)
		}
	}
	if processes != 4 {
		t.Errorf("%d process spans, want 4", processes)
	}
	for trace := range workerTraces {
		found := false
		for _, p := range publish {
			found = found || p.TraceID == trace
		}
		if !found {
			t.Errorf("worker trace %s has no scheduler publish span", trace)
		}
	}
	data, err := os.ReadFile(filepath.Join(e.dir, "traceparents"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(data))
	if len(lines) != 3 {
		t.Fatalf("handler saw TRACEPARENT %d times, want 3: %q", len(lines), data)
	}
	for _, tp := range lines {
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || !workerTraces[parts[1]] {
			t.Errorf("handler TRACEPARENT %q is not in a job's trace", tp)
		}
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func metricValue(t *testing.T, metrics, name, table string) int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + name + `\{[^}]*jetjobs_table="` + regexp.QuoteMeta(table) + `"[^}]*\} (\d+)`)
	m := re.FindStringSubmatch(metrics)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
