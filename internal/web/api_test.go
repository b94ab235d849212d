package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/internal/web"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

func TestOverview(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, 13, func(o *web.Options) { o.Stream = fakeStream })
	var o web.Overview
	f.getJSON(t, "/api/overview", http.StatusOK, &o)
	if len(o.Tables) != 1 || o.Tables[0].Table != f.table {
		t.Fatalf("overview tables %+v", o.Tables)
	}
	tv := o.Tables[0]
	want := f.counts(t)
	got := map[string]int64{"pending": tv.Pending, "reserved": tv.Reserved, "success": tv.Success, "error": tv.Error, "ignore": tv.Ignore, "total": tv.Total}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: overview %d, database %d", k, got[k], n)
		}
	}
	if want["pending"] != 27 || want["error"] != 3 || want["total"] != 39 {
		t.Fatalf("fixture counts %v", want)
	}
	if tv.Leader != nil || tv.ReadError != "" {
		t.Errorf("leader %+v, read error %q", tv.Leader, tv.ReadError)
	}
	if len(tv.Stream) != 3 || *tv.Stream[1].Priority != 5 || tv.Stream[1].Waiting != 40 || tv.Stream[2].Priority != nil || tv.Stream[2].Waiting != 2 {
		t.Errorf("stream %+v", tv.Stream)
	}

	t.Run("field names are jobsctl watch's and stream's", func(t *testing.T) {
		var raw struct {
			Tables []map[string]json.RawMessage `json:"tables"`
		}
		f.getJSON(t, "/api/overview", http.StatusOK, &raw)
		for _, k := range []string{"time", "table", "pending", "reserved", "success", "error", "ignore", "total", "rate", "eta_seconds", "leader", "stream", "history"} {
			if _, ok := raw.Tables[0][k]; !ok {
				t.Errorf("overview has no field %q: %v", k, raw.Tables[0])
			}
		}
		var stream []map[string]any
		json.Unmarshal(raw.Tables[0]["stream"], &stream)
		for _, k := range []string{"priority", "waiting", "ack_pending", "redelivered", "consumer"} {
			if _, ok := stream[0][k]; !ok {
				t.Errorf("stream row has no field %q", k)
			}
		}
	})

	t.Run("it follows the database and computes a rate", func(t *testing.T) {
		f.db.Exec(t, "DELETE FROM `~~analysis` WHERE `status` = 'pending' AND subject_id = 3")
		waitfor.Within(t, 10*time.Second, "the overview shows the deletion and a rate", func() bool {
			var o web.Overview
			f.getJSON(t, "/api/overview", http.StatusOK, &o)
			tv := o.Tables[0]
			return tv.Pending == 18 && tv.Rate != nil && *tv.Rate > 0 && len(tv.History) >= 2
		})
	})

	t.Run("the leading scheduler is its lock's holder", func(t *testing.T) {
		conn, err := f.pool.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var got int
		var id int64
		if err := conn.QueryRowContext(context.Background(), "SELECT GET_LOCK(?, 0), CONNECTION_ID()", leadership.LockName(f.table)).Scan(&got, &id); err != nil || got != 1 {
			t.Fatalf("GET_LOCK: %d, %v", got, err)
		}
		waitfor.Within(t, 10*time.Second, "the overview names the leader", func() bool {
			var o web.Overview
			f.getJSON(t, "/api/overview", http.StatusOK, &o)
			l := o.Tables[0].Leader
			return l != nil && l.ConnectionID == id && l.Host != ""
		})
		conn.ExecContext(context.Background(), "DO RELEASE_LOCK(?)", leadership.LockName(f.table))
	})
}

