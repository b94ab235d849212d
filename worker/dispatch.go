package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

// Pacing of dispatch.
const (
	// claimWaitInitial and claimWaitMax bound the wait between claims that found fewer jobs
	// than free slots: it starts at claimWaitInitial and doubles while claims come back empty,
	// so an idle worker asks MySQL about once a second, and a job that becomes due waits at
	// most about that long.
	claimWaitInitial = 20 * time.Millisecond
	claimWaitMax     = time.Second
	// modeCheckInterval is how often a worker with DispatchAuto looks at its NATS connection.
	modeCheckInterval = 250 * time.Millisecond
	// probeInterval paces the JetStream requests that tell whether NATS works again (or still
	// works while fetches fail), and probeTimeout bounds each.
	probeInterval = time.Second
	probeTimeout  = 2 * time.Second
)

// source gives a table's fetch loop reserved jobs: JetStream messages whose jobs are then
// reserved by key (natsSource), or due jobs claimed from the jobs table (claimer). The rest of
// the way (runners, keeper, completer) is the same for both.
type source interface {
	// take reserves up to n jobs, for which the caller holds n slots, and returns them (each
	// job holds one slot; the caller releases the rest). It waits a while for jobs when there
	// are none: it returns none when ctx ends, when that while is over (so that the caller
	// checks whether it is done), or when the dispatch mode changes. It logs its own failures
	// and paces its own retries.
	take(ctx context.Context, n int) []*job
}

// modes tracks which way the worker takes jobs now: DispatchNATS or DispatchMySQL. With
// DispatchAuto, watch switches between them by the state of the NATS connection; otherwise the
// mode never changes.
type modes struct {
	nc  *nats.Conn
	log *slog.Logger

	mu      sync.Mutex
	current Dispatch
	changed chan struct{} // closed (and replaced) at each switch
	// fetchFailed is when a fetch from JetStream last failed while the connection was up.
	fetchFailed time.Time
}

func newModes(initial Dispatch, nc *nats.Conn, log *slog.Logger) *modes {
	return &modes{nc: nc, log: log, current: initial, changed: make(chan struct{})}
}

// now returns the current mode and a channel closed when it changes.
func (m *modes) now() (Dispatch, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current, m.changed
}

func (m *modes) mode() string {
	d, _ := m.now()
	return string(d)
}

// fetchFailing records a failed fetch from JetStream.
func (m *modes) fetchFailing() {
	m.mu.Lock()
	m.fetchFailed = time.Now()
	m.mu.Unlock()
}

func (m *modes) set(d Dispatch, msg string, args ...any) {
	m.mu.Lock()
	if m.current == d {
		m.mu.Unlock()
		return
	}
	m.current = d
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
	if d == DispatchMySQL {
		m.log.Warn(msg, args...)
	} else {
		m.log.Info(msg, args...)
	}
}

// watch switches modes until ctx ends (DispatchAuto): to MySQL once NATS has been unusable for
// NATSOutage (disconnected, or its JetStream not answering while fetches fail), back to NATS
// once the connection is up and every table's stream opens (reopen).
func (m *modes) watch(ctx context.Context, reopen func(context.Context) error) {
	ticker := time.NewTicker(modeCheckInterval)
	defer ticker.Stop()
	var badSince, probed time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		current, _ := m.now()
		m.mu.Lock()
		failed := m.fetchFailed
		m.mu.Unlock()
		switch current {
		case DispatchNATS:
			ok := m.nc.IsConnected()
			if ok && time.Since(failed) < NATSOutage && time.Since(probed) >= probeInterval {
				// Fetches fail on a live connection: ask JetStream itself.
				probed = time.Now()
				pctx, cancel := context.WithTimeout(ctx, probeTimeout)
				ok = queue.Ping(pctx, m.nc) == nil
				cancel()
			}
			switch {
			case ok:
				badSince = time.Time{}
			case badSince.IsZero():
				badSince = time.Now()
			case time.Since(badSince) >= NATSOutage:
				m.set(DispatchMySQL, "NATS unreachable; claiming jobs from MySQL until it answers again",
					"for", time.Since(badSince).Round(time.Millisecond), "nats", m.nc.Status().String())
				badSince = time.Time{}
			}
		case DispatchMySQL:
			if !m.nc.IsConnected() || time.Since(probed) < probeInterval {
				continue
			}
			probed = time.Now()
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			err := reopen(pctx)
			cancel()
			if err != nil {
				m.log.Debug("NATS connected, but its streams do not answer yet; still claiming from MySQL", "err", err)
				continue
			}
			m.mu.Lock()
			m.fetchFailed = time.Time{}
			m.mu.Unlock()
			m.set(DispatchNATS, "NATS answers again; taking jobs from JetStream")
		}
	}
}

