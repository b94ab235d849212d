package chaos

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Result is the outcome of a chaos run.
type Result struct {
	Seed    uint64
	Keys    int
	Faults  int
	Lost    int // keys neither in the target nor an induced error
	Double  int // keys with two calls overlapping in time
	Stuck   int // jobs pending or reserved after the drain deadline
	Errors  int // error rows of keys whose handler never fails
	Seconds float64
	// Violations describes every violation counted above, one per line (with the faults
	// around its time).
	Violations []string
	// Notes are findings outside the counts: programs that exited by themselves or with an
	// error at SIGTERM, unreadable call-log lines.
	Notes []string
	// FaultLog lists every fault applied, with its time since the start of the run.
	FaultLog []string
	// Dir is the run's kept directory, when Options.Keep kept it.
	Dir string
}

// OK reports whether the run found no violation.
func (r *Result) OK() bool { return r.Lost == 0 && r.Double == 0 && r.Stuck == 0 && r.Errors == 0 }

// Summary is the one-line summary of the run.
func (r *Result) Summary() string {
	return fmt.Sprintf("chaos: keys=%d faults=%d lost=%d double=%d stuck=%d errors=%d seconds=%.0f",
		r.Keys, r.Faults, r.Lost, r.Double, r.Stuck, r.Errors, r.Seconds)
}

// Report is the fault log, the notes and the violations, then the summary line last.
func (r *Result) Report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos: seed %d, %d faults:\n", r.Seed, len(r.FaultLog))
	for _, f := range r.FaultLog {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "violation: %s\n", v)
	}
	if r.Dir != "" {
		fmt.Fprintf(&b, "chaos: the run's directory is kept: %s\n", r.Dir)
	}
	b.WriteString(r.Summary())
	b.WriteByte('\n')
	return b.String()
}

// jobRow is what the checker reads of a job.
type jobRow struct {
	status, message                               string
	attempts                                      int
	reserved, completed, leaseExpires, dispatched string
	scheduled, host                               string
	pid                                           int
	// last is the latest time the row shows (reserved or completed), for finding the faults
	// around what happened to it.
	last time.Time
}

func (j jobRow) String() string {
	s := fmt.Sprintf("%s, attempts %d, scheduled %s", j.status, j.attempts, j.scheduled)
	if j.reserved != "" {
		s += ", reserved " + j.reserved + fmt.Sprintf(" by pid %d", j.pid)
	}
	if j.leaseExpires != "" {
		s += ", lease expires " + j.leaseExpires
	}
	if j.dispatched != "" {
		s += ", dispatched " + j.dispatched
	}
	if j.completed != "" {
		s += ", completed " + j.completed
	}
	if j.message != "" {
		s += fmt.Sprintf(", error %q", j.message)
	}
	return s
}

// snapshot is the final state of the tables, read when the drain ended.
type snapshot struct {
	at       time.Time
	computed map[string]bool
	jobs     map[string]jobRow
}

const mysqlTime = "2006-01-02 15:04:05.000"

func (h *harness) snapshot(ctx context.Context) (snapshot, error) {
	s := snapshot{at: time.Now(), computed: map[string]bool{}, jobs: map[string]jobRow{}}
	ctx, cancel := context.WithTimeout(ctx, 3*queryTimeout)
	defer cancel()
	rows, err := h.mysql.admin.QueryContext(ctx, "SELECT CONCAT(subject_id, ':', session_id) FROM "+targetTable)
	if err != nil {
		return s, err
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return s, err
		}
		s.computed[k] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return s, err
	}
	ts := func(col string) string { return "COALESCE(DATE_FORMAT(" + col + ", '%Y-%m-%d %H:%i:%s.%f'), '')" }
	rows, err = h.mysql.admin.QueryContext(ctx, "SELECT CONCAT(subject_id, ':', session_id), status, error_message, attempts, "+
		ts("reserved_time")+", "+ts("completed_time")+", "+ts("lease_expires")+", "+ts("dispatched_time")+", "+ts("scheduled_time")+
		", host, pid FROM `"+jobsTable+"`")
	if err != nil {
		return s, err
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var j jobRow
		if err := rows.Scan(&k, &j.status, &j.message, &j.attempts, &j.reserved, &j.completed, &j.leaseExpires, &j.dispatched, &j.scheduled, &j.host, &j.pid); err != nil {
			return s, err
		}
		for _, t := range []*string{&j.reserved, &j.completed, &j.leaseExpires, &j.dispatched, &j.scheduled} {
			if len(*t) > len(mysqlTime) {
				*t = (*t)[:len(mysqlTime)] // microseconds to milliseconds
			}
		}
		for _, t := range []string{j.reserved, j.completed} {
			if at, err := time.ParseInLocation(mysqlTime, t, time.Local); err == nil && at.After(j.last) {
				j.last = at
			}
		}
		for _, t := range []*string{&j.reserved, &j.completed, &j.leaseExpires, &j.dispatched, &j.scheduled} {
			*t = h.relative(*t)
		}
		s.jobs[k] = j
	}
	return s, rows.Err()
}

// relative rewrites a MySQL time (the server's time zone is the machine's) as seconds since the
// start of the run, the fault log's clock.
func (h *harness) relative(t string) string {
	if t == "" {
		return ""
	}
	at, err := time.ParseInLocation(mysqlTime, t, time.Local)
	if err != nil {
		return t
	}
	return fmt.Sprintf("%.3fs", h.log.at(at).Seconds())
}

