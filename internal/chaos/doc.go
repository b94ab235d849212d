// Package chaos proves jetjobs under faults: it runs the real programs (schedulers and worker
// processes built from this module) against real servers (a private MariaDB, nats-server
// processes: Debian's 2.9 binary or the current server built from the module), computes a
// pipeline of keys through an exec handler while a seeded random schedule of faults hits every
// part of the system, then checks from MySQL and the handler's call log that nothing was lost,
// computed twice at once, left stuck or recorded as an error that was not one.
//
// Guarantees of the harness (so that a reported violation is a fault of jetjobs, not of the
// harness):
//   - Everything runs on 127.0.0.1: servers, proxies and programs listen on loopback ports of
//     their own; each run has its own directory, servers, databases and ports, and removes them
//     at the end (unless kept for inspection after a failure).
//   - Everything started dies with the harness: every child process has a parent-death signal
//     and is killed at the end of the run; handlers die with their worker (the worker's own
//     parent-death signal).
//   - The same seed gives the same fault schedule (kinds, victims' roles, holds and gaps); the
//     timing of the system under it varies with the machine.
//   - Every fault is logged with its time since the start of the run and healed before the drain
//     phase; the drain waits (with a deadline) until no job is pending or reserved.
//   - Calls of the handler are known from its append-only call log (start and end lines written
//     with O_APPEND, one line per write) and from watching /proc: a call whose handler died
//     without an end line (a killed worker, a cancelled job) ends when its process was last seen
//     alive. A call's interval is therefore never longer than the real one, and an overlap of two
//     calls of one key is a real overlap.
//   - The checker reports, from the jobs table, the target table and the call log: lost keys
//     (neither computed nor an induced error), keys with overlapping calls, jobs still pending or
//     reserved after the drain deadline, and error rows of keys whose handler never fails.
//
// Run drives a chaos run and Soak a steady-load run; cmd/jetjobs-chaos is their command line.
package chaos
