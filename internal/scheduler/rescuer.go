package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jetjobs/jetjobs/jobsdb"
)

// rescuer is the service of a table's leader that returns jobs whose lease expired to pending
// (jobsdb's RecoverExpired), at once and every RecoverInterval: a crashed worker's jobs wait
// at most their lease plus that. When it recovered jobs it calls recovered, which pokes the
// dispatcher so that they are published again at once. A failing recovery is retried with a
// backoff of its own.
type rescuer struct {
	leaderService
	recovered func()
}

func newRescuer(o *Options, table string, log *slog.Logger, jobs *jobsdb.Jobs, recovered func()) *rescuer {
	r := &rescuer{leaderService: leaderService{o: o, table: table, jobs: jobs}, recovered: recovered}
	r.init(log, r.runOnce, "recovering expired leases failed; retrying", slog.LevelError, o.PollInterval, o.ErrorBackoffMax)
	return r
}

// runOnce recovers the expired leases once and returns when to look again.
func (r *rescuer) runOnce(ctx context.Context) (time.Time, error) {
	start := time.Now()
	n, err := r.jobs.RecoverExpired(ctx, r.o.OrphanTimeout)
	switch {
	case errors.Is(err, jobsdb.ErrNoJobsTable):
		// Dropped behind our back (jobsctl drop): nothing to recover.
	case err != nil:
		return time.Time{}, err
	default:
		r.o.Telemetry.Metrics().Recovered(ctx, r.table, n)
		if n > 0 {
			r.log.Info("recovered jobs whose lease expired", "jobs", n)
			r.recovered()
		}
	}
	return start.Add(r.o.RecoverInterval), nil
}
