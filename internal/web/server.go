package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// Defaults of Options.
const (
	// IntervalDefault is how often the overview is read while someone watches it, as
	// jobsctl watch's --interval.
	IntervalDefault = 2 * time.Second
	// PageSizeDefault is how many jobs a page lists.
	PageSizeDefault = 50
	// MaxPageSize bounds the limit parameter of the API.
	MaxPageSize = 1000
	// historyLength is how many overview samples the throughput chart keeps per table.
	historyLength = 150
	// idleAfter is how long after the last request the overview stops being read.
	idleAfter = time.Minute
)

// Names of the token's cookie, the CSRF form field and header.
const (
	tokenCookie = "jetjobs_token"
	csrfField   = "csrf"
	csrfHeader  = "X-CSRF-Token"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure a Server. Tables and Open are required.
type Options struct {
	// Tables are the target tables shown, "schema.table", in this order.
	Tables []string
	// Open returns the jobs handle of a table; it is called until it succeeds, then kept.
	Open func(ctx context.Context, table string) (*jobsdb.Jobs, error)
	// DB is the pool the leader of each table is looked up on (its scheduler lock); nil: not shown.
	DB *sql.DB
	// LockName names a table's leadership lock (leadership.LockName).
	LockName func(table string) string
	// Stream reads a table's JetStream state, as jobsctl stream does; nil: not shown.
	Stream func(ctx context.Context, t *jobsdb.Target) (queue.Health, error)
	// Refresh are the settings of the refresh action (priority, timeouts).
	Refresh jobsdb.RefreshOptions
	// AllowActions enables retry, ignore, delete and refresh. Default false: read-only.
	AllowActions bool
	// Token, when not empty, is required on every request.
	Token string
	// Interval between readings of the overview. Default IntervalDefault.
	Interval time.Duration
	// PageSize is the default number of jobs per page. Default PageSizeDefault.
	PageSize int
	// Timeout bounds the database work of one request. Default 30 s.
	Timeout time.Duration
	// Location is the time zone of times shown on pages (the API uses UTC). Default time.Local.
	Location *time.Location
	// Logger receives errors and actions. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Server is the web console: an http.Handler and the sampler that keeps the overview.
type Server struct {
	opts  Options
	csrf  string
	pages map[string]*template.Template
	mux   *http.ServeMux
	cop   *http.CrossOriginProtection
	log   *slog.Logger

	mu     sync.Mutex
	jobs   map[string]*jobsdb.Jobs
	sample *sampler
}

// New returns a server for opts; Run keeps its overview up to date.
func New(opts Options) (*Server, error) {
	if len(opts.Tables) == 0 {
		return nil, errors.New("web: no tables")
	}
	if opts.Open == nil {
		return nil, errors.New("web: Options.Open is required")
	}
	if opts.Interval <= 0 {
		opts.Interval = IntervalDefault
	}
	if opts.PageSize <= 0 {
		opts.PageSize = PageSizeDefault
	}
	opts.PageSize = min(opts.PageSize, MaxPageSize)
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	csrf := make([]byte, 32)
	if _, err := rand.Read(csrf); err != nil {
		return nil, err
	}
	s := &Server{
		opts: opts,
		csrf: hex.EncodeToString(csrf),
		log:  opts.Logger,
		jobs: map[string]*jobsdb.Jobs{},
		cop:  http.NewCrossOriginProtection(),
	}
	s.cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusForbidden, "cross-origin request refused: actions are taken from the console's own pages")
	}))
	var err error
	if s.pages, err = parseTemplates(s); err != nil {
		return nil, err
	}
	s.sample = newSampler(s)
	s.routes()
	return s, nil
}

// Run reads the overview once, then every Options.Interval while someone has asked for a
// page or the API within the last minute, until ctx ends.
func (s *Server) Run(ctx context.Context) {
	s.sample.run(ctx)
}

// SampleNow reads the overview once, at once (for tests and after actions).
func (s *Server) SampleNow(ctx context.Context) { s.sample.once(ctx) }

