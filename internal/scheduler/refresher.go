package scheduler

import (
	"context"
	"log/slog"
	"time"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// refresher is the service of a table's leader that refreshes the jobs table from the key
// source (jobsdb's Refresh) at once and every Refresh.Interval: new keys become pending jobs,
// stale pending jobs are removed, and expired leases are recovered. After each refresh it
// calls refreshed, which pokes the dispatcher (so that the new jobs are published at once)
// and the sampler. A failing refresh is retried with a backoff of its own.
type refresher struct {
	leaderService
	refreshed func()
}

func newRefresher(o *Options, table string, log *slog.Logger, jobs *jobsdb.Jobs, refreshed func()) *refresher {
	r := &refresher{leaderService: leaderService{o: o, table: table, jobs: jobs}, refreshed: refreshed}
	r.init(log, r.runOnce, "refresh failed; retrying", slog.LevelError, o.PollInterval, o.ErrorBackoffMax)
	return r
}

// runOnce refreshes the table once and returns when to refresh again.
func (r *refresher) runOnce(ctx context.Context) (time.Time, error) {
	start := time.Now()
	res, err := r.jobs.Refresh(ctx, r.o.refreshOptions())
	if err != nil {
		return time.Time{}, err
	}
	took := time.Since(start)
	metrics := r.o.Telemetry.Metrics()
	metrics.RefreshDone(ctx, r.table, took, res.Added, res.Removed)
	// Refresh recovers expired leases too, as the rescuer does.
	metrics.Recovered(ctx, r.table, res.Orphaned)
	level := slog.LevelDebug
	if res.Added+res.Removed+res.Orphaned+res.RePended > 0 {
		level = slog.LevelInfo
	}
	r.log.Log(ctx, level, "refreshed", "added", res.Added, "removed", res.Removed,
		"orphaned", res.Orphaned, "re_pended", res.RePended, "took", took.Round(time.Millisecond))
	r.refreshed()
	return start.Add(r.o.Refresh.Interval), nil
}
