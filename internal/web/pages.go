package web

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/jobsdb"
)

// pageNames are the templates under templates/, each rendered inside layout.html.
var pageNames = []string{"overview", "table", "errors", "job", "confirm", "result", "error"}

func parseTemplates(s *Server) (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"localTime": func(v any) string {
			switch t := v.(type) {
			case time.Time:
				return t.In(s.opts.Location).Format(time.DateTime)
			case *time.Time:
				if t == nil {
					return "-"
				}
				return t.In(s.opts.Location).Format(time.DateTime)
			}
			return fmt.Sprint(v)
		},
		"seconds": func(d *float64) string {
			if d == nil {
				return "-"
			}
			return strconv.FormatFloat(*d, 'f', 3, 64) + "s"
		},
		"rate": func(r *float64) string {
			if r == nil {
				return "-"
			}
			return strconv.FormatFloat(*r, 'f', 1, 64) + "/s"
		},
		"eta": func(e *float64) string {
			if e == nil {
				return "-"
			}
			return (time.Duration(*e) * time.Second).String()
		},
		"dash": func(s string) string {
			if s == "" {
				return "-"
			}
			return s
		},
		"short":    func(s string) string { return shorten(s, 120) },
		"tableURL": func(table, sub string, v url.Values) string { return tableURL(table, sub, v) },
		"with": func(v url.Values, kv ...string) url.Values {
			out := url.Values{}
			for k, vs := range v {
				out[k] = append([]string{}, vs...)
			}
			for i := 0; i+1 < len(kv); i += 2 {
				out.Set(kv[i], kv[i+1])
			}
			return out
		},
		"values": func(kv ...string) url.Values {
			out := url.Values{}
			for i := 0; i+1 < len(kv); i += 2 {
				out.Set(kv[i], kv[i+1])
			}
			return out
		},
		"statuses": func() []string { return statusNames },
	}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, name := range pageNames {
		l, err := layout.Clone()
		if err != nil {
			return nil, err
		}
		if pages[name], err = l.ParseFS(templateFS, "templates/"+name+".html"); err != nil {
			return nil, err
		}
	}
	return pages, nil
}

var statusNames = []string{"pending", "reserved", "success", "error", "ignore"}

// shorten cuts s to its first line and n characters.
func shorten(s string, n int) string {
	line, _, more := strings.Cut(strings.TrimSpace(s), "\n")
	r := []rune(line)
	if len(r) > n {
		return string(r[:n]) + "…"
	}
	if more {
		return line + " …"
	}
	return line
}

// base is what every page's layout needs.
type base struct {
	Title        string
	Tables       []string
	AllowActions bool
	CSRF         string
	Interval     float64
	Page         string // which page: its body's data-page, for app.js
	Table        string // the table of the page, "" on the overview
}

func (s *Server) base(title, page, table string) base {
	return base{Title: title, Tables: s.opts.Tables, AllowActions: s.opts.AllowActions, CSRF: s.csrf,
		Interval: s.opts.Interval.Seconds(), Page: page, Table: table}
}

// render executes a page into a buffer first, so a template error never sends half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, data any) {
	var buf bytes.Buffer
	if err := s.pages[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		s.log.Error("web console: render page", "page", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func (s *Server) overviewPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.requestContext(r)
	defer cancel()
	o, err := s.sample.overview(ctx)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "overview", struct {
		base
		Overview Overview
	}{s.base("jetjobs", "overview", ""), o})
}

// jobRow is one job of a list, with what the page links and shows.
type jobRow struct {
	jobsdb.Job
	KeyText string
	URL     string
}

func (s *Server) rows(t *jobsdb.Target, jobs []jobsdb.Job) []jobRow {
	out := make([]jobRow, len(jobs))
	for i, j := range jobs {
		out[i] = jobRow{Job: j, KeyText: keyText(t, j.Key), URL: tableURL(t.FullName(), "job", keyValues(t, j.Key))}
	}
	return out
}

// keyText shows a key as column=value pairs.
func keyText(t *jobsdb.Target, k jobsdb.Key) string {
	m := t.KeyMap(k)
	parts := make([]string, len(t.KeyColumns))
	for i, c := range t.KeyColumns {
		v := keyValueString(m[c.Name])
		if _, isString := m[c.Name].(string); isString && (v == "" || strings.ContainsAny(v, ", =\"")) {
			v = strconv.Quote(v)
		}
		parts[i] = c.Name + "=" + v
	}
	return strings.Join(parts, ", ")
}

// tableProgress is the latest reading of one table from the overview.
func (s *Server) tableProgress(ctx context.Context, name string) TableOverview {
	o, err := s.sample.overview(ctx)
	if err != nil {
		return TableOverview{Table: name, ReadError: err.Error()}
	}
	for _, t := range o.Tables {
		if t.Table == name {
			return t
		}
	}
	return TableOverview{Table: name}
}

