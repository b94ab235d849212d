package worker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// running is one job in progress: its lease, its message and how to cancel it.
type running struct {
	lease  jobsdb.Lease
	msg    queue.Msg
	cancel context.CancelCauseFunc
	// finishing is set once the handler returned and the outcome waits to be recorded: the
	// lease is still renewed, but a lost lease then cancels nothing (the recording is fenced
	// and reports it), and a job recorded between the heartbeat's snapshot and its statement
	// is not mistaken for a lost one.
	finishing atomic.Bool
}

// keeper keeps a table's running jobs alive: every tick it renews all their leases in MySQL
// in one statement and tells JetStream they are in progress, and it cancels the jobs whose
// lease was lost (taken over after an expiry, or deleted by jobsctl).
type keeper struct {
	jobs     *jobsdb.Jobs
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	running map[*running]struct{}
}

func newKeeper(j *jobsdb.Jobs, interval time.Duration, log *slog.Logger) *keeper {
	return &keeper{jobs: j, interval: interval, log: log, running: map[*running]struct{}{}}
}

func (k *keeper) add(r *running) {
	k.mu.Lock()
	k.running[r] = struct{}{}
	k.mu.Unlock()
}

func (k *keeper) remove(r *running) {
	k.mu.Lock()
	delete(k.running, r)
	k.mu.Unlock()
}

// run ticks until ctx ends.
func (k *keeper) run(ctx context.Context) {
	t := time.NewTicker(k.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.tick(ctx)
		}
	}
}

func (k *keeper) tick(ctx context.Context) {
	k.mu.Lock()
	jobs := make([]*running, 0, len(k.running))
	for r := range k.running {
		jobs = append(jobs, r)
	}
	k.mu.Unlock()
	if len(jobs) == 0 {
		return
	}
	leases := make([]jobsdb.Lease, len(jobs))
	for i, r := range jobs {
		leases[i] = r.lease
		if r.msg != nil {
			r.msg.InProgress()
		}
	}
	lost, err := k.jobs.Heartbeat(ctx, leases)
	if err != nil {
		// MySQL is unreachable: keep running; the leases are renewed on the next tick or
		// expire, and then the scheduler recovers the jobs and the late outcomes are fenced.
		k.log.Warn("renewing leases failed", "jobs", len(leases), "err", err)
		return
	}
	if len(lost) == 0 {
		return
	}
	isLost := make(map[string]bool, len(lost))
	for _, l := range lost {
		isLost[k.leaseID(l)] = true
	}
	for _, r := range jobs {
		if isLost[k.leaseID(r.lease)] && !r.finishing.Load() {
			k.log.Warn("lease lost; cancelling the job", "key", string(mustJSON(k.jobs.Target(), r.lease.Key)))
			r.cancel(jobsdb.ErrLeaseLost)
		}
	}
}

func (k *keeper) leaseID(l jobsdb.Lease) string {
	return l.Token + "\x00" + string(mustJSON(k.jobs.Target(), l.Key))
}
