package web_test

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jetjobs/jetjobs/internal/browsertest"
	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/internal/web"
)

// The browser tests drive the console in headless Chromium (package browsertest): they fail,
// saying how to install it, when it is missing. They run one after another (not in parallel),
// so that a small machine runs one browser at a time.

// browse runs steps in a fresh browser tab with a time limit.
func browse(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// text is the text of the first element the CSS selector matches, once it is visible.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		t.Fatalf("wait for %s: %v", sel, err)
	}
	s, err := chromedp.Run(sctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// within polls a JavaScript condition in the page until it holds.
func within(t *testing.T, ctx context.Context, d time.Duration, what, expr string) {
	t.Helper()
	waitfor.Within(t, d, what, func() bool { return eval[bool](t, ctx, expr) })
}

const pageCounts = `(() => {
	const card = document.querySelector("section.card");
	const out = {};
	for (const k of ["pending", "reserved", "success", "error", "ignore", "total"]) {
		out[k] = card.querySelector('[data-field="' + k + '"]').textContent;
	}
	return out;
})()`

func TestBrowserOverview(t *testing.T) {
	f := newFixture(t, 3, 13, func(o *web.Options) { o.Stream = fakeStream })
	ctx := browsertest.New(t)
	browse(t, ctx, chromedp.Navigate(f.ts.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#live.ok")))
	shown := eval[map[string]string](t, ctx, pageCounts)
	for k, n := range f.counts(t) {
		if shown[k] != strconv.FormatInt(n, 10) {
			t.Errorf("%s: the page shows %q, the database has %d", k, shown[k], n)
		}
	}
	if rows := eval[int](t, ctx, `document.querySelectorAll('table.stream tbody tr').length`); rows != 3 {
		t.Errorf("%d stream rows, want 3 (two priorities and the stray messages)", rows)
	}
	if leader := text(t, ctx, `[data-field="leader"]`); leader != "no scheduler leads" {
		t.Errorf("leader %q", leader)
	}

	// The page follows the database without being reloaded, and charts the rate.
	browse(t, ctx, chromedp.Evaluate[chromedp.Void](`window.notReloaded = true`))
	f.db.Exec(t, "DELETE FROM `~~analysis` WHERE `status` = 'pending' AND subject_id = 3")
	within(t, ctx, 15*time.Second, "the page shows the deletion",
		`window.notReloaded && document.querySelector('section.card [data-field="pending"]').textContent === "18"`)
	within(t, ctx, 15*time.Second, "the chart has bars", `document.querySelectorAll('svg[data-field="history"] rect').length >= 2`)
	if errs := eval[string](t, ctx, `document.querySelector('[data-field="rate"]').textContent`); !strings.HasSuffix(errs, "/s") {
		t.Errorf("rate %q", errs)
	}

	// From the counts to the list of a status.
	browse(t, ctx, chromedp.Click(chromedp.CSS(`section.card a.st.error`)), chromedp.WaitVisible(chromedp.CSS("table.jobs")))
	if n := eval[int](t, ctx, `document.querySelectorAll('table.jobs tbody a.key').length`); n != 3 {
		t.Errorf("the error list has %d jobs, want 3", n)
	}
}

func TestBrowserFailedJobRetry(t *testing.T) {
	f := newFixture(t, 3, 13, func(o *web.Options) { o.AllowActions = true })
	ctx := browsertest.New(t)
	browse(t, ctx,
		chromedp.Navigate(f.ts.URL+f.page("", url.Values{"status": {"error"}})),
		chromedp.Click(chromedp.CSS(`table.jobs a.key`)), // subject 2's: priority 1 comes first
		chromedp.WaitVisible(chromedp.CSS("#error-stack")))
	if stack := text(t, ctx, "#error-stack"); !strings.Contains(stack, `raise ValueError("session 13 is corrupt")`) || !strings.Contains(stack, "<b>bold</b>") {
		t.Fatalf("stack %q", stack)
	}
	if s := text(t, ctx, "#job-status"); s != "error" {
		t.Fatalf("status %q", s)
	}
	browse(t, ctx, chromedp.Click(chromedp.CSS("#retry")), chromedp.WaitVisible(chromedp.CSS("#result")))
	if r := text(t, ctx, "#result"); !strings.Contains(r, "1 error job back to pending") {
		t.Fatalf("result %q", r)
	}
	if s := f.status(t, 2, 13); s != "pending" {
		t.Fatalf("the database says %s after the retry", s)
	}
	browse(t, ctx, chromedp.Click(chromedp.CSS("#back-to-job")), chromedp.WaitVisible(chromedp.CSS("#job-status")))
	if s := text(t, ctx, "#job-status"); s != "pending" {
		t.Fatalf("the job page shows %q after the retry", s)
	}

	// Delete asks first, then deletes.
	browse(t, ctx, chromedp.Click(chromedp.CSS("#delete")), chromedp.WaitVisible(chromedp.CSS("#confirm-delete")))
	if n := f.counts(t)["total"]; n != 39 {
		t.Fatalf("the confirmation page deleted: %d jobs", n)
	}
	browse(t, ctx, chromedp.Click(chromedp.CSS("#confirm-delete")), chromedp.WaitVisible(chromedp.CSS("#result")))
	if r := text(t, ctx, "#result"); !strings.Contains(r, "deleted 1 job") || f.counts(t)["total"] != 38 {
		t.Fatalf("result %q, %d jobs", r, f.counts(t)["total"])
	}
}

func TestBrowserReadOnly(t *testing.T) {
	f := newFixture(t, 2, 13, nil)
	ctx := browsertest.New(t)
	for _, path := range []string{"/", f.page("job", url.Values{"key.subject_id": {"1"}, "key.session_id": {"13"}}), f.page("errors", nil)} {
		browse(t, ctx, chromedp.Navigate(f.ts.URL+path), chromedp.WaitVisible(chromedp.CSS("main")))
		if n := eval[int](t, ctx, `document.querySelectorAll('form[method=post], #retry, #ignore, #delete, a.button').length`); n != 0 {
			t.Errorf("%s: %d action elements on a read-only console", path, n)
		}
	}
	// Even the page's own script, with the CSRF token, cannot act.
	code := eval[int](t, ctx, fmt.Sprintf(`fetch("/api/session").then(r => r.json()).then(s => fetch(%q, {
		method: "POST", headers: {"X-CSRF-Token": s.csrf_token, "Content-Type": "application/x-www-form-urlencoded"},
		body: "key.subject_id=1&key.session_id=13"})).then(r => r.status)`, f.path("retry", nil)))
	if code != http.StatusForbidden {
		t.Errorf("POST from the page: %d, want 403", code)
	}
	if s := f.status(t, 1, 13); s != "error" {
		t.Fatalf("a read-only console retried: %s", s)
	}
}

// attackerPage is a page of another origin that posts a retry to the console as soon as it
// loads, with the console's CSRF token as if it had leaked.
var attackerPage = template.Must(template.New("").Parse(`<!DOCTYPE html><html><body>
<form id="f" method="post" action="{{.Action}}">
<input name="csrf" value="{{.CSRF}}"><input name="key.subject_id" value="1"><input name="key.session_id" value="13">
</form><script>document.getElementById("f").submit()</script></body></html>`))

func TestBrowserCrossOriginAndToken(t *testing.T) {
	const token = "browser-test-token-0123456789"
	f := newFixture(t, 2, 13, func(o *web.Options) { o.AllowActions = true; o.Token = token })
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		attackerPage.Execute(w, map[string]string{"Action": f.ts.URL + f.page("retry", nil), "CSRF": f.csrf})
	}))
	defer attacker.Close()
	ctx := browsertest.New(t)

	// Without the token, nothing.
	browse(t, ctx, chromedp.Navigate(f.ts.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#problem")))
	if p := text(t, ctx, "#problem"); !strings.Contains(p, "needs its token") {
		t.Fatalf("without the token: %q", p)
	}
	// With it once, the cookie carries it.
	browse(t, ctx, chromedp.Navigate(f.ts.URL+"/?token="+token), chromedp.WaitVisible(chromedp.CSS("#live.ok")))
	if loc := eval[string](t, ctx, `location.search`); loc != "" {
		t.Errorf("the token stays in the address bar: %q", loc)
	}
	// Another origin's page (another port: same site, other origin) posts a retry: refused.
	attackerURL := strings.Replace(attacker.URL, "127.0.0.1", "localhost", 1)
	for _, u := range []string{attacker.URL, attackerURL} {
		browse(t, ctx, chromedp.Navigate(u), chromedp.WaitVisible(chromedp.CSS("#problem")))
		if p := text(t, ctx, "#problem"); !strings.Contains(p, "cross-origin request refused") && !strings.Contains(p, "needs its token") {
			t.Errorf("%s: the console answered %q", u, p)
		}
		if s := f.status(t, 1, 13); s != "error" {
			t.Fatalf("a cross-origin form retried the job: %s", s)
		}
	}
	// The console's own form works.
	browse(t, ctx,
		chromedp.Navigate(f.ts.URL+f.page("job", url.Values{"key.subject_id": {"1"}, "key.session_id": {"13"}})),
		chromedp.Click(chromedp.CSS("#retry")), chromedp.WaitVisible(chromedp.CSS("#result")))
	if s := f.status(t, 1, 13); s != "pending" {
		t.Fatalf("the console's own retry: %s", s)
	}
}

func TestBrowserShowsMarkupAsText(t *testing.T) {
	f := newFixture(t, 2, 13, func(o *web.Options) { o.AllowActions = true })
	ctx := browsertest.New(t)
	for _, path := range []string{
		f.page("job", url.Values{"key.subject_id": {"1"}, "key.session_id": {"13"}}),
		f.page("", url.Values{"status": {"error"}}),
		f.page("errors", nil),
	} {
		browse(t, ctx, chromedp.Navigate(f.ts.URL+path), chromedp.WaitVisible(chromedp.CSS("main")))
		if title := eval[string](t, ctx, `document.title`); title == "pwned" {
			t.Fatalf("%s: the error message ran as script", path)
		}
		if n := eval[int](t, ctx, `document.querySelectorAll("main img, main script").length`); n != 0 {
			t.Errorf("%s: the error message became %d elements", path, n)
		}
		if !eval[bool](t, ctx, fmt.Sprintf(`document.querySelector("main").textContent.includes(%q)`, xssMessage)) {
			t.Errorf("%s: the message is not shown as text", path)
		}
	}
	if m := text(t, ctx, "table.groups td.msg pre"); m == "" {
		t.Error("no message on the errors page")
	}
}
