package web

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// machineTimeLayout is jobsctl -o json's: RFC 3339 in UTC with the milliseconds the jobs
// table keeps.
const machineTimeLayout = "2006-01-02T15:04:05.000Z07:00"

func apiTime(t time.Time) string { return t.UTC().Format(machineTimeLayout) }

func apiTimePtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := apiTime(*t)
	return &s
}

func round(f float64, digits int) float64 {
	r, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', digits, 64), 64)
	return r
}

// Session is GET /api/session: what a client needs before it acts.
type Session struct {
	AllowActions bool     `json:"allow_actions"`
	CSRFToken    string   `json:"csrf_token"`
	Tables       []string `json:"tables"`
	Interval     float64  `json:"interval_seconds"`
}

// Overview is GET /api/overview.
type Overview struct {
	Time     string          `json:"time"`
	Interval float64         `json:"interval_seconds"`
	Tables   []TableOverview `json:"tables"`
}

// TableOverview is one table of the overview: the fields of jobsctl watch -o json (time,
// table, the counts of progress, rate, eta_seconds), then the leader, the stream and the
// recent history.
type TableOverview struct {
	Time  string `json:"time"`
	Table string `json:"table"`
	jobsdb.Progress
	Rate       *float64 `json:"rate"`
	ETASeconds *float64 `json:"eta_seconds"`
	// ReadError is why the counts could not be read ("" when they were).
	ReadError string `json:"read_error,omitempty"`
	// Leader is the scheduler connection that leads the table; null when none does.
	Leader      *leadership.Holder `json:"leader"`
	LeaderError string             `json:"leader_error,omitempty"`
	// Stream is the table's JetStream state per priority, as jobsctl stream -o json; null
	// when unknown (see stream_error).
	Stream      []StreamRow `json:"stream"`
	StreamError string      `json:"stream_error,omitempty"`
	History     []Point     `json:"history"`
}

// Point is one reading of a table's history.
type Point struct {
	Time      string   `json:"time"`
	Rate      *float64 `json:"rate"`
	Remaining int64    `json:"remaining"` // pending + reserved
}

