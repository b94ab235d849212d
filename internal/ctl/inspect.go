package ctl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// progressColumns are the fields of progress: DataJoint's Job.progress() keys.
var progressColumns = []column{
	{"table", "TABLE", "the target table, schema.table"},
	{"pending", "PENDING", "jobs waiting for a worker (due or scheduled later)"},
	{"reserved", "RESERVED", "jobs a worker holds"},
	{"success", "SUCCESS", "completed jobs kept (jobs.keep_completed); otherwise completed jobs are deleted"},
	{"error", "ERROR", "failed jobs, with their message and stack"},
	{"ignore", "IGNORE", "jobs marked never to run"},
	{"total", "TOTAL", "all rows of the jobs table"},
}

// jobColumns are the fields of list, errors and show: the jobs table's columns.
var jobColumns = []column{
	{"key", "KEY", "the job's key: an object of the key columns (compact JSON in CSV)"},
	{"status", "STATUS", "pending, reserved, success, error or ignore"},
	{"priority", "PRI", "lower is more urgent (workers take priority, then scheduled_time, then key)"},
	{"attempts", "ATTEMPTS", "reservations made so far"},
	{"created_time", "", "when the job was added"},
	{"scheduled_time", "SCHEDULED", "when the job is (or was) due"},
	{"reserved_time", "RESERVED", "when the last reservation was made, or null"},
	{"completed_time", "COMPLETED", "when it succeeded or failed, or null"},
	{"duration", "DURATION", "seconds the last run took, or null"},
	{"user", "", "who reserved it (DataJoint's user)"},
	{"host", "HOST", "host of the worker that reserved it"},
	{"pid", "PID", "process id of that worker"},
	{"connection_id", "", "MySQL connection id of that worker"},
	{"version", "", "code version of that worker (jobs.version_method)"},
	{"lease_expires", "", "when the current reservation lapses unless renewed, or null"},
	{"dispatched_time", "", "last publish to JetStream, or null"},
	{"error_message", "ERROR", "the failure's message (text tables show its first 100 characters)"},
}

// errorHeads are the text columns of errors.
var errorHeads = map[string]string{
	"key": "KEY", "attempts": "ATTEMPTS", "completed_time": "FAILED", "duration": "DURATION",
	"host": "HOST", "pid": "PID", "error_message": "ERROR",
}

var stackColumn = column{"error_stack", "", "the full stack, decoded from DataJoint's blob encoding"}

// withHeads returns cols with the text headers given by heads (others are left out of text).
func withHeads(cols []column, heads map[string]string) []column {
	out := make([]column, len(cols))
	for i, c := range cols {
		c.head = heads[c.name]
		out[i] = c
	}
	return out
}

func jobValues(t *jobsdb.Target, j jobsdb.Job) ([]any, error) {
	key, err := keyCellOf(t, j.Key)
	if err != nil {
		return nil, err
	}
	return []any{
		key, string(j.Status), j.Priority, j.Attempts, j.CreatedTime, j.ScheduledTime,
		j.ReservedTime, j.CompletedTime, secondsOf(j.Duration), j.User, j.Host, idCell(j.PID),
		idCell(j.ConnectionID), j.Version, j.LeaseExpires, j.DispatchedTime, message(j.ErrorMessage),
	}, nil
}

// noJobsTable explains ErrNoJobsTable, and ErrNotAdopted.
func noJobsTable(table string, err error) error {
	switch {
	case errors.Is(err, jobsdb.ErrNoJobsTable):
		return fmt.Errorf("%s: %w: it is created by the first refresh ('jobsctl refresh %s', or the scheduler)", table, err, table)
	case errors.Is(err, jobsdb.ErrNotAdopted):
		return fmt.Errorf("%s: %w (run 'jobsctl refresh %s' as a user allowed to ALTER it)", table, err, table)
	}
	return fmt.Errorf("%s: %w", table, err)
}

