package worker

import (
	"context"
	"errors"
	"time"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/tracing"
)

const (
	// idleFetch is how long one fetch waits for messages before the worker checks whether it
	// should stop (Once, MaxCalls) and lets other tables use the free slots.
	idleFetch = time.Second
	// messageRetryDelay is how long a message waits before redelivery when its job could not
	// be reserved because MySQL was unreachable.
	messageRetryDelay = 5 * time.Second
	// idleCheckTimeout bounds the statement that tells an idle worker with Once whether due
	// jobs are left.
	idleCheckTimeout = 10 * time.Second
)

// fetchLoop takes jobs for t while there are free slots, in strict priority order, from the
// source of the current dispatch mode, and hands them to the runners.
func (w *Worker) fetchLoop(ctx context.Context, t *table) {
	defer t.stopSources()
	for ctx.Err() == nil {
		n := w.takeSlots(ctx)
		if n == 0 {
			continue
		}
		jobs := w.source(t).take(ctx, n)
		if len(jobs) < n {
			w.releaseSlots(n - len(jobs))
		}
		if len(jobs) == 0 {
			if ctx.Err() != nil {
				return
			}
			if w.idleDone(ctx, t) {
				w.stopTaking()
				return
			}
			continue
		}
		w.addInflight(len(jobs))
		for _, j := range jobs {
			w.running.Add(1)
			w.runs <- j // a runner is free: the job holds one of the slots
		}
	}
}

// source returns the source t takes jobs from in the current dispatch mode.
func (w *Worker) source(t *table) source {
	if mode, _ := w.modes.now(); mode == DispatchMySQL {
		if t.claimer == nil {
			t.claimer = newClaimer(w, t)
		}
		return t.claimer
	}
	if t.nats == nil {
		t.nats = &natsSource{w: w, t: t, q: t.queue.Load()}
		t.nats.fetcher = t.nats.q.NewFetcher(w.opts.MaxPriority)
	}
	return t.nats
}

// stopSources releases what t's sources hold (the fetcher's wake-up subscription).
func (t *table) stopSources() {
	if t.nats != nil {
		t.nats.fetcher.Stop()
	}
}

func (w *Worker) addInflight(n int) {
	w.mu.Lock()
	w.inflight += n
	w.mu.Unlock()
}

// natsSource is the source of DispatchNATS: it fetches as many messages as there are free
// slots, most urgent priority first, and reserves their jobs in one statement.
type natsSource struct {
	w       *Worker
	t       *table
	q       *queue.Table
	fetcher *queue.Fetcher
}

func (s *natsSource) take(ctx context.Context, n int) []*job {
	w, t := s.w, s.t
	fctx, cancel := context.WithTimeout(ctx, idleFetch)
	msgs, err := s.fetcher.Fetch(fctx, n)
	cancel()
	if len(msgs) > 0 {
		// Tell the scheduler: it refills the stream as the fleet drains it.
		s.q.ReportDemand(queue.Demand{Worker: w.id, Taken: len(msgs), Slots: w.opts.Concurrency})
	}
	if err != nil && len(msgs) == 0 {
		if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			w.log.Warn("fetching messages failed", "table", t.name, "err", err)
			w.modes.fetchFailing()
		}
		return nil
	}
	return w.reserve(ctx, t, msgs)
}

// takeSlots blocks for one free slot, then takes every other free slot, within MaxCalls.
func (w *Worker) takeSlots(ctx context.Context) int {
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	n := 1
more:
	for n < cap(w.slots) {
		select {
		case w.slots <- struct{}{}:
			n++
		default:
			break more
		}
	}
	if w.opts.MaxCalls > 0 {
		w.mu.Lock()
		allowed := w.opts.MaxCalls - w.finished - w.inflight
		w.mu.Unlock()
		if allowed < n {
			w.releaseSlots(n - max(allowed, 0))
			n = max(allowed, 0)
		}
		if n == 0 {
			// Wait for a running job to finish before looking again.
			select {
			case <-w.progress:
			case <-ctx.Done():
			}
		}
	}
	return n
}

func (w *Worker) releaseSlots(n int) {
	for range n {
		<-w.slots
	}
}