// check compares the final state and the calls with what must hold.
func (h *harness) check(snap snapshot) *Result {
	calls, bad := h.watcher.snapshot()
	h.mu.Lock()
	res := &Result{Seed: h.opts.Seed, Keys: h.opts.Keys, Faults: len(h.faults), Notes: slices.Clone(h.notes)}
	for _, f := range h.faults {
		res.FaultLog = append(res.FaultLog, f.String())
	}
	h.mu.Unlock()
	for _, line := range bad {
		res.Notes = append(res.Notes, "unreadable call-log line: "+line)
	}
	byKey := map[string][]*call{}
	for _, c := range calls {
		byKey[c.key] = append(byKey[c.key], c)
	}

	// One line per key, naming every count it adds to: a key whose job failed unexpectedly is
	// both lost (not computed) and an error.
	for i := range h.opts.Keys {
		key := keyName(i)
		job, hasJob := snap.jobs[key]
		var kinds, why []string
		if h.induced[key] && !(hasJob && job.status == "error") {
			res.Lost++
			kinds, why = append(kinds, "lost"), append(why, "an induced error that is not an error row")
		}
		if !h.induced[key] && !snap.computed[key] {
			res.Lost++
			kinds, why = append(kinds, "lost"), append(why, "not in the target")
		}
		if hasJob && (job.status == "pending" || job.status == "reserved") {
			res.Stuck++
			kinds, why = append(kinds, "stuck"), append(why, fmt.Sprintf("still %s %.0fs after the faults were healed", job.status, h.opts.Drain.Seconds()))
		}
		if hasJob && job.status == "error" && !h.induced[key] {
			res.Errors++
			kinds, why = append(kinds, "error"), append(why, "an error row, though its handler never fails")
		}
		if len(kinds) == 0 {
			continue
		}
		jobDesc := "no job row"
		if hasJob {
			jobDesc = "job " + job.String()
		}
		ref := lastCallTime(byKey[key])
		if job.last.After(ref) {
			ref = job.last
		}
		res.Violations = append(res.Violations, fmt.Sprintf("%s: key %s is %s: %s; %s%s",
			strings.Join(kinds, "+"), key, strings.Join(why, ", "), jobDesc, h.describeCalls(byKey[key]), h.faultsNear(ref)))
	}

	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var gaps []rerun
	for _, key := range keys {
		cs := byKey[key]
		slices.SortFunc(cs, func(a, b *call) int { return a.start.Compare(b.start) })
		var overlaps []string
		for i, a := range cs {
			for _, b := range cs[i+1:] {
				if b.start.Before(a.until()) {
					overlaps = append(overlaps, fmt.Sprintf("%s overlaps %s by %v%s", h.describeCall(a), h.describeCall(b),
						a.until().Sub(b.start).Round(time.Millisecond), h.faultsNear(b.start)))
				}
			}
		}
		for i := 1; i < len(cs); i++ {
			gaps = append(gaps, rerun{key: key, prev: cs[i-1], next: cs[i]})
		}
		if len(overlaps) > 0 {
			res.Double++
			res.Violations = append(res.Violations, fmt.Sprintf("double: key %s ran twice at once: %s", key, strings.Join(overlaps, "; ")))
		}
	}
	// How long keys waited to run again: not a violation, but the time a recovery takes.
	slices.SortFunc(gaps, func(a, b rerun) int { return cmp.Compare(b.gap(), a.gap()) })
	if len(gaps) > 0 {
		var slowest []string
		for _, g := range gaps[:min(len(gaps), slowestReruns)] {
			slowest = append(slowest, fmt.Sprintf("key %s waited %v: %s then %s", g.key, g.gap().Round(time.Millisecond), h.describeCall(g.prev), h.describeCall(g.next)))
		}
		res.Notes = append(res.Notes, fmt.Sprintf("%d keys ran more than once; the longest waits between a call and the next:\n    %s",
			len(gaps), strings.Join(slowest, "\n    ")))
	}
	return res
}

// slowestReruns is how many of the longest waits before a re-run the report lists.
const slowestReruns = 5

// rerun is a key's call followed by the next one.
type rerun struct {
	key        string
	prev, next *call
}

func (r rerun) gap() time.Duration { return r.next.start.Sub(r.prev.until()) }

// lastCallTime is the latest end (or last sign of life) of the calls.
func lastCallTime(cs []*call) time.Time {
	var t time.Time
	for _, c := range cs {
		if u := c.until(); u.After(t) {
			t = u
		}
	}
	return t
}

func (h *harness) describeCalls(cs []*call) string {
	if len(cs) == 0 {
		return "no call"
	}
	var parts []string
	for _, c := range cs {
		parts = append(parts, h.describeCall(c))
	}
	return fmt.Sprintf("%d calls: %s", len(cs), strings.Join(parts, ", "))
}

// describeCall gives a call's interval, lease and processes, and how its end is known.
func (h *harness) describeCall(c *call) string {
	end := "ended " + c.outcome
	if c.end.IsZero() {
		end = "no end line: last seen alive"
		if !c.deadSeen.IsZero() {
			end += fmt.Sprintf(", seen dead at %.3fs", h.log.at(c.deadSeen).Seconds())
		}
	}
	return fmt.Sprintf("[call %.3fs–%.3fs lease %s handler %d worker %d, %s]",
		h.log.at(c.start).Seconds(), h.log.at(c.until()).Seconds(), c.token, c.hpid, c.wpid, end)
}

// faultsNear lists the faults that were holding at t or ended up to faultWindow (about a
// lease) before it.
func (h *harness) faultsNear(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	const faultWindow = (leaseSeconds + 1) * time.Second
	at := h.log.at(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	var near []string
	for _, f := range h.faults {
		if f.at <= at+time.Second && f.healed >= at-faultWindow {
			near = append(near, strings.TrimSpace(f.String()))
		}
	}
	if len(near) == 0 {
		return fmt.Sprintf("; no fault within %v before", faultWindow)
	}
	return "; faults around: " + strings.Join(near, " | ")
}