func progressCommand() *command {
	return &command{
		name: "progress", args: "[TABLE...]", maxArgs: -1, argKind: argTables,
		summary: "count jobs per status, per table",
		help: "Counts the rows of each table's jobs table per status, as DataJoint's Table.jobs.progress(). " +
			"Without TABLE arguments, every configured table. Keys with no job row yet (not refreshed) are not counted.",
		example: []string{"jobsctl progress", "jobsctl progress lab.__analysis -o json"},
		fields: []outputDoc{
			{"-o json: an object keyed by table (schema.table); each value has pending, reserved, success, error, ignore, total.\n-o csv and text: one row per table:", progressColumns},
		},
		setup: func(fs *pflag.FlagSet) runFunc {
			return func(ctx context.Context, s *session, args []string) error {
				names, err := s.tables(args)
				if err != nil {
					return err
				}
				all, err := s.openAll(ctx, names)
				if err != nil {
					return err
				}
				r := &records{cols: progressColumns}
				for i, j := range all {
					octx, cancel := s.opContext(ctx)
					p, err := j.Progress(octx)
					cancel()
					if err != nil {
						return fmt.Errorf("progress of %s: %w", names[i], err)
					}
					r.add(names[i], p.Pending, p.Reserved, p.Success, p.Error, p.Ignore, p.Total)
				}
				return s.render(r, func() any { return byTable(r) })
			}
		},
	}
}

// byTable returns records whose first column is the table as {"table": {other fields}}.
func byTable(r *records) object {
	out := make(object, len(r.rows))
	for i := range r.rows {
		o := r.object(i)
		out[i] = member{fmt.Sprint(r.rows[i][0]), o[1:]}
	}
	return out
}

// openAll opens the jobs of several tables, failing on the first unknown one before any work.
func (s *session) openAll(ctx context.Context, names []string) ([]*jobsdb.Jobs, error) {
	out := make([]*jobsdb.Jobs, len(names))
	for i, n := range names {
		j, err := s.jobs(ctx, n)
		if err != nil {
			return nil, err
		}
		out[i] = j
	}
	return out, nil
}

func listCommand() *command {
	return &command{
		name: "list", args: "TABLE", minArgs: 1, maxArgs: 1, argKind: argTables,
		summary: "list jobs with their key, status, priority, times, attempts, holder and error",
		help: "Lists the jobs of TABLE ordered as workers take them: priority (lower first), then scheduled_time, then key. " +
			"Selections combine with AND. The text table shows the main fields; -o json and -o csv carry all of them.",
		example: []string{
			"jobsctl list lab.__analysis --status pending --limit 20",
			"jobsctl list lab.__analysis --key subject_id=3 -o json",
			"jobsctl list lab.__analysis --restrict 'session_id > 10' --status error,reserved",
		},
		fields: []outputDoc{{"-o json: an array of jobs; -o csv: one row per job. Fields:", jobColumns}},
		setup: func(fs *pflag.FlagSet) runFunc {
			var due bool
			sel := newSelection(fs)
			sel.addStatus("only jobs with this")
			sel.addRestrict()
			sel.addKey(false)
			sel.addPriority("only jobs with priority <= `N` (as worker --priority)")
			fs.BoolVar(&due, "due", false, "only jobs that are due (scheduled_time <= now)")
			sel.addLimit()
			return func(ctx context.Context, s *session, args []string) error {
				j, f, err := s.selected(ctx, args[0], sel)
				if err != nil {
					return err
				}
				f.DueOnly = due
				return s.listJobs(ctx, j, f, sel.restrict, jobColumns)
			}
		},
	}
}

// selected opens table's jobs and turns the command's selection flags into its filter.
func (s *session) selected(ctx context.Context, table string, sel *selection) (*jobsdb.Jobs, jobsdb.Filter, error) {
	j, err := s.jobs(ctx, table)
	if err != nil {
		return nil, jobsdb.Filter{}, err
	}
	f, err := sel.filter(j.Target())
	return j, f, err
}

// listJobs lists the jobs f selects with the given columns.
func (s *session) listJobs(ctx context.Context, j *jobsdb.Jobs, f jobsdb.Filter, restrict []string, cols []column) error {
	t := j.Target()
	octx, cancel := s.opContext(ctx)
	defer cancel()
	jobs, err := j.List(octx, f)
	if err != nil {
		return noJobsTable(t.FullName(), restrictError(err, restrict))
	}
	r := &records{cols: cols}
	for _, job := range jobs {
		v, err := jobValues(t, job)
		if err != nil {
			return err
		}
		r.add(v...)
	}
	return s.render(r, func() any { return r.objects() })
}

