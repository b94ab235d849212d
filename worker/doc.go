// Package worker computes jobs: it takes due jobs of its tables from NATS JetStream, reserves
// them in MySQL, runs a handler for each, and records the outcomes. It is what the worker
// program runs, and what a Go program runs to compute jobs in Go:
//
//	w, err := worker.New(worker.Options{DB: db, NATS: nc, Tables: tables, Handler: compute})
//	summary, err := w.Run(ctx) // populate(): until ctx ends, or Once / MaxCalls say it is done
//
// A handler is a Go function (Handler), an external command run once per job (Exec), or a
// program that computes one job after another over a line-delimited JSON protocol
// (Persistent, docs/handler-protocol.md); it gets the key and may return target rows, which
// are inserted in the transaction that records the job's completion. The job states and their
// transitions are in docs/states.md.
//
// # How a job goes
//
// A fetch loop per table takes as many jobs as there are free slots (Concurrency), most urgent
// priority first, from the source of the dispatch mode (Options.Dispatch): it pulls messages
// from JetStream and reserves all their jobs in one statement, or it claims due jobs from the
// jobs table in one transaction (jobsdb's Claim). Each reservation gets a lease. With
// DispatchAuto the worker switches between the two as NATS goes and comes (NATSOutage); a
// message for a job claimed from MySQL is refused by the guarded reservation, so no job runs
// twice. While a job runs, the keeper renews the leases of all running jobs in one
// statement every third of a lease (and keeps their messages from being redelivered). When
// the handler returns, the completer records outcomes in batches, each fenced by its lease
// token, then settles the messages: acked for a job that is done or waits for a retry,
// redelivered for a job released to pending. Once a batch committed, it announces on core NATS
// (unless Options.NoEvents) the keys of its successes, on the table's inserted subject (package
// notify), so that the scheduler refreshes the tables depending on this one for them at once,
// and the earliest due time of its retries, so that the scheduler publishes them on time.
//
// # Invariants
//
//  1. A job runs only under a lease this worker holds: the keeper cancels a job (kills an
//     exec or persistent handler's process group) before its lease can have expired as MySQL sees it, when
//     the lease was taken over, or when it could not be renewed in time (MySQL unreachable).
//     A job whose lease may have expired before it started is released without running.
//  2. An outcome is recorded at most once per lease, fenced by the lease token; a transient
//     or ambiguous failure to record it (a lost connection, a killed statement, a restarting
//     server) is retried, never turned into the job's error.
//  3. A message is acked only after the MySQL write that settles its job committed.
//  4. Stopping (Stop, or the end of Run's context) never turns a job into an error: jobs still
//     running when the grace period ends are released to pending, and so is a job whose exec
//     handler died of the same stop signal (a supervisor signals every process at once).
//  5. Every goroutine the worker starts has returned when Stop (or Run) returns.
package worker
