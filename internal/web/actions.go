package web

import (
	"context"
	"fmt"
	"net/http"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// The actions' answers: the fields of jobsctl retry, ignore, delete and refresh -o json.
type (
	retried struct {
		Table   string `json:"table"`
		Retried int64  `json:"retried"`
	}
	ignored struct {
		Table  string `json:"table"`
		Key    any    `json:"key"`
		Status string `json:"status"`
	}
	deleted struct {
		Table   string `json:"table"`
		Deleted int64  `json:"deleted"`
	}
	refreshed struct {
		Table    string `json:"table"`
		Added    int64  `json:"added"`
		Removed  int64  `json:"removed"`
		Orphaned int64  `json:"orphaned"`
		RePended int64  `json:"re_pended"`
	}
)

// actionResult is what an action did: the record the API answers, the sentence a page shows.
type actionResult struct {
	table    string
	record   any
	sentence string
	job      string // the job page to go back to, when the action was on one job
}

// act runs POST /…/tables/{table}/{action}: retry, ignore, delete or refresh. The request
// passed postGuard (actions allowed, same origin, CSRF token) and its form is parsed.
func (s *Server) act(r *http.Request) (*actionResult, error) {
	ctx, cancel := s.requestContext(r)
	defer cancel()
	action := r.PathValue("action")
	switch action {
	case "retry", "ignore", "delete", "refresh":
	default:
		return nil, &httpError{http.StatusNotFound, fmt.Sprintf("no action %q: the actions are retry, ignore, delete and refresh", action)}
	}
	j, q, err := s.selected(ctx, r, r.PostForm)
	if err != nil {
		return nil, err
	}
	t := j.Target()
	name := t.FullName()
	res := &actionResult{table: name}
	switch action {
	case "retry":
		// Error jobs only, whatever else the selection says: as jobsctl retry.
		n, err := j.RetryErrors(ctx, q.filter)
		if err != nil {
			return nil, err
		}
		res.record = retried{name, n}
		res.sentence = fmt.Sprintf("%d error %s back to pending, due now", n, plural(n, "job", "jobs"))
		if len(q.keys) == len(t.KeyColumns) {
			if key, err := wholeKey(t, r.PostForm); err == nil {
				res.job = tableURL(name, "job", keyValues(t, key))
			}
		}
	case "ignore":
		key, err := wholeKey(t, r.PostForm)
		if err != nil {
			return nil, err
		}
		if err := j.Ignore(ctx, key); err != nil {
			return nil, err
		}
		keyJSON, _ := t.KeyJSON(key)
		res.record = ignored{name, rawJSON(keyJSON), string(jobsdb.StatusIgnore)}
		res.sentence = fmt.Sprintf("job %s is now ignored", keyText(t, key))
		res.job = tableURL(name, "job", keyValues(t, key))
	case "delete":
		if r.PostForm.Get("confirm") != "yes" {
			return nil, badRequest("delete needs confirm=yes: the console's delete button asks first")
		}
		if q.empty() {
			return nil, badRequest("delete needs a selection (status, priority, due, error_message or key.COLUMN): the console never deletes every job of a table; jobsctl delete --yes does")
		}
		n, err := j.Delete(ctx, q.filter)
		if err != nil {
			return nil, err
		}
		res.record = deleted{name, n}
		res.sentence = fmt.Sprintf("deleted %d %s", n, plural(n, "job", "jobs"))
	case "refresh":
		if !q.empty() {
			return nil, badRequest("refresh takes no selection: it refreshes the whole table (jobsctl refresh --key restricts it)")
		}
		out, err := j.Refresh(ctx, s.opts.Refresh)
		if err != nil {
			return nil, err
		}
		res.record = refreshed{name, out.Added, out.Removed, out.Orphaned, out.RePended}
		res.sentence = fmt.Sprintf("added %d, removed %d, orphaned %d, re-pended %d", out.Added, out.Removed, out.Orphaned, out.RePended)
	}
	s.log.Info("web console action", "action", action, "table", name, "selection", q.values().Encode(), "result", res.sentence, "remote", r.RemoteAddr)
	// The overview shows the change at once.
	s.sample.readOne(context.WithoutCancel(ctx), name)
	return res, nil
}

type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