func TestOverviewShowsProblemsPerTable(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1, 2, func(o *web.Options) {
		o.Tables = append(o.Tables, "nowhere.__gone")
		open := o.Open
		o.Open = func(ctx context.Context, name string) (*jobsdb.Jobs, error) {
			if name == "nowhere.__gone" {
				return nil, errors.New("jobsdb: inspect nowhere.__gone: unknown table")
			}
			return open(ctx, name)
		}
		o.Stream = func(ctx context.Context, t *jobsdb.Target) (queue.Health, error) {
			return queue.Health{}, errors.New("connect to NATS at nats://127.0.0.1:1: connection refused")
		}
	})
	var o web.Overview
	f.getJSON(t, "/api/overview", http.StatusOK, &o)
	if len(o.Tables) != 2 || o.Tables[0].ReadError != "" || o.Tables[0].Total != 2 || !strings.Contains(o.Tables[1].ReadError, "unknown table") {
		t.Fatalf("tables %+v", o.Tables)
	}
	if o.Tables[0].Stream != nil || !strings.Contains(o.Tables[0].StreamError, "connection refused") {
		t.Fatalf("stream %+v, %q", o.Tables[0].Stream, o.Tables[0].StreamError)
	}
	page := f.get(t, "/")
	if page.code != http.StatusOK || !strings.Contains(page.body, "unknown table") || !strings.Contains(page.body, "unavailable: connect to NATS") {
		t.Fatalf("overview page %d:\n%s", page.code, page.body)
	}
}

// keysOf lists the jobs' keys as "subject/session".
func keysOf(jobs []web.Job) string {
	var out []string
	for _, j := range jobs {
		var k struct{ SubjectID, SessionID int }
		var m map[string]int
		json.Unmarshal(j.Key, &m)
		k.SubjectID, k.SessionID = m["subject_id"], m["session_id"]
		out = append(out, fmt.Sprintf("%d/%d", k.SubjectID, k.SessionID))
	}
	return strings.Join(out, " ")
}

func TestJobs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, 13, nil)
	list := func(t *testing.T, q url.Values) web.JobPage {
		t.Helper()
		var p web.JobPage
		f.getJSON(t, f.path("jobs", q), http.StatusOK, &p)
		return p
	}
	for _, c := range []struct {
		name  string
		query url.Values
		want  string
	}{
		{"by status", url.Values{"status": {"error"}}, "1/13 3/13"},
		{"several statuses, comma-separated or repeated", url.Values{"status": {"error,ignore", "success"}, "key.subject_id": {"1"}}, "1/10 1/11 1/13"},
		{"priority at most", url.Values{"priority": {"1"}, "status": {"error", "reserved"}}, "2/12 2/13"},
		{"key values", url.Values{"key.session_id": {"13"}}, "2/13 1/13 3/13"},
		{"due", url.Values{"due": {"true"}, "key.subject_id": {"1"}, "status": {"pending"}}, "1/1 1/2 1/3 1/4 1/5 1/6 1/7 1/8"},
		{"an exact error message", url.Values{"error_message": {xssMessage}}, "1/13"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "by status" {
				c.want = "2/13 1/13 3/13" // priority 1 first
			}
			p := list(t, c.query)
			if got := keysOf(p.Jobs); got != c.want {
				t.Errorf("jobs %s, want %s", got, c.want)
			}
		})
	}

	t.Run("paged by cursor in the order workers take jobs", func(t *testing.T) {
		all, err := f.jobs.List(f.ctx, jobsdb.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		var got []web.Job
		q := url.Values{"limit": {"7"}}
		for pages := 0; ; pages++ {
			if pages > 10 {
				t.Fatal("paging does not end")
			}
			p := list(t, q)
			if len(p.Jobs) > 7 {
				t.Fatalf("%d jobs on a page of 7", len(p.Jobs))
			}
			got = append(got, p.Jobs...)
			if p.Next == nil {
				break
			}
			q.Set("after", *p.Next)
		}
		if len(got) != len(all) || len(all) != 39 {
			t.Fatalf("paged %d jobs, listed %d", len(got), len(all))
		}
		for i := range all {
			if keysOf(got[i:i+1]) != fmt.Sprintf("%d/%d", all[i].Key[0], all[i].Key[1]) {
				t.Fatalf("job %d: paged %s, listed %v", i, keysOf(got[i:i+1]), all[i].Key)
			}
		}
	})

	t.Run("a job's fields are jobsctl list's", func(t *testing.T) {
		var raw struct {
			Jobs []map[string]json.RawMessage `json:"jobs"`
		}
		f.getJSON(t, f.path("jobs", url.Values{"status": {"reserved"}, "limit": {"1"}}), http.StatusOK, &raw)
		want := []string{"key", "status", "priority", "attempts", "created_time", "scheduled_time", "reserved_time", "completed_time",
			"duration", "user", "host", "pid", "connection_id", "version", "lease_expires", "dispatched_time", "error_message"}
		if len(raw.Jobs) != 1 || len(raw.Jobs[0]) != len(want) {
			t.Fatalf("jobs %v", raw.Jobs)
		}
		for _, k := range want {
			if _, ok := raw.Jobs[0][k]; !ok {
				t.Errorf("no field %q", k)
			}
		}
		if string(raw.Jobs[0]["host"]) != `"node7"` || !strings.HasSuffix(string(raw.Jobs[0]["reserved_time"]), `Z"`) {
			t.Errorf("host %s, reserved_time %s", raw.Jobs[0]["host"], raw.Jobs[0]["reserved_time"])
		}
	})

	t.Run("bad input is a 400 that says what is wrong", func(t *testing.T) {
		for _, c := range []struct {
			query url.Values
			want  string
		}{
			{url.Values{"status": {"done"}}, `status "done"`},
			{url.Values{"priority": {"high"}}, `priority "high"`},
			{url.Values{"priority": {"300"}}, `-128..127`},
			{url.Values{"key.nope": {"1"}}, "not a key column"},
			{url.Values{"key.subject_id": {"one"}}, "subject_id"},
			{url.Values{"key.subject_id": {"1 OR 1=1"}}, "subject_id"},
			{url.Values{"due": {"maybe"}}, "due"},
			{url.Values{"limit": {"0"}}, "limit"},
			{url.Values{"limit": {"100000"}}, "limit"},
			{url.Values{"after": {"not-a-cursor"}}, "cursor"},
			{url.Values{"after": {"eyJwIjoxfQ"}}, "cursor"}, // {"p":1}
		} {
			var e struct{ Error string }
			f.getJSON(t, f.path("jobs", c.query), http.StatusBadRequest, &e)
			if !strings.Contains(e.Error, c.want) {
				t.Errorf("%v: error %q, want it to mention %q", c.query, e.Error, c.want)
			}
		}
		var e struct{ Error string }
		f.getJSON(t, "/api/tables/nowhere.__x/jobs", http.StatusNotFound, &e)
		if !strings.Contains(e.Error, f.table) {
			t.Errorf("unknown table: %q does not list the tables", e.Error)
		}
		f.getJSON(t, "/api/nothing", http.StatusNotFound, &e)
	})
}