// idleDone reports whether the worker is done after a fetch found nothing: with Once, when
// no due job is left in MySQL for t and nothing runs; with MaxCalls, when the limit is met.
func (w *Worker) idleDone(ctx context.Context, t *table) bool {
	w.mu.Lock()
	finished, inflight := w.finished, w.inflight
	w.mu.Unlock()
	if w.opts.MaxCalls > 0 && finished >= w.opts.MaxCalls {
		return true
	}
	if !w.opts.Once || inflight > 0 {
		return false
	}
	qctx, cancel := context.WithTimeout(ctx, idleCheckTimeout)
	due, err := t.jobs.FetchPending(qctx, 1, w.opts.MaxPriority, nil)
	cancel()
	if err != nil {
		w.log.Warn("checking for due jobs failed", "table", t.name, "err", err)
		return false
	}
	return len(due) == 0
}

// reserve reserves the fetched messages' jobs in one statement and returns the ones won, each
// holding one of the slots taken for the messages (the others' slots are the caller's to
// release). Each message's key is parsed once, here, and travels with its job from then on.
func (w *Worker) reserve(ctx context.Context, t *table, msgs []queue.Msg) []*job {
	target := t.jobs.Target()
	jobs := make([]*job, 0, len(msgs))
	keys := make([]jobsdb.Key, 0, len(msgs))
	seen := make(map[string]bool, len(msgs))
	var spent []queue.Msg // settled by MySQL's answer: acked together
	defer func() {
		if len(spent) > 0 {
			queue.AckAll(ctx, spent)
		}
	}()
	for _, m := range msgs {
		key, err := target.ParseKey(m.Key())
		if err != nil {
			// A malformed message can never succeed: drop it for good, change nothing.
			w.log.Error("rejecting a malformed message", "table", t.name, "payload", truncate(string(m.Key()), 200), "err", err)
			m.Term()
			continue
		}
		keyJSON, err := target.KeyJSON(key)
		if err != nil || seen[string(keyJSON)] {
			// The same key twice in one fetch (a priority change left two messages): one is enough.
			spent = append(spent, m)
			continue
		}
		seen[string(keyJSON)] = true
		jobs = append(jobs, w.newJob(t, m, key, keyJSON))
		keys = append(keys, key)
	}
	if len(jobs) == 0 {
		return nil
	}
	tel := w.opts.Telemetry
	if tel.Enabled() {
		for _, j := range jobs {
			_, j.reserveSpan = tel.StartDB(j.ctx, tracing.OpReserve, j.span)
		}
	}
	// The reservation is not cancelled with ctx: a cancelled statement may still commit, and
	// then the winners would be unknown. Jobs won after a stop are released by run. It is
	// bounded by the lease: a reservation that takes longer has nothing left to run.
	sent := time.Now()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.jobs.Options().LeaseDuration)
	leases, err := t.jobs.Reserve(rctx, keys)
	cancel()
	if err != nil {
		msg := "reserving jobs failed; their messages come back later"
		if errors.Is(err, jobsdb.ErrAmbiguous) {
			msg = "reserving jobs failed and MySQL could not tell whether they were reserved; if they were, they return to pending when their lease expires"
		}
		w.log.Warn(msg, "table", t.name, "jobs", len(keys), "err", err)
		for _, j := range jobs {
			j.endSpans(err)
			j.msg.NakWithDelay(messageRetryDelay)
		}
		return nil
	}
	metrics := tel.Metrics()
	metrics.Reserved(ctx, t.name, len(leases))
	won := make([]bool, len(jobs))
	runs := make([]*job, 0, len(leases))
	for _, l := range leases {
		if l.Index < 0 {
			// Won under a spelling of its key that no message of this fetch had: hand it back.
			w.addInflight(1)
			w.releaseUnmatched(t, l)
			continue
		}
		j := jobs[l.Index]
		won[l.Index] = true
		j.lease, j.reserved = l, sent
		metrics.DispatchLag(ctx, t.name, l.ReservedTime.Sub(l.ScheduledTime))
		j.span.Attempt = l.Attempts
		if j.reserveSpan != nil {
			tracing.End(j.reserveSpan, nil)
			j.reserveSpan = nil
		}
		runs = append(runs, j)
	}
	for i, j := range jobs {
		if !won[i] {
			// Not pending or not due any more (a job claimed from MySQL, say): MySQL decided;
			// the message is spent.
			j.endSpans(nil)
			spent = append(spent, j.msg)
		}
	}
	return runs
}

// releaseUnmatched gives back a lease won for a key no message of the fetch carried.
func (w *Worker) releaseUnmatched(t *table, l jobsdb.Lease) {
	j := &job{t: t, key: l.Key, lease: l, ctx: context.Background(), extra: true}
	j.outcome = jobsdb.Outcome{Lease: l, Kind: jobsdb.OutcomeRelease}
	j.finishing.Store(true)
	t.completer.add(j)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
