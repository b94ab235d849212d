package ctl

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/jobsdb"
)

var refreshColumns = []column{
	{"table", "TABLE", "the target table"},
	{"added", "ADDED", "new pending jobs: keys in the key source, not in the target, without a job row"},
	{"removed", "REMOVED", "stale pending jobs deleted: key left the key source or reached the target"},
	{"orphaned", "ORPHANED", "reservations recovered to pending (lapsed leases; DataJoint reservations older than --orphan-timeout)"},
	{"re_pended", "RE_PENDED", "success jobs whose key is missing from the target again, back to pending"},
}

var (
	ignoreColumns = []column{
		{"table", "", "the target table"},
		{"key", "", "the ignored job's key"},
		{"status", "", "always ignore"},
	}
	retryColumns = []column{
		{"table", "", "the target table"},
		{"retried", "", "error jobs moved back to pending, due now"},
	}
	deleteColumns = []column{
		{"table", "", "the target table"},
		{"deleted", "", "jobs deleted"},
	}
	dropColumns = []column{
		{"table", "", "the target table"},
		{"jobs_table", "", "the dropped jobs table, schema.~~name"},
		{"dropped", "", "always true"},
	}
)

// action prints the outcome of a command that changes jobs: a sentence for people, the one
// record for machines.
func (s *session) action(r *records, sentence string) error {
	switch s.g.output {
	case formatJSON:
		return writeJSON(s.env.Stdout, r.object(0))
	case formatCSV:
		return writeCSV(s.env.Stdout, r, s.g.noHeaders)
	}
	s.printf("%s\n", sentence)
	return nil
}

func (s *session) printf(format string, args ...any) {
	fmt.Fprintf(s.env.Stdout, format, args...)
}

// confirm asks a person on a terminal to confirm a destructive command, unless --yes was
// given. Without a terminal and without --yes it refuses with a usage error (exit 2);
// an answer other than y or yes is an error (exit 1). Either way nothing is changed.
func (s *session) confirm(ctx context.Context, yes bool, what, question string) error {
	if yes {
		return nil
	}
	if !s.env.Terminal(s.env.Stdin) {
		return cli.Usagef("%s needs confirmation and standard input is not a terminal: pass --yes to confirm from a script; nothing was changed", what)
	}
	fmt.Fprintf(s.env.Stderr, "%s [y/N] ", question)
	answer := make(chan string, 1)
	// The reader goroutine ends with the process when the user interrupts instead of answering.
	go func() {
		line, _ := bufio.NewReader(s.env.Stdin).ReadString('\n')
		answer <- line
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(s.env.Stderr)
		return fmt.Errorf("%s: interrupted before confirming; nothing was changed", what)
	case a := <-answer:
		switch strings.ToLower(strings.TrimSpace(a)) {
		case "y", "yes":
			return nil
		}
		return fmt.Errorf("%s: not confirmed; nothing was changed", what)
	}
}

// describeProgress summarizes counts for a confirmation question.
func describeProgress(p jobsdb.Progress) string {
	var parts []string
	for _, c := range []struct {
		n    int64
		name string
	}{{p.Pending, "pending"}, {p.Reserved, "reserved"}, {p.Success, "success"}, {p.Error, "error"}, {p.Ignore, "ignore"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.name))
		}
	}
	if len(parts) == 0 {
		return "no jobs"
	}
	return fmt.Sprintf("%d jobs: %s", p.Total, strings.Join(parts, ", "))
}