// claimer is the source of DispatchMySQL: it claims due jobs from the jobs table in batches of
// the free slots (jobsdb's Claim). After a claim that filled every slot it claims again as
// soon as a slot frees; after one that found fewer jobs it waits, from claimWaitInitial,
// doubling while claims come back empty, up to claimWaitMax, and wakes early when the mode
// changes. A claim that fails (MySQL unreachable, deadlocks beyond jobsdb's own retries) is
// logged and retried after the same wait: it is never a job's error.
type claimer struct {
	w    *Worker
	t    *table
	bo   *backoff.ExponentialBackOff
	wait time.Duration // before the next claim
}

func newClaimer(w *Worker, t *table) *claimer {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = claimWaitInitial
	bo.MaxInterval = claimWaitMax
	return &claimer{w: w, t: t, bo: bo}
}

func (c *claimer) take(ctx context.Context, n int) []*job {
	if c.wait > 0 {
		_, changed := c.w.modes.now()
		timer := time.NewTimer(c.wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-changed:
			timer.Stop()
			c.wait = 0
			return nil
		case <-timer.C:
		}
	}
	t := c.t
	// As a reservation by key: not cancelled with ctx (a cancelled statement may still
	// commit, and then the winners would be unknown), bounded by the lease. Jobs won after a
	// stop are released by run.
	sent := time.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.jobs.Options().LeaseDuration)
	leases, err := t.jobs.Claim(rctx, n, c.w.opts.MaxPriority)
	cancel()
	if err != nil {
		msg := "claiming jobs from MySQL failed; retrying"
		if errors.Is(err, jobsdb.ErrAmbiguous) {
			msg = "claiming jobs from MySQL failed and MySQL could not tell whether they were reserved; if they were, they return to pending when their lease expires"
		}
		c.wait = c.bo.NextBackOff()
		c.w.log.Warn(msg, "table", t.name, "err", err, "retry_in", c.wait.Round(time.Millisecond))
		return nil
	}
	switch {
	case len(leases) >= n:
		c.bo.Reset()
		c.wait = 0
	case len(leases) > 0:
		c.bo.Reset()
		c.wait = c.bo.NextBackOff()
	default:
		c.wait = c.bo.NextBackOff()
	}
	if len(leases) == 0 {
		return nil
	}
	tel := c.w.opts.Telemetry
	metrics := tel.Metrics()
	metrics.Reserved(ctx, t.name, len(leases))
	target := t.jobs.Target()
	jobs := make([]*job, 0, len(leases))
	for _, l := range leases {
		keyJSON, err := target.KeyJSON(l.Key)
		if err != nil { // a key MySQL gave us always encodes; never run what cannot be named
			c.w.log.Error("cannot encode a claimed job's key; releasing it", "table", t.name, "err", err)
			c.w.addInflight(1)
			c.w.releaseUnmatched(t, l)
			continue
		}
		j := &job{t: t, key: l.Key, keyJSON: keyJSON, lease: l, reserved: sent,
			span: tracing.Job{Table: t.name, Key: keyJSON, Priority: l.Priority, Attempt: l.Attempts}}
		j.ctx, j.process = tel.StartProcess(context.Background(), j.span)
		metrics.DispatchLag(ctx, t.name, l.ReservedTime.Sub(l.ScheduledTime))
		jobs = append(jobs, j)
	}
	return jobs
}
