package jobsdb

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Cursor is a position in the order List returns jobs in: just after the job with this
// priority, scheduled_time and key.
type Cursor struct {
	Priority      int
	ScheduledTime time.Time
	Key           Key
}

// CursorOf is the position just after job.
func CursorOf(job Job) Cursor {
	return Cursor{Priority: job.Priority, ScheduledTime: job.ScheduledTime, Key: job.Key}
}

// Page returns at most n jobs (n ≥ 1) matching f, in List's order (priority, then
// scheduled_time, then key), after the position after when it is not nil; more reports
// whether jobs follow the last one (whose CursorOf continues). f.Limit is ignored.
//
// It is keyset pagination on the (status, priority, scheduled_time) index, whose entries
// end with the primary key (the key columns): each status is one range of the index read in
// order from the position and stopped after n+1 rows, so the millionth page costs what the
// first does and no OFFSET is ever scanned. Several statuses (every one when f.Statuses is
// empty) are read that way each, in one UNION ALL statement whose at most 5·(n+1) rows the
// server merges in the same order (its collation decides ties between keys, as in List).
func (j *Jobs) Page(ctx context.Context, f Filter, after *Cursor, n int) (jobs []Job, more bool, err error) {
	if n < 1 {
		return nil, false, fmt.Errorf("jobsdb: page %s: want at least 1 job per page, got %d", j.t.FullName(), n)
	}
	statuses := f.Statuses
	if len(statuses) == 0 {
		statuses = Statuses
	}
	var pos []any
	if after != nil {
		k, err := j.t.CheckKey(after.Key)
		if err != nil {
			return nil, false, fmt.Errorf("jobsdb: page %s: cursor: %w", j.t.FullName(), err)
		}
		pos = lexicalArgs(append([]any{after.Priority, after.ScheduledTime}, k...))
	}
	// From a position, the status index is read from there on: MariaDB's optimizer otherwise
	// reads it from the start of the status (a ref on its first column) and filters its way to
	// the position, a scan of every job before it. A filter on key columns leaves the choice to
	// the optimizer (the primary key then finds the few matching jobs faster).
	head := j.stmt.selectJobs
	if after != nil && !hasEqual(f.Restrictions) {
		head = j.stmt.seekJobs
	}
	jobs, more, err = j.page(ctx, f, statuses, pos, head, n)
	if isNoSuchIndex(err) && head != j.stmt.selectJobs {
		// A jobs table without DataJoint's index, renamed or dropped: read it unhinted.
		jobs, more, err = j.page(ctx, f, statuses, pos, j.stmt.selectJobs, n)
	}
	return jobs, more, err
}

func hasEqual(rs []Restriction) bool {
	for _, r := range rs {
		if len(r.Equal) > 0 {
			return true
		}
	}
	return false
}

// page runs Page's statement with the SELECT head.
func (j *Jobs) page(ctx context.Context, f Filter, statuses []Status, pos []any, head jobsSelect, n int) (jobs []Job, more bool, err error) {
	var parts []string
	var args []any
	var djParts []string
	for _, s := range dedupStatuses(statuses) {
		one := f
		one.Statuses = []Status{s}
		c, err := j.t.filterConds(one)
		if err != nil {
			return nil, false, fmt.Errorf("jobsdb: page %s: %w", j.t.FullName(), err)
		}
		if pos != nil {
			c.add(j.stmt.pageAfter, pos...)
		}
		tail := c.where() + j.stmt.orderJobs + " LIMIT ?"
		parts = append(parts, "("+head.jetjobs+tail+")")
		djParts = append(djParts, "("+head.dataJoint+tail+")")
		args = append(append(args, c.args...), n+1)
	}
	sel, rest := jobsSelect{jetjobs: parts[0], dataJoint: djParts[0]}, ""
	if len(parts) > 1 {
		// The branches' rows, merged by the server in the same order.
		sel = jobsSelect{
			jetjobs:   "SELECT * FROM (" + strings.Join(parts, " UNION ALL ") + ") AS `page`",
			dataJoint: "SELECT * FROM (" + strings.Join(djParts, " UNION ALL ") + ") AS `page`",
		}
		rest = j.stmt.orderJobs + " LIMIT ?"
		args = append(args, n+1)
	}
	jobs, err = j.queryJobs(ctx, sel, rest, args, false)
	if err != nil {
		return nil, false, fmt.Errorf("jobsdb: page %s: %w", j.t.FullName(), err)
	}
	if len(jobs) > n {
		return jobs[:n], true, nil
	}
	return jobs, false, nil
}

func dedupStatuses(in []Status) []Status {
	var out []Status
	seen := map[Status]bool{}
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// ErrorGroup is the error jobs that share a message.
type ErrorGroup struct {
	Message    string
	Count      int64
	LastFailed *time.Time // the latest completed_time among them
}

// ErrorGroups counts the error jobs matching f per error_message, the largest groups first,
// at most n groups (n ≥ 1). Only error jobs count, whatever f.Statuses says; f.Limit is
// ignored. A missing jobs table is ErrNoJobsTable.
func (j *Jobs) ErrorGroups(ctx context.Context, f Filter, n int) ([]ErrorGroup, error) {
	if n < 1 {
		return nil, fmt.Errorf("jobsdb: error groups %s: want at least 1 group, got %d", j.t.FullName(), n)
	}
	f.Statuses = nil
	c, err := j.t.filterConds(f)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: error groups %s: %w", j.t.FullName(), err)
	}
	ctx, cancel := j.bounded(ctx)
	defer cancel()
	rows, err := j.db.QueryContext(ctx, j.stmt.errorGroups+c.and()+j.stmt.errorGroupsTail, append(c.args, n)...)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: error groups %s: %w", j.t.FullName(), j.noJobsTable(err))
	}
	defer rows.Close()
	var out []ErrorGroup
	for rows.Next() {
		var g ErrorGroup
		var last nullTime
		if err := rows.Scan(&g.Message, &g.Count, &last); err != nil {
			return nil, fmt.Errorf("jobsdb: error groups %s: %w", j.t.FullName(), err)
		}
		g.LastFailed = last.ptr()
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("jobsdb: error groups %s: %w", j.t.FullName(), err)
	}
	return out, nil
}
