// Package leadership elects one leader per target table among any number of schedulers, with
// MySQL's named locks (GET_LOCK) held on a dedicated connection.
//
// # How it works
//
// An Elector is a service (package startstop): it campaigns between Start and Stop. It takes a
// connection of its own from the pool and keeps it for as long as it runs. A standby calls
// GET_LOCK(name, 0) on it every RetryInterval (default 1 s). The candidate that gets the lock
// waits TakeoverDelay (default CheckInterval + CheckTimeout, 2 s) while checking the lock, then
// leads: it runs the caller's Term (given to New) with a context that is cancelled the moment
// the lock is lost or the elector stops. (The scheduler's Term starts the table's leader-only
// services and stops them when that context ends.) While leading it checks, every
// CheckInterval (default 1 s), that IS_USED_LOCK(name) = CONNECTION_ID() on its connection; an
// error, a wrong answer or a check slower than CheckTimeout (default 1 s) counts as losing the
// lock. When the leader stops (Stop, the end of Start's context, or a Term that returns) it
// releases the lock, so a standby takes over within about RetryInterval + TakeoverDelay; when
// the leader dies or loses its connection the server releases the lock and a standby takes
// over the same way.
//
// Start on a running elector does nothing; Stop returns once the term has returned and the
// lock is released (or its connection closed); a stopped elector may be started again.
//
// A candidate that lost the lock waits RetryInterval + TakeoverDelay before it campaigns again,
// so a healthy standby, retrying every RetryInterval, gets the lock first.
//
// A connection that held the lock is never returned to the pool: it is closed, so a lock can
// never outlive its elector inside a pooled connection.
//
// # Invariant
//
// While MySQL is up, at most one elector per lock name leads at a time:
//
//   - the lock is held by one connection at a time (MySQL's guarantee), and an elector leads
//     only while its own connection holds it;
//   - an elector that lost the lock stops leading at its next check, at most CheckInterval +
//     CheckTimeout after the server released the lock (the check fails or times out), and
//     waits for its Term to return before it campaigns again;
//   - a new leader starts only TakeoverDelay (≥ CheckInterval + CheckTimeout) after it got the
//     lock, so the previous holder has noticed the loss by then.
//
// The Term must stop its leader-only work when its context ends and return. A
// process that is paused for longer than TakeoverDelay (SIGSTOP, a stalled VM) can still
// overlap with its successor for the length of the pause; jetjobs' leader work (refresh,
// recovery, dispatch) is made of guarded, idempotent statements and idempotent publishes, so such
// an overlap costs duplicate work, never a wrong state.
//
// Lock names are "jetjobs:" + schema.table, or a hash of the table name when that would be
// longer than MySQL's 64 characters or depend on case (see LockName).
package leadership