func (s *Server) tablePage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.requestContext(r)
	defer cancel()
	j, q, err := s.selected(ctx, r, r.URL.Query())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	t := j.Target()
	jobs, next, err := s.pageOfJobs(ctx, j, q)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	sel := q.values()
	nextURL := ""
	if next != "" {
		nextURL = tableURL(t.FullName(), "", with(sel, "after", next))
	}
	var keys []keyInput
	for _, c := range t.KeyColumns {
		keys = append(keys, keyInput{Name: c.Name, Type: c.ColumnType, Value: q.keys[c.Name]})
	}
	checked := map[string]bool{}
	for _, st := range q.status {
		checked[st] = true
	}
	s.render(w, r, http.StatusOK, "table", struct {
		base
		Progress   TableOverview
		Jobs       []jobRow
		Keys       []keyInput
		Checked    map[string]bool
		Priority   string
		Due        bool
		Message    *string
		Selection  url.Values
		Paged      bool
		Next       string
		First      string
		PageSize   int
		Columns    string
		HasFilters bool
	}{
		base: s.base(t.FullName(), "table", t.FullName()), Progress: s.tableProgress(ctx, t.FullName()),
		Jobs: s.rows(t, jobs), Keys: keys, Checked: checked, Priority: q.priority, Due: q.due, Message: q.message,
		Selection: sel, Paged: q.after != nil, Next: nextURL, First: tableURL(t.FullName(), "", sel), PageSize: q.limit,
		Columns: keyColumnNames(t), HasFilters: !q.empty(),
	})
}

type keyInput struct{ Name, Type, Value string }

func with(v url.Values, k, val string) url.Values {
	out := url.Values{}
	for key, vs := range v {
		out[key] = append([]string{}, vs...)
	}
	out.Set(k, val)
	return out
}

func (s *Server) errorsPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.requestContext(r)
	defer cancel()
	j, q, err := s.selected(ctx, r, r.URL.Query())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	groups, err := j.ErrorGroups(ctx, q.filter, q.limit)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	t := j.Target()
	s.render(w, r, http.StatusOK, "errors", struct {
		base
		Progress TableOverview
		Groups   []jobsdb.ErrorGroup
	}{s.base("errors of "+t.FullName(), "errors", t.FullName()), s.tableProgress(ctx, t.FullName()), groups})
}

// field is one name and value of a job's detail.
type field struct{ Name, Value string }

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.requestContext(r)
	defer cancel()
	j, job, err := s.getJob(ctx, r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	t := j.Target()
	api, err := apiJob(t, job, true)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	lt := func(p *time.Time) string {
		if p == nil {
			return "-"
		}
		return p.In(s.opts.Location).Format("2006-01-02 15:04:05.000")
	}
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	dur := "-"
	if job.Duration != nil {
		dur = strconv.FormatFloat(*job.Duration, 'f', 3, 64) + " s"
	}
	fields := []field{
		{"key", string(api.Key)}, {"status", string(job.Status)}, {"priority", strconv.Itoa(job.Priority)},
		{"attempts", strconv.Itoa(job.Attempts)}, {"created_time", lt(&job.CreatedTime)}, {"scheduled_time", lt(&job.ScheduledTime)},
		{"reserved_time", lt(job.ReservedTime)}, {"completed_time", lt(job.CompletedTime)}, {"duration", dur},
		{"user", dash(job.User)}, {"host", dash(job.Host)}, {"pid", strconv.Itoa(job.PID)},
		{"connection_id", strconv.FormatInt(job.ConnectionID, 10)}, {"version", dash(job.Version)},
		{"lease_expires", lt(job.LeaseExpires)}, {"dispatched_time", lt(job.DispatchedTime)},
	}
	kv := keyValues(t, job.Key)
	var hidden []field
	for _, c := range t.KeyColumns {
		hidden = append(hidden, field{"key." + c.Name, kv.Get("key." + c.Name)})
	}
	s.render(w, r, http.StatusOK, "job", struct {
		base
		Job     jobsdb.Job
		KeyText string
		Fields  []field
		Hidden  []field
		Key     url.Values
	}{s.base(t.FullName()+" "+keyText(t, job.Key), "job", t.FullName()), job, keyText(t, job.Key), fields, hidden, kv})
}

// confirmPage asks before a delete: of one job (key.COLUMN…) or of a selection (status,
// error_message…).
func (s *Server) confirmPage(w http.ResponseWriter, r *http.Request) {
	if !s.opts.AllowActions {
		s.fail(w, r, http.StatusForbidden, "read-only console: actions are off (start jobsctl serve with --allow-actions)")
		return
	}
	ctx, cancel := s.requestContext(r)
	defer cancel()
	j, q, err := s.selected(ctx, r, r.URL.Query())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if q.empty() {
		s.fail(w, r, http.StatusBadRequest, "delete needs a selection: the console never deletes every job of a table")
		return
	}
	t := j.Target()
	var hidden []field
	for k, vs := range q.values() {
		hidden = append(hidden, field{k, vs[0]})
	}
	back := tableURL(t.FullName(), "", q.values())
	whole := len(q.keys) == len(t.KeyColumns)
	if whole {
		back = tableURL(t.FullName(), "job", q.values())
	}
	s.render(w, r, http.StatusOK, "confirm", struct {
		base
		Selection []field
		Back      string
	}{s.base("delete from "+t.FullName()+"?", "confirm", t.FullName()), hidden, back})
}

// actionForm runs an action posted by a page's form and shows what it did.
func (s *Server) actionForm(w http.ResponseWriter, r *http.Request) {
	res, err := s.act(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "result", struct {
		base
		Sentence string
		Job      string
		TableURL string
	}{s.base(res.table+": done", "result", res.table), res.table + ": " + res.sentence, res.job, tableURL(res.table, "", nil)})
}

func leaderOf(ctx context.Context, s *Server, name string) (leadership.Holder, bool, error) {
	return leadership.LockHolder(ctx, s.opts.DB, s.opts.LockName(name))
}
