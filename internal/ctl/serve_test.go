package ctl

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/queue"
)

// console is a running jobsctl serve.
type console struct {
	url   string
	csrf  string
	token string
	stop  func() result
}

// startServe runs jobsctl serve with args until stop, and returns once it printed its address.
func (f *fixture) startServe(t *testing.T, args ...string) *console {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan result, 1)
	go func() {
		r := f.runWith(t, runOpts{ctx: ctx, stdout: pw}, append([]string{"serve", "--listen", "127.0.0.1:0", "-o", "json"}, args...)...)
		pw.Close()
		done <- r
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		r := <-done
		t.Fatalf("jobsctl serve printed no address: %v: exit %d\n%s", err, r.code, r.stderr)
	}
	go io.Copy(io.Discard, pr)
	var hello struct {
		URL          string   `json:"url"`
		AllowActions bool     `json:"allow_actions"`
		Tables       []string `json:"tables"`
	}
	decodeJSON(t, line, &hello)
	c := &console{url: strings.TrimSuffix(hello.URL, "/"), token: f.env[EnvWebToken]}
	c.url = strings.Replace(strings.Replace(c.url, "0.0.0.0", "127.0.0.1", 1), "[::]", "127.0.0.1", 1)
	var stopped bool
	c.stop = func() result {
		if stopped {
			return result{}
		}
		stopped = true
		cancel()
		select {
		case r := <-done:
			return r
		case <-time.After(15 * time.Second):
			t.Fatal("jobsctl serve did not stop within 15 s of Ctrl-C")
			return result{}
		}
	}
	t.Cleanup(func() { c.stop() })
	var s struct {
		CSRF string `json:"csrf_token"`
	}
	c.getJSON(t, "/api/session", &s)
	c.csrf = s.CSRF
	return c
}

