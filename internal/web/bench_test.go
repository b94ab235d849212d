package web_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/mysqltest"
	"github.com/jetjobs/jetjobs/internal/web"
	"github.com/jetjobs/jetjobs/jobsdb"
)

// answerLimit is what the console promises on a table of a million jobs.
const answerLimit = 300 * time.Millisecond

// BenchmarkConsole1M answers the console's requests on a jobs table of 1,000,000 jobs (1,000
// subjects × 1,000 sessions; 10% error under three messages, 5% success, 1% reserved,
// priorities 1, 5 and 9): the overview read afresh (every status counted, the leader looked
// up), a filtered list (errors of priority ≤ 5), a page deep in the list (after a cursor half
// way), the first page of every status, a list filtered on a key column, and the errors
// grouped by message. One op is one request through HTTP; each fails the benchmark when its
// mean answer takes 300 ms or more, except two that are reported only: a fresh reading of the
// overview (what the console does in the background every interval while someone watches:
// counting a million index entries), and the error groups (which read every error row: 100,000
// here). The setup (untimed) takes about a minute.
func BenchmarkConsole1M(b *testing.B) {
	ctx := context.Background()
	db := mysqltest.New(b)
	db.Exec(b, pipelineDDL...)
	db.Exec(b,
		"INSERT INTO subject SELECT seq FROM seq_1_to_1000",
		"INSERT INTO session SELECT s.seq, n.seq FROM seq_1_to_1000 s JOIN seq_1_to_1000 n")
	pool, err := jobsdb.Open(ctx, db.DSN)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	table := db.Name + ".__analysis"
	target, err := jobsdb.Inspect(ctx, pool, table, "")
	if err != nil {
		b.Fatal(err)
	}
	jobs := jobsdb.New(pool, target, jobsdb.Options{StatementTimeout: 10 * time.Minute})
	if res, err := jobs.Refresh(ctx, jobsdb.RefreshOptions{Priority: 5, Delay: -time.Second}); err != nil || res.Added != 1_000_000 {
		b.Fatalf("refresh: %+v, %v", res, err)
	}
	db.Exec(b,
		"UPDATE `~~analysis` SET `priority` = ELT(subject_id % 3 + 1, 1, 5, 9)",
		"UPDATE `~~analysis` SET `status` = 'error', `completed_time` = NOW(3), "+
			"`error_message` = ELT(subject_id % 3 + 1, 'ValueError: corrupt', 'KeyError: spikes', 'MemoryError') WHERE session_id % 10 = 0",
		"UPDATE `~~analysis` SET `status` = 'success', `completed_time` = NOW(3) WHERE session_id % 20 = 1",
		"UPDATE `~~analysis` SET `status` = 'reserved', `reserved_time` = NOW(3) WHERE session_id % 100 = 3",
		"ANALYZE TABLE `~~analysis`")

	console := func(interval time.Duration) *httptest.Server {
		srv, err := web.New(web.Options{
			Tables:   []string{table},
			Open:     func(context.Context, string) (*jobsdb.Jobs, error) { return jobs, nil },
			DB:       pool,
			LockName: leadership.LockName,
			Interval: interval,
			Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			b.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		b.Cleanup(stop)
		go srv.Run(runCtx)
		ts := httptest.NewServer(srv)
		b.Cleanup(ts.Close)
		return ts
	}
	// The console as it runs (the overview read every 2 s in the background, answered from
	// the last reading), and one that reads afresh on every request.
	ts, fresh := console(web.IntervalDefault), console(time.Millisecond)
	api := "/api/tables/" + url.PathEscape(table)

	get := func(b *testing.B, path string, v any) {
		base := ts.URL
		if p, ok := strings.CutPrefix(path, "fresh:"); ok {
			base, path = fresh.URL, p
		}
		res, err := http.Get(base + path)
		if err != nil {
			b.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d %s", path, res.StatusCode, body)
		}
		if v != nil {
			if err := json.Unmarshal(body, v); err != nil {
				b.Fatal(err)
			}
		}
	}
	// A cursor half way through the list: a position is a position, whatever the filter that
	// reached it, so the end of a page of subject 502's jobs (priority 5) serves.
	var half web.JobPage
	get(b, api+"/jobs?status=pending&key.subject_id=502&limit=500", &half)
	if half.Next == nil || half.Jobs[0].Priority != 5 {
		b.Fatalf("no cursor half way: %+v", half.Next)
	}
	deep := *half.Next
	get(b, "/api/overview", nil) // the running console's first reading

	overview := func(b *testing.B, body any) {
		if o := body.(*web.Overview); o.Tables[0].Total != 1_000_000 {
			b.Fatalf("overview total %d", o.Tables[0].Total)
		}
	}
	for _, c := range []struct {
		name, path string
		check      func(b *testing.B, body any)
		noLimit    bool // reported only
	}{
		{"overview", "/api/overview", overview, false},
		{"overview_reading", "fresh:/api/overview", overview, true},
		{"errors_priority_le_5", api + "/jobs?status=error&priority=5", func(b *testing.B, body any) {
			if p := body.(*web.JobPage); len(p.Jobs) != 50 || p.Jobs[0].Status != "error" || p.Next == nil {
				b.Fatalf("page of %d", len(p.Jobs))
			}
		}, false},
		{"deep_page", api + "/jobs?status=pending&after=" + deep, func(b *testing.B, body any) {
			if p := body.(*web.JobPage); len(p.Jobs) != 50 {
				b.Fatalf("page of %d", len(p.Jobs))
			}
		}, false},
		{"every_status", api + "/jobs", func(b *testing.B, body any) {
			if p := body.(*web.JobPage); len(p.Jobs) != 50 {
				b.Fatalf("page of %d", len(p.Jobs))
			}
		}, false},
		{"key_subject", api + "/jobs?key.subject_id=777", func(b *testing.B, body any) {
			if p := body.(*web.JobPage); len(p.Jobs) != 50 {
				b.Fatalf("page of %d", len(p.Jobs))
			}
		}, false},
		{"error_groups", api + "/errors", func(b *testing.B, body any) {
			if g := body.(*web.ErrorGroups); len(g.Groups) != 3 {
				b.Fatalf("%d groups", len(g.Groups))
			}
		}, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			var body any
			for b.Loop() {
				switch c.name {
				case "overview", "overview_reading":
					body = &web.Overview{}
				case "error_groups":
					body = &web.ErrorGroups{}
				default:
					body = &web.JobPage{}
				}
				get(b, c.path, body)
			}
			c.check(b, body)
			mean := b.Elapsed() / time.Duration(b.N)
			b.ReportMetric(float64(mean.Microseconds())/1000, "ms/answer")
			if mean >= answerLimit && !c.noLimit {
				b.Errorf("%s: %v per answer on a million jobs, want under %v", c.name, mean, answerLimit)
			}
		})
	}
}
