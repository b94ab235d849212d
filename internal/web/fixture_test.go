package web_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
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
	"github.com/jetjobs/jetjobs/queue"
)

func TestMain(m *testing.M) { mysqltest.Main(m) }

// pipelineDDL is subject → session → __analysis, keyed (subject_id, session_id).
var pipelineDDL = []string{
	"CREATE TABLE subject (subject_id int NOT NULL, PRIMARY KEY (subject_id))",
	"CREATE TABLE session (subject_id int NOT NULL, session_id int NOT NULL, PRIMARY KEY (subject_id, session_id), " +
		"FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
	"CREATE TABLE __analysis (subject_id int NOT NULL, session_id int NOT NULL, result float NOT NULL DEFAULT 0, " +
		"PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id, session_id) REFERENCES session (subject_id, session_id))",
}

// xssMessage is an error message that would run script if a page did not escape it.
const xssMessage = `<script>document.title="pwned"</script><img src=x onerror="document.title='pwned'">`

// fixture is a database with a pipeline whose jobs table holds jobs in every status, and a
// console serving it.
type fixture struct {
	ctx   context.Context
	db    *mysqltest.DB
	pool  *sql.DB
	table string
	jobs  *jobsdb.Jobs
	srv   *web.Server
	ts    *httptest.Server
	csrf  string
}

// newFixture makes subjects × sessions jobs: pending, with session 13 an error whose message
// is xssMessage for subject 1 and "ValueError: session 13 is corrupt" for the others, session
// 12 reserved, 11 ignored, 10 success; subject 2's jobs at priority 1, the rest at 5; session
// 9 due in an hour.
func newFixture(t *testing.T, subjects, sessions int, modify func(*web.Options)) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	db := mysqltest.New(t)
	db.Exec(t, pipelineDDL...)
	db.Exec(t,
		fmt.Sprintf("INSERT INTO subject SELECT seq FROM seq_1_to_%d", subjects),
		fmt.Sprintf("INSERT INTO session SELECT s.seq, n.seq FROM seq_1_to_%d s JOIN seq_1_to_%d n", subjects, sessions))
	pool, err := jobsdb.Open(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	table := db.Name + ".__analysis"
	target, err := jobsdb.Inspect(ctx, pool, table, "")
	if err != nil {
		t.Fatal(err)
	}
	jobs := jobsdb.New(pool, target, jobsdb.Options{})
	if _, err := jobs.Refresh(ctx, jobsdb.RefreshOptions{Priority: 5, Delay: -time.Second}); err != nil {
		t.Fatal(err)
	}
	db.Exec(t,
		"UPDATE `~~analysis` SET `priority` = 1 WHERE subject_id = 2",
		"UPDATE `~~analysis` SET `scheduled_time` = NOW(3) + INTERVAL 1 HOUR WHERE session_id = 9",
		"UPDATE `~~analysis` SET `status` = 'success', `completed_time` = NOW(3), `duration` = 1.5 WHERE session_id = 10",
		"UPDATE `~~analysis` SET `status` = 'ignore' WHERE session_id = 11",
		"UPDATE `~~analysis` SET `status` = 'reserved', `reserved_time` = NOW(3), `host` = 'node7', `pid` = 4242, "+
			"`lease_token` = 'abc', `lease_expires` = NOW(3) + INTERVAL 1 HOUR, `attempts` = 1 WHERE session_id = 12")
	if _, err := pool.Exec("UPDATE `~~analysis` SET `status` = 'error', `completed_time` = NOW(3), `duration` = 0.25, "+
		"`error_message` = IF(subject_id = 1, ?, 'ValueError: session 13 is corrupt'), `error_stack` = ? WHERE session_id = 13",
		xssMessage, jobsdb.EncodeStack("Traceback (most recent call last):\n  File \"pipeline.py\", line 12, in make\n"+
			"    raise ValueError(\"session 13 is corrupt\")\nValueError: session 13 is corrupt <b>bold</b>\n")); err != nil {
		t.Fatal(err)
	}
	opts := web.Options{
		Tables:   []string{table},
		Open:     func(ctx context.Context, name string) (*jobsdb.Jobs, error) { return jobs, nil },
		DB:       pool,
		LockName: leadership.LockName,
		Refresh:  jobsdb.RefreshOptions{Priority: 5},
		Interval: 200 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if modify != nil {
		modify(&opts)
	}
	srv, err := web.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(runCtx) }()
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { ts.Close(); stop(); <-done })
	f := &fixture{ctx: ctx, db: db, pool: pool, table: table, jobs: jobs, srv: srv, ts: ts}
	var s web.Session
	r := f.get(t, "/api/session", "Authorization", "Bearer "+opts.Token)
	if err := json.Unmarshal([]byte(r.body), &s); err != nil || r.code != http.StatusOK {
		t.Fatalf("GET /api/session: %d %s", r.code, r.body)
	}
	f.csrf = s.CSRFToken
	return f
}

// response is an answer's status, headers and body.
type response struct {
	code   int
	header http.Header
	body   string
}

func (f *fixture) do(t *testing.T, req *http.Request) response {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, string(b)}
}

func (f *fixture) get(t *testing.T, path string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return f.do(t, req)
}

// getJSON GETs path, checks the status and decodes the body into v.
func (f *fixture) getJSON(t *testing.T, path string, code int, v any) response {
	t.Helper()
	r := f.get(t, path)
	if r.code != code {
		t.Fatalf("GET %s: %d, want %d: %s", path, r.code, code, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(r.body), v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, r.body)
		}
	}
	return r
}

// post POSTs a form; headers are name, value pairs.
func (f *fixture) post(t *testing.T, path string, form url.Values, headers ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.ts.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return f.do(t, req)
}

// counts reads the jobs table's counts per status from the database.
func (f *fixture) counts(t *testing.T) map[string]int64 {
	t.Helper()
	rows, err := f.pool.Query("SELECT `status`, COUNT(*) FROM `" + f.db.Name + "`.`~~analysis` GROUP BY `status`")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		out[s] = n
		out["total"] += n
	}
	return out
}

// status reads one job's status.
func (f *fixture) status(t *testing.T, subject, session int) string {
	t.Helper()
	var s string
	if err := f.pool.QueryRow("SELECT `status` FROM `"+f.db.Name+"`.`~~analysis` WHERE subject_id = ? AND session_id = ?", subject, session).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) path(sub string, q url.Values) string {
	p := "/api/tables/" + url.PathEscape(f.table) + "/" + sub
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

func (f *fixture) page(sub string, q url.Values) string {
	p := "/tables/" + url.PathEscape(f.table)
	if sub != "" {
		p += "/" + sub
	}
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	return p
}

// fakeStream is a Stream function that reports two priorities and a stray message.
func fakeStream(ctx context.Context, t *jobsdb.Target) (queue.Health, error) {
	return queue.Health{
		Priorities: []queue.PriorityState{
			{Priority: 1, Waiting: 3, AckPending: 1, Consumer: "p1"},
			{Priority: 5, Waiting: 40, AckPending: 2, Redelivered: 1, Consumer: "p5"},
		},
		Stray: 2,
	}, nil
}