func TestJob(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, 13, nil)
	var j web.Job
	f.getJSON(t, f.path("job", url.Values{"key.subject_id": {"2"}, "key.session_id": {"13"}}), http.StatusOK, &j)
	if j.Status != "error" || j.ErrorMessage != "ValueError: session 13 is corrupt" || j.ErrorStack == nil ||
		!strings.Contains(*j.ErrorStack, "raise ValueError") || j.Priority != 1 || keysOf([]web.Job{j}) != "2/13" {
		t.Fatalf("job %+v", j)
	}
	var e struct{ Error string }
	f.getJSON(t, f.path("job", url.Values{"key.subject_id": {"2"}}), http.StatusBadRequest, &e)
	if !strings.Contains(e.Error, "key.session_id") {
		t.Errorf("partial key: %q", e.Error)
	}
	f.getJSON(t, f.path("job", url.Values{"key.subject_id": {"9"}, "key.session_id": {"1"}}), http.StatusNotFound, &e)
	if !strings.Contains(e.Error, "no job") {
		t.Errorf("missing job: %q", e.Error)
	}
}

func TestErrorGroups(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, 13, nil)
	var g web.ErrorGroups
	f.getJSON(t, f.path("errors", nil), http.StatusOK, &g)
	if len(g.Groups) != 2 || g.Groups[0].ErrorMessage != "ValueError: session 13 is corrupt" || g.Groups[0].Count != 2 ||
		g.Groups[1].ErrorMessage != xssMessage || g.Groups[1].Count != 1 || g.Groups[0].LastFailed == nil {
		t.Fatalf("groups %+v", g.Groups)
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, 13, nil)
	for _, path := range []string{f.path("retry", nil), f.page("retry", nil), f.path("ignore", nil), f.page("delete", nil)} {
		r := f.post(t, path, url.Values{"csrf": {f.csrf}, "key.subject_id": {"1"}, "key.session_id": {"13"}, "confirm": {"yes"}})
		if r.code != http.StatusForbidden || !strings.Contains(r.body, "--allow-actions") {
			t.Errorf("POST %s: %d %s", path, r.code, r.body)
		}
	}
	if s := f.status(t, 1, 13); s != "error" {
		t.Fatalf("a read-only console changed a job: %s", s)
	}
	for _, path := range []string{"/", f.page("", nil), f.page("errors", nil), f.page("job", url.Values{"key.subject_id": {"1"}, "key.session_id": {"13"}})} {
		r := f.get(t, path)
		if r.code != http.StatusOK || strings.Contains(strings.ToLower(r.body), `method="post"`) || strings.Contains(r.body, "Retry") {
			t.Errorf("GET %s: %d, and it offers an action:\n%s", path, r.code, r.body)
		}
	}
	if r := f.get(t, f.page("confirm", url.Values{"status": {"error"}})); r.code != http.StatusForbidden {
		t.Errorf("confirmation page of a read-only console: %d", r.code)
	}
}

