package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
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

	// Guarded by keeper.mu.
	renewed   time.Time // when the last reservation or renewal that took effect was sent
	cancelled bool      // cancel was called
}

// keeper keeps a table's running jobs alive: every interval it renews all their leases in
// MySQL in one statement and tells JetStream they are in progress. It cancels the jobs whose
// lease was lost (taken over after an expiry, or deleted by jobsctl), and those whose lease it
// could not renew: before the lease can have expired as MySQL sees it.
//
// A lease set by a statement sent at time s expires in MySQL no earlier than s + lease (the
// server evaluates NOW(3) after it received the statement), whatever the clocks say; so a job
// whose last successful renewal was sent at s is cancelled at s + lease - leaseMargin.
type keeper struct {
	jobs     *jobsdb.Jobs
	interval time.Duration
	lease    time.Duration
	log      *slog.Logger
	poke     chan struct{} // a job was added: its deadline may be the next one

	mu      sync.Mutex
	running map[*running]struct{}
}

func newKeeper(j *jobsdb.Jobs, interval time.Duration, log *slog.Logger) *keeper {
	return &keeper{
		jobs: j, interval: interval, lease: j.Options().LeaseDuration, log: log,
		poke: make(chan struct{}, 1), running: map[*running]struct{}{},
	}
}

// deadline is when a job whose lease was last renewed at renewed must be cancelled.
func (k *keeper) deadline(renewed time.Time) time.Time {
	return renewed.Add(k.lease - leaseMargin(k.lease))
}

// add starts keeping r, whose reservation was sent at reserved.
func (k *keeper) add(r *running, reserved time.Time) {
	k.mu.Lock()
	r.renewed = reserved
	k.running[r] = struct{}{}
	k.mu.Unlock()
	select {
	case k.poke <- struct{}{}:
	default:
	}
}

// valid reports whether r's lease is still certainly held (its deadline has not passed).
func (k *keeper) valid(r *running) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return time.Now().Before(k.deadline(r.renewed))
}

func (k *keeper) remove(r *running) {
	k.mu.Lock()
	delete(k.running, r)
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
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(time.Until(wake))
	}
}

// renew renews every running job's lease in one statement, bounded by the interval so that a
// hung statement never delays the deadlines, and cancels the jobs whose lease was lost.
func (k *keeper) renew(ctx context.Context) {
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
	isLost := make(map[string]bool, len(lost))
	for _, l := range lost {
		isLost[k.leaseID(l)] = true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range jobs {
		if !isLost[k.leaseID(r.lease)] {
			r.renewed = sent
			continue
		}
		if !r.finishing.Load() && !r.cancelled {
			k.log.Warn("lease lost; cancelling the job", "key", string(mustJSON(k.jobs.Target(), r.lease.Key)))
			r.cancelled = true
			r.cancel(jobsdb.ErrLeaseLost)
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
	for r := range k.running {
		if r.cancelled || r.finishing.Load() {
			continue
		}
		d := k.deadline(r.renewed)
		if now.Before(d) {
			if next.IsZero() || d.Before(next) {
				next = d
			}
			continue
		}
		k.log.Warn("lease not renewed in time; cancelling the job before the lease can expire",
			"key", string(mustJSON(k.jobs.Target(), r.lease.Key)), "last_renewed", now.Sub(r.renewed).Round(time.Millisecond))
		r.cancelled = true
		r.cancel(errLeaseUnrenewed)
	}
	return next
}

func (k *keeper) leaseID(l jobsdb.Lease) string {
	return l.Token + "\x00" + string(mustJSON(k.jobs.Target(), l.Key))
}