func refreshCommand() *command {
	return &command{
		name: "refresh", args: "TABLE", minArgs: 1, maxArgs: 1, argKind: argTables,
		summary: "add pending jobs for new keys, remove stale ones, recover orphans",
		help: "Brings TABLE's jobs table in step with its key source, as DataJoint's Table.jobs.refresh(): " +
			"adds a pending job for every key in the key source that is neither in the target nor has a job; " +
			"removes pending jobs older than --stale-timeout whose key left the key source or reached the target; " +
			"returns lapsed reservations to pending. Creates the jobs table (DataJoint's DDL plus jetjobs' columns) " +
			"or adopts an existing one by adding jetjobs' columns. --restrict and --key limit which keys are added; " +
			"a restricted refresh never removes jobs outside its restriction.",
		example: []string{
			"jobsctl refresh lab.__analysis",
			"jobsctl refresh lab.__analysis --restrict 'subject_id < 10' --priority 1",
			"jobsctl refresh lab.__analysis --key subject_id=3 --delay 600",
		},
		fields: []outputDoc{{"-o json: one object with DataJoint's refresh() keys and the table; -o csv and text: one row:", refreshColumns}},
		setup: func(fs *pflag.FlagSet) runFunc {
			sel := newSelection(fs)
			sel.addRestrict()
			sel.addKey(false)
			var priority int
			var delay, stale, orphan time.Duration
			fs.IntVar(&priority, "priority", config.DefaultPriority, "priority of the added jobs, `N` in -128..127; lower is more urgent")
			describeDefault(fs, "priority", fmt.Sprintf("jobs.default_priority of the config, %d", config.DefaultPriority))
			secondsVar(fs, &delay, "delay", "schedule the added jobs `SECONDS` from now, ≥ 0 (fractions allowed)")
			describeDefault(fs, "delay", "0")
			secondsVar(fs, &stale, "stale-timeout", "check pending jobs created more than `SECONDS` ago for staleness (0: never remove)")
			describeDefault(fs, "stale-timeout", fmt.Sprintf("jobs.stale_timeout of the config, %v", config.DefaultStaleTimeout.Seconds()))
			secondsVar(fs, &orphan, "orphan-timeout", "return reservations made by DataJoint (no lease) older than `SECONDS` to pending (0: never)")
			describeDefault(fs, "orphan-timeout", fmt.Sprintf("jobs.orphan_timeout of the config, %v", config.DefaultOrphanTimeout.Seconds()))
			return func(ctx context.Context, s *session, args []string) error {
				cfg, err := s.config()
				if err != nil {
					return err
				}
				opts := jobsdb.RefreshOptions{
					Delay:         delay,
					Priority:      cfg.Jobs.DefaultPriority,
					StaleTimeout:  cfg.Jobs.StaleTimeout.Duration(),
					OrphanTimeout: cfg.Jobs.OrphanTimeout.Duration(),
				}
				if fs.Changed("priority") {
					if err := checkPriority(priority); err != nil {
						return err
					}
					opts.Priority = priority
				}
				if fs.Changed("stale-timeout") {
					opts.StaleTimeout = stale
				}
				if fs.Changed("orphan-timeout") {
					opts.OrphanTimeout = orphan
				}
				j, err := s.jobs(ctx, args[0])
				if err != nil {
					return err
				}
				t := j.Target()
				if opts.Restrictions, err = sel.restrictions(t); err != nil {
					return err
				}
				octx, cancel := s.opContext(ctx)
				defer cancel()
				res, err := j.Refresh(octx, opts)
				if err != nil {
					return fmt.Errorf("refresh %s: %w", t.FullName(), restrictError(err, sel.restrict))
				}
				r := &records{cols: refreshColumns}
				r.add(t.FullName(), res.Added, res.Removed, res.Orphaned, res.RePended)
				return s.render(r, func() any { return r.object(0) })
			}
		},
	}
}

func ignoreCommand() *command {
	return &command{
		name: "ignore", args: "TABLE", minArgs: 1, maxArgs: 1, argKind: argTables,
		summary: "mark a job as ignore so that no worker runs it",
		help: "Sets the job named by --key (its whole key) to status ignore, inserting an ignore row when the key has no job yet " +
			"(DataJoint's Table.jobs.ignore()). Refresh never re-adds an ignored key; 'jobsctl delete TABLE --status ignore --key ...' undoes it.",
		example: []string{"jobsctl ignore lab.__analysis --key subject_id=3,session_id=1"},
		fields:  []outputDoc{{"-o json: one object; -o csv: one row:", ignoreColumns}},
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
				kc, err := keyCellOf(t, key)
				if err != nil {
					return err
				}
				octx, cancel := s.opContext(ctx)
				defer cancel()
				if err := j.Ignore(octx, key); err != nil {
					return fmt.Errorf("ignore %s in %s: %w", kc.text, t.FullName(), err)
				}
				r := &records{cols: ignoreColumns}
				r.add(t.FullName(), kc, string(jobsdb.StatusIgnore))
				return s.action(r, fmt.Sprintf("%s: job %s is now ignored", t.FullName(), kc.text))
			}
		},
	}
}

func retryCommand() *command {
	return &command{
		name: "retry", args: "TABLE", minArgs: 1, maxArgs: 1, argKind: argTables,
		summary: "move failed jobs back to pending, due now",
		help: "Moves TABLE's error jobs back to pending, due at once, keeping their priority: what DataJoint users do by deleting " +
			"error rows and refreshing, in one step, and also for keys the key source no longer yields. The job starts afresh " +
			"(its error message and stack are cleared; 'jobsctl errors TABLE -o json' first if you want to keep them). " +
			"Without --restrict or --key, every error job.",
		example: []string{"jobsctl retry lab.__analysis", "jobsctl retry lab.__analysis --key subject_id=3"},
		fields:  []outputDoc{{"-o json: one object; -o csv: one row:", retryColumns}},
		setup: func(fs *pflag.FlagSet) runFunc {
			sel := newSelection(fs)
			sel.addRestrict()
			sel.addKey(false)
			return func(ctx context.Context, s *session, args []string) error {
				j, f, err := s.selected(ctx, args[0], sel)
				if err != nil {
					return err
				}
				t := j.Target()
				octx, cancel := s.opContext(ctx)
				defer cancel()
				var n int64
				err = s.adopting(octx, j, func() (err error) {
					n, err = j.RetryErrors(octx, f)
					return err
				})
				if err != nil {
					return noJobsTable(t.FullName(), restrictError(err, sel.restrict))
				}
				return s.counted(retryColumns, t, n, fmt.Sprintf("%d error %s back to pending, due now", n, plural(n, "job", "jobs")))
			}
		},
	}
}

