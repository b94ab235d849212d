// Package scheduler is the scheduler service: for each target table it campaigns for
// leadership (package leadership) and, while it leads, keeps the table's jobs flowing from
// MySQL to JetStream.
//
// # Shape
//
// Everything here is a service of package startstop: started with a context, stopped with
// Stop, which returns once every goroutine the service started has returned.
//
//	Scheduler                      Start/Stop by the program; Err after it stopped by itself
//	└─ table (one per table)       inspects the target, then runs the table's elector
//	   └─ leadership.Elector       its Term (table.lead) runs for each term of leadership:
//	      ├─ dispatcher            publishes due jobs     (poll: PollInterval, or the next due time)
//	      ├─ rescuer               recovers expired leases (every RecoverInterval)
//	      ├─ refresher             refreshes from the key source (every Refresh.Interval; not when Disabled)
//	      ├─ events                refreshes for the keys it is told (notifies, inserts upstream; not when Events.Disabled)
//	      └─ sampler               samples the gauges     (every GaugeInterval; only with metrics)
//
// A term declares the jobs table and opens the table's stream, starts the four services with
// startstop.StartAll, and stops them with startstop.StopAll when the lock is lost or the
// scheduler stops. The services share nothing but the table's jobs handle and stream (both
// safe for concurrent use); each has its own loop (periodic): its own interval, its own
// exponential backoff after errors (cenkalti/backoff), its own tests. They tell each other
// what changed by pokes, never by waiting for each other: the refresher pokes the dispatcher
// (so that a refresh's new jobs are published at once) and the sampler (so that the gauges
// show them) after each refresh, and so does the events service after each refresh that
// added jobs; the rescuer pokes the dispatcher when it recovered jobs.
//
// # What a leader does
//
//   - refresher: refresh at once on taking the lead and every Refresh.Interval
//     (jobs.refresh_interval) when auto refresh is on: the key source's new keys become
//     pending jobs, stale ones are removed, expired leases recovered;
//   - rescuer: recover expired leases at once and every RecoverInterval
//     (jobs.lease_duration/4, at least MinRecoverInterval): crashed workers' jobs return to
//     pending;
//   - dispatcher: repair the stream and read the room the dispatch window leaves, then
//     publish every due pending job that has no message yet (dispatched_time NULL), every one
//     published longer than RedispatchAfter ago (2·nats.ack_wait + jobs.lease_duration by
//     default), whose message may have been lost, and every one whose priority's messages are
//     gone from the stream; wake idle workers, and mark the jobs dispatched MarkDelay later
//     (most are reserved by then, which leaves little to write). Publishing is
//     idempotent (a job's subject holds at most one message), so a republish of a job whose
//     message still waits changes nothing. It passes again when the next job becomes due
//     (jobsdb NextDue), when poked, when a retry a worker announced becomes due (queue's
//     PublishDue: the timer is re-armed for it), and after PollInterval (1 s) at most, since
//     jobsctl and DataJoint may add due jobs at any time;
//   - events: follow the table's notify subject and the inserted subjects of the tables its
//     key source depends on (package notify): the primary parents from the foreign keys, or
//     Table.DependsOn for a configured key source. Keys are checked on arrival (key columns,
//     typed by them; a bad message is logged and dropped whole, changing nothing), collected,
//     and refreshed together, restricted to exactly those keys (placeholders, never SQL), at
//     most once per Events.Coalesce. Workers publish the keys of the successes they commit on
//     their table's inserted subject, so a key goes through every stage of a pipeline without
//     waiting for a refresh interval. Events are core NATS: a lost one waits for the periodic
//     refresh;
//   - sampler: see Telemetry.
//
// New jobs are thus published right after the refresh that created them, delayed and retried
// jobs at their scheduled_time (when NextDue sees them coming, or a worker announced the
// retry; within PollInterval for jobs added behind the scheduler's back),
// recovered orphans right after their recovery, and lost messages after RedispatchAfter.
//
// # Failures
//
// Nothing but a table that cannot be scheduled as configured stops the service: a MySQL or
// NATS error is logged with the table and retried with the failing service's backoff, so a
// failing refresh (a broken key source, say) does not hold up dispatch. A stream deleted
// while the scheduler runs is recreated by the queue package on the next publish, and the
// jobs whose messages went with it are published again. A table that does not exist, has no
// key columns or has a key source MySQL rejects is a *TableError: the scheduler stops all
// tables and Err returns it (the program exits with status 2). Start refuses options that
// cannot work (ErrNoTables, a *TableError for a name that is not schema.table or is listed
// twice).
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
//   - jetjobs.jobs.recovered: expired leases returned to pending, by the rescuer and by the
//     refresh (which runs the same recovery);
//   - the gauges jetjobs.queue.{pending,reserved} (a count per status of the jobs table) and
//     jetjobs.stream.depth (messages waiting per priority), from the sampler. It samples at
//     once, after each refresh and every GaugeInterval; a collection reports the last samples
//     and queries nothing. The sampler registers the gauges when it starts and unregisters
//     them when it stops: a standby reports nothing for the table.
//
// The HTTP endpoints (/healthz, /readyz, /metrics) are Handler's; the program serves them.
//
// # Invariants
//
//   - Leader-only work (refresh, recovery, dispatch, sampling) runs only in the services of a
//     term, under the term's context, which the elector cancels the moment the lock is lost;
//     the term returns, and the elector releases the lock, only after every service stopped.
//   - MySQL stays the source of truth: a job is marked dispatched only after JetStream
//     confirmed its message (or reported that one was already there).
//   - One dispatcher per table and term: dispatch passes of a table never overlap.
//   - Every goroutine is owned by a service and has returned when its Stop returns; Stop of
//     the Scheduler returns once every table's services, elector and lock are gone.
package scheduler