func TestActions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, 13, func(o *web.Options) { o.AllowActions = true })
	key := url.Values{"key.subject_id": {"1"}, "key.session_id": {"13"}}
	form := func(kv ...string) url.Values {
		v := url.Values{"csrf": {f.csrf}}
		for k, vs := range key {
			v[k] = vs
		}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}

	t.Run("no CSRF token, a wrong one, or another origin is refused", func(t *testing.T) {
		for _, c := range []struct {
			name    string
			form    url.Values
			headers []string
		}{
			{"no token", key, nil},
			{"wrong token", url.Values{"csrf": {strings.Repeat("0", 64)}, "key.subject_id": {"1"}, "key.session_id": {"13"}}, nil},
			{"another origin", form(), []string{"Origin", "http://evil.example"}},
			{"a cross-site fetch", form(), []string{"Sec-Fetch-Site", "cross-site"}},
			{"a same-site fetch from another origin", form(), []string{"Sec-Fetch-Site", "same-site"}},
		} {
			for _, path := range []string{f.path("retry", nil), f.page("retry", nil)} {
				if r := f.post(t, path, c.form, c.headers...); r.code != http.StatusForbidden {
					t.Errorf("%s: POST %s: %d %s", c.name, path, r.code, r.body)
				}
			}
		}
		if s := f.status(t, 1, 13); s != "error" {
			t.Fatalf("a refused action changed the job: %s", s)
		}
	})

	t.Run("retry one job, through the API with the header", func(t *testing.T) {
		r := f.post(t, f.path("retry", nil), key, "X-CSRF-Token", f.csrf, "Origin", f.ts.URL, "Sec-Fetch-Site", "same-origin")
		if r.code != http.StatusOK || strings.TrimSpace(r.body) != fmt.Sprintf("{\n  \"table\": %q,\n  \"retried\": 1\n}", f.table) {
			t.Fatalf("retry: %d %s", r.code, r.body)
		}
		if s := f.status(t, 1, 13); s != "pending" {
			t.Fatalf("retried job is %s", s)
		}
		var o web.Overview
		f.getJSON(t, "/api/overview", http.StatusOK, &o)
		if o.Tables[0].Error != 2 {
			t.Errorf("the overview still counts %d errors after the retry", o.Tables[0].Error)
		}
	})
	t.Run("retry a group of errors by message, from a form", func(t *testing.T) {
		r := f.post(t, f.page("retry", nil), url.Values{"csrf": {f.csrf}, "error_message": {"ValueError: session 13 is corrupt"}})
		if r.code != http.StatusOK || !strings.Contains(r.body, "2 error jobs back to pending") {
			t.Fatalf("retry: %d %s", r.code, r.body)
		}
		if n := f.counts(t)["error"]; n != 0 {
			t.Fatalf("%d errors left", n)
		}
	})
	t.Run("ignore needs the whole key", func(t *testing.T) {
		if r := f.post(t, f.path("ignore", nil), url.Values{"csrf": {f.csrf}, "key.subject_id": {"1"}}); r.code != http.StatusBadRequest {
			t.Fatalf("ignore without session_id: %d %s", r.code, r.body)
		}
		r := f.post(t, f.path("ignore", nil), form())
		var got struct {
			Table  string
			Key    map[string]int
			Status string
		}
		json.Unmarshal([]byte(r.body), &got)
		if r.code != http.StatusOK || got.Status != "ignore" || got.Table != f.table || got.Key["subject_id"] != 1 || got.Key["session_id"] != 13 {
			t.Fatalf("ignore: %d %s", r.code, r.body)
		}
		if s := f.status(t, 1, 13); s != "ignore" {
			t.Fatalf("ignored job is %s", s)
		}
	})
	t.Run("delete needs a confirmation and a selection", func(t *testing.T) {
		if r := f.post(t, f.path("delete", nil), form()); r.code != http.StatusBadRequest || !strings.Contains(r.body, "confirm") {
			t.Fatalf("delete without confirm: %d %s", r.code, r.body)
		}
		if r := f.post(t, f.path("delete", nil), url.Values{"csrf": {f.csrf}, "confirm": {"yes"}}); r.code != http.StatusBadRequest || !strings.Contains(r.body, "selection") {
			t.Fatalf("delete everything: %d %s", r.code, r.body)
		}
		if n := f.counts(t)["total"]; n != 39 {
			t.Fatalf("a refused delete deleted: %d jobs left", n)
		}
		r := f.post(t, f.path("delete", nil), form("confirm", "yes"))
		if r.code != http.StatusOK || !strings.Contains(r.body, `"deleted": 1`) {
			t.Fatalf("delete: %d %s", r.code, r.body)
		}
		if n := f.counts(t)["total"]; n != 38 {
			t.Fatalf("%d jobs left", n)
		}
		page := f.get(t, f.page("confirm", url.Values{"status": {"ignore"}}))
		if page.code != http.StatusOK || !strings.Contains(page.body, `name="confirm" value="yes"`) {
			t.Fatalf("confirmation page: %d %s", page.code, page.body)
		}
	})
	t.Run("refresh adds the deleted key back", func(t *testing.T) {
		if r := f.post(t, f.path("refresh", nil), url.Values{"csrf": {f.csrf}, "status": {"error"}}); r.code != http.StatusBadRequest {
			t.Fatalf("refresh with a selection: %d %s", r.code, r.body)
		}
		r := f.post(t, f.path("refresh", nil), url.Values{"csrf": {f.csrf}})
		if r.code != http.StatusOK || !strings.Contains(r.body, `"added": 1`) || !strings.Contains(r.body, `"re_pended": 0`) {
			t.Fatalf("refresh: %d %s", r.code, r.body)
		}
	})
	t.Run("unknown actions and tables", func(t *testing.T) {
		if r := f.post(t, f.path("drop", nil), url.Values{"csrf": {f.csrf}}); r.code != http.StatusNotFound {
			t.Errorf("drop: %d %s", r.code, r.body)
		}
		if r := f.post(t, "/api/tables/x.__y/retry", url.Values{"csrf": {f.csrf}}); r.code != http.StatusNotFound {
			t.Errorf("unknown table: %d %s", r.code, r.body)
		}
	})
}