func deleteCommand() *command {
	return &command{
		name: "delete", args: "TABLE", minArgs: 1, maxArgs: 1, argKind: argTables,
		summary: "delete jobs by status, restriction or key",
		help: "Deletes the jobs of TABLE that the selection matches (DataJoint's (Table.jobs & restriction).delete()). " +
			"Deleted pending or error jobs come back as pending at the next refresh if their key is still to be computed; " +
			"a worker that still holds a deleted job cannot record it (its lease is gone). " +
			"With no --status, --restrict or --key at all, every job goes, error records included: that asks for confirmation " +
			"on a terminal and needs --yes otherwise.",
		example: []string{
			"jobsctl delete lab.__analysis --status error",
			"jobsctl delete lab.__analysis --status ignore --key subject_id=3,session_id=1",
			"jobsctl delete lab.__analysis --yes",
		},
		fields: []outputDoc{{"-o json: one object; -o csv: one row:", deleteColumns}},
		setup: func(fs *pflag.FlagSet) runFunc {
			sel := newSelection(fs)
			sel.addStatus("only jobs with this")
			sel.addRestrict()
			sel.addKey(false)
			var yes bool
			fs.BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation when deleting every job (needed without a terminal)")
			return func(ctx context.Context, s *session, args []string) error {
				j, f, err := s.selected(ctx, args[0], sel)
				if err != nil {
					return err
				}
				t := j.Target()
				if sel.empty() {
					p, _ := j.Progress(ctx)
					what := fmt.Sprintf("delete %s without --status, --restrict or --key (every job, error records included)", t.FullName())
					q := fmt.Sprintf("Delete every job of %s (%s), error records included?", t.FullName(), describeProgress(p))
					if err := s.confirm(ctx, yes, what, q); err != nil {
						return err
					}
				}
				octx, cancel := s.opContext(ctx)
				defer cancel()
				n, err := j.Delete(octx, f)
				if err != nil {
					return noJobsTable(t.FullName(), restrictError(err, sel.restrict))
				}
				return s.counted(deleteColumns, t, n, fmt.Sprintf("deleted %d %s", n, plural(n, "job", "jobs")))
			}
		},
	}
}

// counted reports how many jobs of t an operation changed: one record for machines, the
// message for people.
func (s *session) counted(cols []column, t *jobsdb.Target, n int64, message string) error {
	r := &records{cols: cols}
	r.add(t.FullName(), n)
	return s.action(r, t.FullName()+": "+message)
}

func dropCommand() *command {
	return &command{
		name: "drop", args: "TABLE", minArgs: 1, maxArgs: 1, argKind: argTables,
		summary: "drop the jobs table of a target (asks for confirmation)",
		help: "Drops TABLE's jobs table (schema.~~name) with every job in it, error records included (DataJoint's Table.jobs.drop()). " +
			"The target table is not touched; the next refresh creates an empty jobs table. " +
			"On a terminal it asks for confirmation; scripts pass --yes. Without a terminal and without --yes it refuses (exit 2).",
		example: []string{"jobsctl drop lab.__analysis", "jobsctl drop lab.__analysis --yes"},
		fields:  []outputDoc{{"-o json: one object; -o csv: one row:", dropColumns}},
		setup: func(fs *pflag.FlagSet) runFunc {
			var yes bool
			fs.BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation (needed without a terminal)")
			return func(ctx context.Context, s *session, args []string) error {
				j, err := s.jobs(ctx, args[0])
				if err != nil {
					return err
				}
				t := j.Target()
				jobsTable := t.Schema + "." + t.JobsName
				p, _ := j.Progress(ctx)
				what := "drop " + jobsTable
				q := fmt.Sprintf("Drop %s, the jobs table of %s (%s)? This cannot be undone.", jobsTable, t.FullName(), describeProgress(p))
				if err := s.confirm(ctx, yes, what, q); err != nil {
					return err
				}
				octx, cancel := s.opContext(ctx)
				defer cancel()
				if err := j.Drop(octx); err != nil {
					return fmt.Errorf("drop %s: %w", jobsTable, err)
				}
				r := &records{cols: dropColumns}
				r.add(t.FullName(), jobsTable, true)
				return s.action(r, fmt.Sprintf("%s: dropped %s (%s)", t.FullName(), jobsTable, describeProgress(p)))
			}
		},
	}
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
