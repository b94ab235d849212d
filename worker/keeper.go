package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/startstop"
)

// Lease safety: a job is cancelled (its handler killed) leaseMargin before its lease can have
// expired as MySQL sees it, so that it has stopped before the scheduler may hand the key to
// another worker. The margin is a quarter of the lease, at most maxLeaseMargin.
const maxLeaseMargin = 5 * time.Second

// leaseMargin is how long before the lease's earliest possible expiry a job is cancelled.
func leaseMargin(lease time.Duration) time.Duration { return min(lease/4, maxLeaseMargin) }

// errLeaseUnrenewed cancels a job whose lease could not be renewed in time (MySQL unreachable
// or too slow): it is released, and the scheduler recovers the job once the lease expired.
var errLeaseUnrenewed = errors.New("lease could not be renewed before it expires")

// keeper keeps a table's running jobs alive: every interval it renews all their leases in
// MySQL in one statement and tells JetStream they are in progress. It cancels the jobs whose
// lease was lost (taken over after an expiry, or deleted by jobsctl), and those whose lease it
// could not renew: before the lease can have expired as MySQL sees it.
//
// A lease set by a statement sent at time s expires in MySQL no earlier than s + lease (the
// server evaluates NOW(3) after it received the statement), whatever the clocks say; so a job
// whose last successful renewal was sent at s is cancelled at s + lease - leaseMargin.
type keeper struct {
	startstop.Base
	jobs     *jobsdb.Jobs
	interval time.Duration
	lease    time.Duration
	log      *slog.Logger
	poke     chan struct{} // a job was added: its deadline may be the next one

	mu       sync.Mutex
	running  map[*job]struct{}
	nextWake time.Time // when run looks at the deadlines next
}

func newKeeper(j *jobsdb.Jobs, interval time.Duration, log *slog.Logger) *keeper {
	return &keeper{
		jobs: j, interval: interval, lease: j.Options().LeaseDuration, log: log,
		poke: make(chan struct{}, 1), running: map[*job]struct{}{},
	}
}

// Start starts renewing in the background.
func (k *keeper) Start(ctx context.Context) error {
	ctx, ok, done := k.StartInit(ctx)
	if !ok {
		return nil
	}
	go func() {
		defer done()
		k.run(ctx)
	}()
	return nil
}

// deadline is when a job whose lease was last renewed at renewed must be cancelled.
func (k *keeper) deadline(renewed time.Time) time.Time {
	return renewed.Add(k.lease - leaseMargin(k.lease))
}

// add starts keeping j, whose reservation was sent at j.reserved.
func (k *keeper) add(j *job) {
	k.mu.Lock()
	j.renewed = j.reserved
	k.running[j] = struct{}{}
	early := k.deadline(j.renewed).Before(k.nextWake)
	k.mu.Unlock()
	if early { // a reservation that took long: its deadline comes before run looks again
		select {
		case k.poke <- struct{}{}:
		default:
		}
	}
}

// valid reports whether j's lease is still certainly held (its deadline has not passed).
func (k *keeper) valid(j *job) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return time.Now().Before(k.deadline(j.renewed))
}

func (k *keeper) remove(j *job) {
	k.mu.Lock()
	delete(k.running, j)
	k.mu.Unlock()
}

// run renews every interval and cancels at deadlines until ctx ends.
func (k *keeper) run(ctx context.Context) {
	nextRenew := time.Now().Add(k.interval)
	timer := time.NewTimer(k.interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-k.poke:
		}
		if !time.Now().Before(nextRenew) {
			k.renew(ctx)
			nextRenew = time.Now().Add(k.interval)
		}
		wake := k.expire()
		if wake.IsZero() || nextRenew.Before(wake) {
			wake = nextRenew
		}
		k.mu.Lock()
		k.nextWake = wake
		k.mu.Unlock()
		timer.Reset(time.Until(wake))
	}
}

// renew renews every running job's lease in one statement, bounded by the interval so that a
// hung statement never delays the deadlines, and cancels the jobs whose lease was lost.
func (k *keeper) renew(ctx context.Context) {
	now := time.Now()
	k.mu.Lock()
	jobs := make([]*job, 0, len(k.running))
	var inProgress []queue.Msg
	for j := range k.running {
		jobs = append(jobs, j)
		// A message is kept only while its lease is certainly held: once the lease may have
		// expired, the message is let go, so that JetStream redelivers it to a worker that
		// can reach MySQL, instead of holding the job for a worker that cannot.
		if j.msg != nil && now.Before(k.deadline(j.renewed)) {
			inProgress = append(inProgress, j.msg)
		}
	}
	k.mu.Unlock()
	if len(jobs) == 0 {
		return
	}
	leases := make([]jobsdb.Lease, len(jobs))
	for i, j := range jobs {
		leases[i] = j.lease
		leases[i].Index = i // Heartbeat returns the lost leases as given: Index finds their job
	}
	for _, m := range inProgress {
		m.InProgress()
	}
	sent := time.Now()
	hctx, cancel := context.WithTimeout(ctx, k.interval)
	lost, err := k.jobs.Heartbeat(hctx, leases)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			// The jobs keep running until their deadline; by then a later renewal may work.
			k.log.Warn("renewing leases failed; jobs are cancelled before their leases can expire unless a renewal succeeds",
				"jobs", len(leases), "err", err)
		}
		return
	}
	// Lost are mostly jobs recorded between the snapshot and the statement.
	isLost := make(map[*job]bool, len(lost))
	for _, l := range lost {
		isLost[jobs[l.Index]] = true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, j := range jobs {
		if !isLost[j] {
			j.renewed = sent
			continue
		}
		if !j.finishing.Load() && !j.cancelled {
			k.log.Warn("lease lost; cancelling the job", "key", string(j.keyJSON))
			j.cancelled = true
			j.cancel(jobsdb.ErrLeaseLost)
		}
	}
}

// expire cancels the running jobs whose deadline has come, and returns the next deadline of a
// job still running (zero when there is none).
func (k *keeper) expire() time.Time {
	now := time.Now()
	var next time.Time
	k.mu.Lock()
	defer k.mu.Unlock()
	for j := range k.running {
		if j.cancelled || j.finishing.Load() {
			continue
		}
		d := k.deadline(j.renewed)
		if now.Before(d) {
			if next.IsZero() || d.Before(next) {
				next = d
			}
			continue
		}
		k.log.Warn("lease not renewed in time; cancelling the job before the lease can expire",
			"key", string(j.keyJSON), "last_renewed", now.Sub(j.renewed).Round(time.Millisecond))
		j.cancelled = true
		j.cancel(errLeaseUnrenewed)
	}
	return next
}
