// Package scheduler is the scheduler service: for each target table it campaigns for
// leadership (package leadership) and, while it leads, keeps the table's jobs flowing from
// MySQL to JetStream.
//
// # What a leader does
//
// On taking the lead of a table it declares the jobs table and opens the table's stream, then
// loops until it loses the lead:
//
//   - refresh every jobs.refresh_interval when jobs.auto_refresh is on (and at once on taking
//     the lead): the key source's new keys become pending jobs, stale ones are removed;
//   - recover expired leases every jobs.lease_duration/4 (at least every second,
//     RecoverInterval): crashed workers' jobs return to pending;
//   - dispatch: publish every due pending job that has no message yet (dispatched_time NULL),
//     and every one published longer than RedispatchAfter ago (2·nats.ack_wait +
//     jobs.lease_duration by default), whose message may have been lost; then mark them
//     dispatched and wake idle workers. Publishing is idempotent (a job's subject holds at most
//     one message), so a republish of a job whose message still waits changes nothing;
//   - sleep until the next job becomes due (jobsdb NextDue), the next refresh or recovery, or
//     PollInterval (1 s) at most, since jobsctl, DataJoint or a worker's retry may add due jobs
//     at any time.
//
// New jobs are thus published right after the refresh that created them, delayed and retried
// jobs within PollInterval of their scheduled_time (sooner when NextDue sees them coming),
// recovered orphans right after their recovery, and lost messages after RedispatchAfter.
//
// # Failures
//
// Nothing but a configuration error stops the service: a MySQL or NATS error is logged with
// the table and retried with exponential backoff (cenkalti/backoff), per step, so a failing
// refresh (a broken key source, say) does not hold up dispatch. A stream deleted while the
// scheduler runs is recreated by the queue package on the next publish, and the jobs whose
// messages went with it are republished after RedispatchAfter.
//
// # Telemetry
//
// With Options.Telemetry (package tracing) the leader of a table records:
//
//   - a publish span per job published (tracing's StartPublish), whose W3C trace context goes
//     into the message header, so that the worker's spans for the job are its children. It
//     ends when the batch's publish returns, with the batch's error on the messages that were
//     not stored. With tracing off there is no per-job work at all;
//   - jetjobs.jobs.published: the messages a dispatch pass stored in the stream (not the
//     republishes that found their message still there);
//   - jetjobs.refresh.{duration,added,removed} per successful refresh;
//   - jetjobs.jobs.recovered: expired leases returned to pending, by the recovery and by the
//     refresh (which runs the same recovery);
//   - the gauges jetjobs.queue.{pending,reserved} (a count per status of the jobs table) and
//     jetjobs.stream.depth (messages waiting per priority). The leader samples them after each
//     refresh and every GaugeInterval; a collection reports the last samples and queries
//     nothing. Only a table's leader reports them: a standby reports nothing for the table.
//
// # Invariants
//
//   - Leader-only work (refresh, recovery, dispatch) runs only inside the leader function of
//     the table's elector, under a context that is cancelled the moment the lock is lost.
//   - MySQL stays the source of truth: a job is marked dispatched only after JetStream
//     confirmed its message (or reported that one was already there).
//   - Every goroutine is owned by Run and has returned when Run returns.
package scheduler