// ServeHTTP serves the console.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	if s.opts.Token == "" && !LoopbackHost(r.Host) {
		s.fail(w, r, http.StatusMisdirectedRequest, fmt.Sprintf("host %q refused: without a token the console answers only to a loopback name (localhost, 127.0.0.1, [::1])", r.Host))
		return
	}
	if s.opts.Token != "" && !s.authorized(w, r) {
		return
	}
	s.sample.touch()
	if r.Method == http.MethodPost {
		s.cop.Handler(http.HandlerFunc(s.postGuard)).ServeHTTP(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// postGuard lets a POST through when actions are allowed and it carries the CSRF token.
func (s *Server) postGuard(w http.ResponseWriter, r *http.Request) {
	if !s.opts.AllowActions {
		s.fail(w, r, http.StatusForbidden, "read-only console: actions are off (start jobsctl serve with --allow-actions)")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		s.fail(w, r, http.StatusBadRequest, "bad form: "+err.Error())
		return
	}
	got := r.Header.Get(csrfHeader)
	if got == "" {
		got = r.PostForm.Get(csrfField)
	}
	if !equalSecret(got, s.csrf) {
		s.fail(w, r, http.StatusForbidden, "missing or wrong CSRF token: send the "+csrfField+" form field of the console's pages or the "+csrfHeader+" header (GET /api/session)")
		return
	}
	s.mux.ServeHTTP(w, r)
}

// authorized checks the token: a bearer header, the cookie, or ?token= (which sets the cookie
// and, for a page, redirects to the same URL without it).
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && equalSecret(strings.TrimSpace(auth), s.opts.Token) {
		return true
	}
	if q := r.URL.Query(); q.Has("token") {
		if !equalSecret(q.Get("token"), s.opts.Token) {
			s.fail(w, r, http.StatusUnauthorized, "wrong token")
			return false
		}
		http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: s.opts.Token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
		if r.Method == http.MethodGet && !isAPI(r) {
			q.Del("token")
			u := *r.URL
			u.RawQuery = q.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return false
		}
		return true
	}
	if c, err := r.Cookie(tokenCookie); err == nil && equalSecret(c.Value, s.opts.Token) {
		return true
	}
	s.fail(w, r, http.StatusUnauthorized, "this console needs its token: open it once with ?token=TOKEN (the browser keeps it in a cookie), or send Authorization: Bearer TOKEN")
	return false
}

// equalSecret compares two secrets in constant time (of their hashes, so neither's length leaks).
func equalSecret(got, want string) bool {
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1 && want != ""
}

// LoopbackHost reports whether a host, or a host:port (a Host header, a listen address), names
// the loopback interface only: "localhost" or a loopback address. An empty host, 0.0.0.0 and
// :: do not.
func LoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/api/") }

// routes registers the pages and the API.
func (s *Server) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))

	m.HandleFunc("GET /{$}", s.overviewPage)
	m.HandleFunc("GET /tables/{table}", s.tablePage)
	m.HandleFunc("GET /tables/{table}/errors", s.errorsPage)
	m.HandleFunc("GET /tables/{table}/job", s.jobPage)
	m.HandleFunc("GET /tables/{table}/confirm", s.confirmPage)
	m.HandleFunc("POST /tables/{table}/{action}", s.actionForm)

	m.HandleFunc("GET /api/session", s.apiSession)
	m.HandleFunc("GET /api/overview", s.apiOverview)
	m.HandleFunc("GET /api/tables/{table}/jobs", s.apiJobs)
	m.HandleFunc("GET /api/tables/{table}/job", s.apiJob)
	m.HandleFunc("GET /api/tables/{table}/errors", s.apiErrors)
	m.HandleFunc("POST /api/tables/{table}/{action}", s.apiAction)
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "no such page: "+r.URL.Path)
	})
	s.mux = m
}

// table returns the jobs handle of a configured table, opening it the first time.
func (s *Server) table(ctx context.Context, name string) (*jobsdb.Jobs, error) {
	known := false
	for _, t := range s.opts.Tables {
		if t == name {
			known = true
		}
	}
	if !known {
		return nil, &httpError{http.StatusNotFound, fmt.Sprintf("no table %q in this console; its tables: %s", name, strings.Join(s.opts.Tables, ", "))}
	}
	s.mu.Lock()
	j := s.jobs[name]
	s.mu.Unlock()
	if j != nil {
		return j, nil
	}
	j, err := s.opts.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if have := s.jobs[name]; have != nil {
		return have, nil
	}
	s.jobs[name] = j
	return j, nil
}

// httpError is an error with the HTTP status that reports it.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// statusOf maps an error to its HTTP status: bad input 400, unknown things 404, others 500.
func statusOf(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.code
	case errors.Is(err, jobsdb.ErrBadKey), errors.Is(err, jobsdb.ErrBadRestriction):
		return http.StatusBadRequest
	case errors.Is(err, jobsdb.ErrNotFound), errors.Is(err, jobsdb.ErrNoJobsTable):
		return http.StatusNotFound
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

// fail answers a request with an error: JSON {"error": msg} for the API, a page otherwise.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if code >= 500 {
		s.log.Error("web console request failed", "method", r.Method, "path", r.URL.Path, "status", code, "err", msg)
	}
	if isAPI(r) {
		writeJSON(w, code, map[string]string{"error": msg})
		return
	}
	b := s.base(http.StatusText(code), "error", "")
	if code == http.StatusUnauthorized || code == http.StatusMisdirectedRequest {
		b.Tables = nil // nothing about the queue to whoever may not see it
	}
	s.render(w, r, code, "error", struct {
		base
		Message string
		Code    int
	}{b, msg, code})
}

func (s *Server) failErr(w http.ResponseWriter, r *http.Request, err error) {
	s.fail(w, r, statusOf(err), err.Error())
}

// requestContext bounds a request's database work.
func (s *Server) requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.opts.Timeout)
}

// tableURL is the path of a table's page, with query values.
func tableURL(table, sub string, q url.Values) string {
	u := "/tables/" + url.PathEscape(table)
	if sub != "" {
		u += "/" + sub
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}