func TestToken(t *testing.T) {
	t.Parallel()
	const token = "0123456789abcdef-secret"
	f := newFixture(t, 1, 2, func(o *web.Options) { o.Token = token })
	for _, path := range []string{"/", "/api/overview", "/static/app.js", f.page("", nil)} {
		if r := f.get(t, path); r.code != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d", path, r.code)
		}
		if r := f.get(t, path, "Authorization", "Bearer wrong-token-of-some-length"); r.code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d", path, r.code)
		}
		if r := f.get(t, path, "Authorization", "Bearer "+token); r.code != http.StatusOK {
			t.Errorf("GET %s with the token: %d %s", path, r.code, r.body)
		}
	}
	if r := f.get(t, "/?token=wrong"); r.code != http.StatusUnauthorized || strings.Contains(r.body, f.table) {
		t.Errorf("?token=wrong: %d, and the page names the table:\n%s", r.code, r.body)
	}
	r := f.get(t, f.page("", url.Values{"status": {"pending"}, "token": {token}}))
	cookie := r.header.Get("Set-Cookie")
	if r.code != http.StatusSeeOther || r.header.Get("Location") != f.page("", url.Values{"status": {"pending"}}) ||
		!strings.Contains(cookie, "HttpOnly") || !strings.Contains(cookie, "SameSite=Strict") {
		t.Fatalf("?token=: %d, Location %q, Set-Cookie %q", r.code, r.header.Get("Location"), cookie)
	}
	name, value, _ := strings.Cut(strings.Split(cookie, ";")[0], "=")
	if r := f.get(t, "/api/overview", "Cookie", name+"="+value); r.code != http.StatusOK {
		t.Errorf("with the cookie: %d", r.code)
	}
	// With a token, any Host is served: the token is what guards it.
	req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/api/overview", nil)
	req.Host = "jobs.example:8080"
	req.Header.Set("Authorization", "Bearer "+token)
	if r := f.do(t, req); r.code != http.StatusOK {
		t.Errorf("another Host with the token: %d", r.code)
	}
}

func TestHostOnLoopbackWithoutToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1, 2, nil)
	for host, want := range map[string]int{"evil.example": http.StatusMisdirectedRequest, "evil.example:80": http.StatusMisdirectedRequest,
		"localhost:8080": http.StatusOK, "127.0.0.1": http.StatusOK, "[::1]:9": http.StatusOK, "10.0.0.1:8080": http.StatusMisdirectedRequest} {
		req, _ := http.NewRequest(http.MethodGet, f.ts.URL+"/api/session", nil)
		req.Host = host
		if r := f.do(t, req); r.code != want {
			t.Errorf("Host %s: %d, want %d", host, r.code, want)
		}
	}
}

func TestPagesEscape(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, 13, func(o *web.Options) { o.AllowActions = true })
	escaped := "&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;"
	for _, path := range []string{
		f.page("", url.Values{"status": {"error"}}),
		f.page("errors", nil),
		f.page("job", url.Values{"key.subject_id": {"1"}, "key.session_id": {"13"}}),
		f.page("", url.Values{"error_message": {xssMessage}}),
		f.page("confirm", url.Values{"error_message": {xssMessage}}),
	} {
		r := f.get(t, path)
		if r.code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.code, r.body)
		}
		if strings.Contains(r.body, "<script>document") || strings.Contains(r.body, "<img src=x") || !strings.Contains(r.body, escaped) {
			t.Errorf("GET %s does not escape the message:\n%s", path, r.body)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", path, csp)
		}
	}
	job := f.get(t, f.page("job", url.Values{"key.subject_id": {"1"}, "key.session_id": {"13"}}))
	if !strings.Contains(job.body, "&lt;b&gt;bold&lt;/b&gt;") {
		t.Errorf("the stack is not escaped:\n%s", job.body)
	}
	// An error message made of the request is escaped too.
	r := f.get(t, "/tables/"+url.PathEscape("<script>x</script>"))
	if r.code != http.StatusNotFound || strings.Contains(r.body, "<script>x") {
		t.Errorf("unknown table page: %d\n%s", r.code, r.body)
	}
}

func TestStaticAndPages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, 13, nil)
	for path, want := range map[string]string{
		"/static/app.js":                       "/api/overview",
		"/static/style.css":                    "--pending",
		"/":                                    f.table,
		f.page("", url.Values{"limit": {"5"}}): "next 5",
		f.page("errors", nil):                  "ValueError: session 13 is corrupt",
	} {
		r := f.get(t, path)
		if r.code != http.StatusOK || !strings.Contains(r.body, want) {
			t.Errorf("GET %s: %d, want %q in\n%.2000s", path, r.code, want, r.body)
		}
	}
	if r := f.get(t, "/nothing"); r.code != http.StatusNotFound {
		t.Errorf("GET /nothing: %d", r.code)
	}
}

// Requests that find the same stale reading wait for one new reading together.
func TestStaleOverviewIsReadOnce(t *testing.T) {
	t.Parallel()
	var reads atomic.Int32
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	f := newFixture(t, 1, 2, func(o *web.Options) {
		o.Interval = time.Hour // no background reading after the first
		o.Now = func() time.Time { return time.Unix(0, clock.Load()) }
		o.Stream = func(ctx context.Context, tg *jobsdb.Target) (queue.Health, error) {
			reads.Add(1)
			time.Sleep(100 * time.Millisecond)
			return queue.Health{}, nil
		}
	})
	f.get(t, "/api/overview")
	before := reads.Load()
	f.get(t, "/api/overview")
	if n := reads.Load() - before; n != 0 {
		t.Fatalf("%d readings for a request on a fresh reading", n)
	}
	clock.Add(int64(3 * time.Hour)) // the reading is now older than two intervals
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.get(t, "/api/overview")
		}()
	}
	wg.Wait()
	if n := reads.Load() - before; n != 1 {
		t.Errorf("%d readings for 10 requests on the same stale reading, want 1", n)
	}
}