// StreamRow is one priority of a table's stream, the fields of jobsctl stream -o json; the
// row of stray messages has a null priority.
type StreamRow struct {
	Priority    *int   `json:"priority"`
	Waiting     uint64 `json:"waiting"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	Consumer    string `json:"consumer"`
}

func streamRows(h queue.Health) []StreamRow {
	rows := []StreamRow{}
	for _, p := range h.Priorities {
		pr := p.Priority
		rows = append(rows, StreamRow{&pr, p.Waiting, p.AckPending, p.Redelivered, p.Consumer})
	}
	if h.Stray > 0 {
		rows = append(rows, StreamRow{Waiting: h.Stray})
	}
	return rows
}

// Job is a job as jobsctl list and show print it with -o json; ErrorStack is only in a single
// job's answer (show).
type Job struct {
	Key            json.RawMessage `json:"key"`
	Status         string          `json:"status"`
	Priority       int             `json:"priority"`
	Attempts       int             `json:"attempts"`
	CreatedTime    string          `json:"created_time"`
	ScheduledTime  string          `json:"scheduled_time"`
	ReservedTime   *string         `json:"reserved_time"`
	CompletedTime  *string         `json:"completed_time"`
	Duration       *float64        `json:"duration"`
	User           string          `json:"user"`
	Host           string          `json:"host"`
	PID            int64           `json:"pid"`
	ConnectionID   int64           `json:"connection_id"`
	Version        string          `json:"version"`
	LeaseExpires   *string         `json:"lease_expires"`
	DispatchedTime *string         `json:"dispatched_time"`
	ErrorMessage   string          `json:"error_message"`
	ErrorStack     *string         `json:"error_stack,omitempty"`
}

func apiJob(t *jobsdb.Target, j jobsdb.Job, withStack bool) (Job, error) {
	key, err := t.KeyJSON(j.Key)
	if err != nil {
		return Job{}, fmt.Errorf("encode key of %s: %w", t.FullName(), err)
	}
	out := Job{
		Key: key, Status: string(j.Status), Priority: j.Priority, Attempts: j.Attempts,
		CreatedTime: apiTime(j.CreatedTime), ScheduledTime: apiTime(j.ScheduledTime),
		ReservedTime: apiTimePtr(j.ReservedTime), CompletedTime: apiTimePtr(j.CompletedTime),
		Duration: j.Duration, User: j.User, Host: j.Host, PID: int64(j.PID), ConnectionID: j.ConnectionID,
		Version: j.Version, LeaseExpires: apiTimePtr(j.LeaseExpires), DispatchedTime: apiTimePtr(j.DispatchedTime),
		ErrorMessage: j.ErrorMessage,
	}
	if withStack {
		stack := j.ErrorStack
		out.ErrorStack = &stack
	}
	return out, nil
}

// JobPage is GET /api/tables/{table}/jobs: a page of jobs and the cursor of the next page
// (null on the last).
type JobPage struct {
	Table string  `json:"table"`
	Jobs  []Job   `json:"jobs"`
	Next  *string `json:"next"`
}

// ErrorGroup is one message of GET /api/tables/{table}/errors.
type ErrorGroup struct {
	ErrorMessage string  `json:"error_message"`
	Count        int64   `json:"count"`
	LastFailed   *string `json:"last_failed"`
}

// ErrorGroups is GET /api/tables/{table}/errors.
type ErrorGroups struct {
	Table  string       `json:"table"`
	Groups []ErrorGroup `json:"groups"`
}

// query is a parsed job selection: the filters of the jobs list and of actions.
type query struct {
	filter   jobsdb.Filter
	keys     map[string]string // key.COLUMN values as given
	status   []string
	priority string
	due      bool
	message  *string
	after    *jobsdb.Cursor
	cursor   string
	limit    int
}

// parseQuery reads the selection parameters: status (repeat or comma-separate), priority
// (at most N), key.COLUMN=VALUE (typed by the column), due, error_message (exact), and for
// lists after (a cursor) and limit.
func (s *Server) parseQuery(t *jobsdb.Target, v url.Values) (*query, error) {
	q := &query{keys: map[string]string{}, limit: s.opts.PageSize}
	for _, raw := range v["status"] {
		for _, st := range strings.Split(raw, ",") {
			st = strings.TrimSpace(strings.ToLower(st))
			if st == "" {
				continue
			}
			if !jobsdb.Status(st).Valid() {
				return nil, badRequest("status %q: want one of pending, reserved, success, error, ignore", st)
			}
			if !slices.Contains(q.status, st) {
				q.status = append(q.status, st)
				q.filter.Statuses = append(q.filter.Statuses, jobsdb.Status(st))
			}
		}
	}
	if p := strings.TrimSpace(v.Get("priority")); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < -128 || n > 127 {
			return nil, badRequest("priority %q: want an integer in -128..127 (lower is more urgent; the list shows priority <= it)", p)
		}
		q.priority = p
		q.filter.MaxPriority = &n
	}
	if d := v.Get("due"); d != "" {
		due, err := strconv.ParseBool(d)
		if err != nil {
			return nil, badRequest("due %q: want true or false", d)
		}
		q.due = due
		q.filter.DueOnly = due
	}
	if v.Has("error_message") {
		m := v.Get("error_message")
		q.message = &m
		q.filter.ErrorMessage = &m
	}
	eq := map[string]any{}
	for name, vals := range v {
		col, ok := strings.CutPrefix(name, "key.")
		if !ok || len(vals) == 0 || vals[0] == "" {
			continue
		}
		if !slices.ContainsFunc(t.KeyColumns, func(c jobsdb.Column) bool { return c.Name == col }) {
			return nil, badRequest("key.%s: %q is not a key column of %s; its key columns are %s", col, col, t.FullName(), keyColumnNames(t))
		}
		q.keys[col] = vals[0]
		eq[col] = vals[0]
	}
	if len(eq) > 0 {
		q.filter.Restrictions = []jobsdb.Restriction{{Equal: eq}}
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxPageSize {
			return nil, badRequest("limit %q: want 1..%d", l, MaxPageSize)
		}
		q.limit = n
	}
	if c := v.Get("after"); c != "" {
		after, err := decodeCursor(t, c)
		if err != nil {
			return nil, badRequest("after: not a cursor of this table's list (%v): take it from the next field of the previous page", err)
		}
		q.after, q.cursor = after, c
	}
	return q, nil
}

// empty reports whether the selection selects every job.
func (q *query) empty() bool {
	return len(q.filter.Statuses) == 0 && q.filter.MaxPriority == nil && !q.filter.DueOnly && q.message == nil && len(q.keys) == 0
}

// values are the selection as URL parameters (without the cursor and limit).
func (q *query) values() url.Values {
	v := url.Values{}
	if len(q.status) > 0 {
		v.Set("status", strings.Join(q.status, ","))
	}
	if q.priority != "" {
		v.Set("priority", q.priority)
	}
	if q.due {
		v.Set("due", "true")
	}
	if q.message != nil {
		v.Set("error_message", *q.message)
	}
	for k, val := range q.keys {
		v.Set("key."+k, val)
	}
	return v
}

func keyColumnNames(t *jobsdb.Target) string {
	names := make([]string, len(t.KeyColumns))
	for i, c := range t.KeyColumns {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// wholeKey reads a job's whole key from key.COLUMN parameters.
func wholeKey(t *jobsdb.Target, v url.Values) (jobsdb.Key, error) {
	m := map[string]string{}
	var missing []string
	for _, c := range t.KeyColumns {
		if !v.Has("key." + c.Name) {
			missing = append(missing, "key."+c.Name)
			continue
		}
		m[c.Name] = v.Get("key." + c.Name)
	}
	if len(missing) > 0 {
		return nil, badRequest("a job is named by its whole key: missing %s (key columns of %s: %s)", strings.Join(missing, ", "), t.FullName(), keyColumnNames(t))
	}
	k, err := t.KeyFromStrings(m)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	return k, nil
}

// keyValues are a key's key.COLUMN parameters.
func keyValues(t *jobsdb.Target, k jobsdb.Key) url.Values {
	v := url.Values{}
	m := t.KeyMap(k)
	for _, c := range t.KeyColumns {
		v.Set("key."+c.Name, keyValueString(m[c.Name]))
	}
	return v
}

func keyValueString(x any) string {
	switch y := x.(type) {
	case []byte:
		return string(y)
	case time.Time:
		return y.Format("2006-01-02 15:04:05.999999")
	case json.Number:
		return y.String()
	}
	return fmt.Sprint(x)
}

// cursorJSON is the content of a page cursor (base64url in the API and the URLs).
type cursorJSON struct {
	Priority int             `json:"p"`
	Time     string          `json:"t"`
	Key      json.RawMessage `json:"k"`
}

func encodeCursor(t *jobsdb.Target, c jobsdb.Cursor) (string, error) {
	key, err := t.KeyJSON(c.Key)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(cursorJSON{c.Priority, c.ScheduledTime.UTC().Format(time.RFC3339Nano), key})
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func decodeCursor(t *jobsdb.Target, s string) (*jobsdb.Cursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64url")
	}
	var c cursorJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	at, err := time.Parse(time.RFC3339Nano, c.Time)
	if err != nil {
		return nil, err
	}
	key, err := t.ParseKey(c.Key)
	if err != nil {
		return nil, err
	}
	return &jobsdb.Cursor{Priority: c.Priority, ScheduledTime: at, Key: key}, nil
}

// jobPage reads one page of jobs for q.
func (s *Server) pageOfJobs(ctx context.Context, j *jobsdb.Jobs, q *query) ([]jobsdb.Job, string, error) {
	jobs, more, err := j.Page(ctx, q.filter, q.after, q.limit)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if more && len(jobs) > 0 {
		if next, err = encodeCursor(j.Target(), jobsdb.CursorOf(jobs[len(jobs)-1])); err != nil {
			return nil, "", err
		}
	}
	return jobs, next, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, `{"error": "encode the answer"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func (s *Server) apiSession(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Session{AllowActions: s.opts.AllowActions, CSRFToken: s.csrf, Tables: s.opts.Tables, Interval: s.opts.Interval.Seconds()})
}

func (s *Server) apiOverview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.requestContext(r)
	defer cancel()
	o, err := s.sample.overview(ctx)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, o)
}