func errorsCommand() *command {
	return &command{
		name: "errors", args: "TABLE", minArgs: 1, maxArgs: 1, argKind: argTables,
		summary: "list failed jobs with their messages",
		help: "Lists the jobs of TABLE whose status is error, with their messages (DataJoint's Table.jobs.errors). " +
			"'jobsctl show TABLE --key ...' prints one with its full stack; 'jobsctl retry' runs them again.",
		example: []string{"jobsctl errors lab.__analysis", "jobsctl errors lab.__analysis -o json | jq -r '.[].error_message'"},
		fields:  []outputDoc{{"the fields of list (status is always error):", nil}},
		setup: func(fs *pflag.FlagSet) runFunc {
			sel := newSelection(fs)
			sel.addRestrict()
			sel.addKey(false)
			sel.addLimit()
			return func(ctx context.Context, s *session, args []string) error {
				j, f, err := s.selected(ctx, args[0], sel)
				if err != nil {
					return err
				}
				f.Statuses = []jobsdb.Status{jobsdb.StatusError}
				return s.listJobs(ctx, j, f, sel.restrict, withHeads(jobColumns, errorHeads))
			}
		},
	}
}

func showCommand() *command {
	return &command{
		name: "show", args: "TABLE", minArgs: 1, maxArgs: 1, argKind: argTables,
		summary: "show one job with its full error stack",
		help:    "Prints every field of the job named by --key (its whole key), with the error stack decoded from DataJoint's blob encoding.",
		example: []string{"jobsctl show lab.__analysis --key subject_id=3,session_id=1"},
		fields:  []outputDoc{{"-o json: one object; -o csv: one row. The fields of list, then:", []column{stackColumn}}},
		setup: func(fs *pflag.FlagSet) runFunc {
			sel := newSelection(fs)
			sel.addKey(true)
			return func(ctx context.Context, s *session, args []string) error {
				j, err := s.jobs(ctx, args[0])
				if err != nil {
					return err
				}
				t := j.Target()
				key, err := wholeKey(t, sel.keys)
				if err != nil {
					return err
				}
				octx, cancel := s.opContext(ctx)
				defer cancel()
				job, err := j.Get(octx, key)
				if err != nil {
					kc, _ := keyCellOf(t, key)
					if errors.Is(err, jobsdb.ErrNotFound) {
						return fmt.Errorf("%s: no job with key %s (see the jobs there with 'jobsctl list %s')", t.FullName(), kc.text, t.FullName())
					}
					return noJobsTable(t.FullName(), err)
				}
				v, err := jobValues(t, job)
				if err != nil {
					return err
				}
				r := &records{cols: append(append([]column{}, jobColumns...), stackColumn)}
				r.add(append(v, job.ErrorStack)...)
				switch s.g.output {
				case formatJSON:
					return writeJSON(s.env.Stdout, r.object(0))
				case formatCSV:
					return writeCSV(s.env.Stdout, r, s.g.noHeaders)
				}
				return s.showText(t, r)
			}
		},
	}
}

// showText prints one job as "field: value" lines, the whole message, then the stack.
func (s *session) showText(t *jobsdb.Target, r *records) error {
	w := s.env.Stdout
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	fmt.Fprintf(tw, "table:\t%s\n", t.FullName())
	row := r.rows[0]
	for i, c := range r.cols {
		switch c.name {
		case "error_message", "error_stack":
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\n", c.name, textValue(row[i], s.env.Location))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	msg := string(row[len(row)-2].(message))
	stack := row[len(row)-1].(string)
	if msg == "" {
		fmt.Fprintln(w, "error_message: -")
	} else {
		fmt.Fprintf(w, "error_message:\n%s\n", indent(safeText(msg)))
	}
	if stack == "" {
		fmt.Fprintln(w, "error_stack: -")
	} else {
		fmt.Fprintf(w, "error_stack:\n%s\n", indent(safeText(stack)))
	}
	return nil
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}