func (c *console) request(t *testing.T, method, path string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, c.url+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-CSRF-Token", c.csrf)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// getJSON GETs an API path and decodes it (numbers as json.Number, as decodeJSON).
func (c *console) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, body := c.request(t, http.MethodGet, path, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	decodeJSON(t, body, v)
}

// TestServeSpeaksJobsctlJSON checks that the console's API answers with what jobsctl -o json
// prints for the same objects: the same field names, values and formats.
func TestServeSpeaksJobsctlJSON(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.insertDataJointJobs(t)
	nats := natstest.Embedded(t).ClientURL()
	f.env["JETJOBS_NATS_URL"] = nats
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, err := queue.Connect(ctx, queue.ConnectOptions{URL: nats, Name: "ctl-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	qt, err := queue.Open(ctx, nc, f.schema, "__analysis", queue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := qt.Publish(ctx, []queue.Message{{Priority: 1, Key: []byte(`{"subject_id":3,"session_id":1}`)}, {Priority: 5, Key: []byte(`{"subject_id":1,"session_id":2}`)}}); err != nil {
		t.Fatal(err)
	}

	c := f.startServe(t, "--allow-actions", "--interval", "100ms")
	a := f.analysis
	apiPath := "/api/tables/" + url.PathEscape(a)

	// list and a page of jobs (a DataJoint table: read as it is, through the union of statuses).
	var list, page any
	decodeJSON(t, f.mustRun(t, 0, "list", a, "-o", "json").stdout, &list)
	var p struct {
		Jobs any `json:"jobs"`
	}
	c.getJSON(t, apiPath+"/jobs", &p)
	page = p.Jobs
	if !reflect.DeepEqual(list, page) {
		t.Errorf("jobs differ:\njobsctl list: %v\nconsole:      %v", list, page)
	}
	// show and a job.
	var show, job any
	decodeJSON(t, f.mustRun(t, 0, "show", a, "--key", "subject_id=2,session_id=2", "-o", "json").stdout, &show)
	c.getJSON(t, apiPath+"/job?key.subject_id=2&key.session_id=2", &job)
	if !reflect.DeepEqual(show, job) {
		t.Errorf("job differs:\njobsctl show: %v\nconsole:      %v", show, job)
	}
	// progress, stream and the overview.
	var progress map[string]map[string]any
	decodeJSON(t, f.mustRun(t, 0, "progress", a, "-o", "json").stdout, &progress)
	var stream map[string]any
	decodeJSON(t, f.mustRun(t, 0, "stream", a, "-o", "json").stdout, &stream)
	var overview struct {
		Tables []map[string]any `json:"tables"`
	}
	waitfor.Within(t, 10*time.Second, "the overview reads the stream", func() bool {
		c.getJSON(t, "/api/overview", &overview)
		return overview.Tables[0]["stream"] != nil
	})
	tv := overview.Tables[0]
	for k, v := range progress[a] {
		if !reflect.DeepEqual(tv[k], v) {
			t.Errorf("%s: overview %v, jobsctl progress %v", k, tv[k], v)
		}
	}
	if !reflect.DeepEqual(tv["stream"], stream[a]) {
		t.Errorf("stream differs:\njobsctl stream: %v\nconsole:        %v", stream[a], tv["stream"])
	}
	var watch map[string]any
	decodeJSON(t, f.mustRun(t, 0, "watch", a, "-o", "json", "--count", "1").stdout, &watch)
	for k := range watch {
		if _, ok := tv[k]; !ok {
			t.Errorf("the overview has no field %q of jobsctl watch", k)
		}
	}
	// An action answers as the command does (a retry that finds nothing to retry: the same
	// fields and values).
	var cli, web any
	decodeJSON(t, f.mustRun(t, 0, "retry", a, "--key", "subject_id=1,session_id=1", "-o", "json").stdout, &cli)
	code, body := c.request(t, http.MethodPost, apiPath+"/retry", url.Values{"key.subject_id": {"1"}, "key.session_id": {"1"}})
	if code != http.StatusOK {
		t.Fatalf("retry: %d %s", code, body)
	}
	decodeJSON(t, body, &web)
	if !reflect.DeepEqual(cli, web) {
		t.Errorf("retry differs:\njobsctl: %v\nconsole: %v", cli, web)
	}
	if r := c.stop(); r.code != 0 {
		t.Errorf("serve after Ctrl-C: exit %d\n%s", r.code, r.stderr)
	}
}

func TestServeFlags(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--listen", "0.0.0.0:0"}, "beyond loopback"},
		{[]string{"serve", "--listen", ":0"}, "beyond loopback"},
		{[]string{"serve", "--listen", "0.0.0.0:0", "--token", "short"}, "16 or more"},
		{[]string{"serve", "--listen", "nowhere"}, "HOST:PORT"},
		{[]string{"serve", "--page-size", "0"}, "--page-size"},
		{[]string{"serve", "--interval", "1ms"}, "--interval"},
		{[]string{"serve", f.schema + ".__nothing", "--listen", "127.0.0.1:0"}, "configured tables"},
	} {
		r := f.run(t, c.args...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("jobsctl %s: exit %d, stderr %q; want 2 and %q", strings.Join(c.args, " "), r.code, r.stderr, c.want)
		}
	}

	// A token from the environment lets it listen everywhere, and is required.
	const token = "serve-test-token-0123456789"
	f.env[EnvWebToken] = token
	c := f.startServe(t, "--listen", "0.0.0.0:0")
	c.token = ""
	if code, _ := c.request(t, http.MethodGet, "/api/overview", nil); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", code)
	}
	c.token = token
	if code, body := c.request(t, http.MethodGet, "/api/overview", nil); code != http.StatusOK {
		t.Errorf("with the token: %d %s", code, body)
	}
	// Read-only without --allow-actions.
	if code, _ := c.request(t, http.MethodPost, "/api/tables/"+url.PathEscape(f.analysis)+"/refresh", url.Values{}); code != http.StatusForbidden {
		t.Errorf("refresh on a read-only console: %d", code)
	}
}