// selected opens the request's table and parses its selection.
func (s *Server) selected(ctx context.Context, r *http.Request, v url.Values) (*jobsdb.Jobs, *query, error) {
	j, err := s.table(ctx, r.PathValue("table"))
	if err != nil {
		return nil, nil, err
	}
	q, err := s.parseQuery(j.Target(), v)
	if err != nil {
		return nil, nil, err
	}
	return j, q, nil
}

func (s *Server) apiJobs(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.requestContext(r)
	defer cancel()
	j, q, err := s.selected(ctx, r, r.URL.Query())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	jobs, next, err := s.pageOfJobs(ctx, j, q)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	out := JobPage{Table: j.Target().FullName(), Jobs: []Job{}}
	for _, job := range jobs {
		aj, err := apiJob(j.Target(), job, false)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		out.Jobs = append(out.Jobs, aj)
	}
	if next != "" {
		out.Next = &next
	}
	writeJSON(w, http.StatusOK, out)
}

// getJob reads the job named by the request's key.COLUMN parameters.
func (s *Server) getJob(ctx context.Context, r *http.Request) (*jobsdb.Jobs, jobsdb.Job, error) {
	j, err := s.table(ctx, r.PathValue("table"))
	if err != nil {
		return nil, jobsdb.Job{}, err
	}
	key, err := wholeKey(j.Target(), r.URL.Query())
	if err != nil {
		return j, jobsdb.Job{}, err
	}
	job, err := j.Get(ctx, key)
	if errors.Is(err, jobsdb.ErrNotFound) {
		return j, jobsdb.Job{}, &httpError{http.StatusNotFound, fmt.Sprintf("%s: no job with key %s", j.Target().FullName(), j.Target().KeyString(key))}
	}
	return j, job, err
}

func (s *Server) apiJob(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.requestContext(r)
	defer cancel()
	j, job, err := s.getJob(ctx, r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	out, err := apiJob(j.Target(), job, true)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) errorGroups(ctx context.Context, j *jobsdb.Jobs, q *query) ([]ErrorGroup, error) {
	groups, err := j.ErrorGroups(ctx, q.filter, q.limit)
	if err != nil {
		return nil, err
	}
	out := []ErrorGroup{}
	for _, g := range groups {
		out = append(out, ErrorGroup{g.Message, g.Count, apiTimePtr(g.LastFailed)})
	}
	return out, nil
}

func (s *Server) apiErrors(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.requestContext(r)
	defer cancel()
	j, q, err := s.selected(ctx, r, r.URL.Query())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	groups, err := s.errorGroups(ctx, j, q)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ErrorGroups{Table: j.Target().FullName(), Groups: groups})
}

func (s *Server) apiAction(w http.ResponseWriter, r *http.Request) {
	res, err := s.act(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res.record)
}
