// Package jobsdb is jetjobs' MySQL side: the jobs table of a target table and every
// transition of a job's state, each as one guarded SQL statement.
//
// It speaks SQL and nothing else. The state machine, every transition with its guard, the
// method that makes it and how DataJoint differs, is written once, in docs/states.md at the
// root of this repository; this package implements that table row for row, and every
// statement it runs is named in statements.go.
//
// # Invariants
//
//  1. Every transition is a compare-and-set on the row's status, and a lease holder's writes
//     (Heartbeat, Record) also compare lease_token. A write whose guard fails changes nothing
//     and is reported (applied=false, a lost lease, a count of zero), never retried blindly.
//  2. A key is reserved by at most one lease at a time: Reserve only moves pending, due rows,
//     and gives each reservation a fresh random lease_token, so a late write by a previous
//     holder (after orphan recovery, delete or ignore) matches no row.
//  3. Target rows of a successful outcome are inserted in the same transaction as the job's
//     completion, and only for outcomes whose lease is still held (their rows are locked first).
//  4. dispatched_time is NULL whenever a job (re-)enters pending: on insert, retry, release,
//     orphan recovery, RetryErrors and re-pend. The scheduler relies on it to publish once.
//  5. A restricted Refresh never removes or changes a job outside its restriction; stale
//     removal checks the unrestricted key source and only ever deletes pending rows.
//  6. Values are always placeholders. Identifiers come from information_schema and are always
//     backquoted. The only SQL text taken from outside is trusted configuration: a
//     Restriction's SQL condition and a configured key source, as in DataJoint.
//     MySQL's error numbers are read in one place, failure.go (Classify and its helpers).
//  7. Keys are typed by the target's column types (Target.ParseKey and friends); a key with
//     missing, extra or mistyped columns is ErrBadKey and touches no row.
//  8. The jobs table is DataJoint's `~~name` table, column for column, plus four jetjobs
//     columns with defaults (attempts, lease_token, lease_expires, dispatched_time); an
//     existing DataJoint jobs table is adopted by adding them, never dropped: by Declare and
//     Refresh, and by the first write that needs them (Options.Adopted is told). Reads never
//     alter the table: they read a DataJoint table's missing columns as their defaults.
//
// # Choices where DataJoint leaves room
//
//   - Release (an interrupted job, e.g. SIGTERM) gives back its attempt: attempts is
//     decremented, so preemption never uses up a job's retry budget. An expired lease keeps its
//     attempt: a job that crashes its worker must not be retried forever.
//   - RetryErrors clears error_message and error_stack and resets attempts, like DataJoint's
//     "delete the error row, then refresh" which it replaces.
//   - A target row that already exists when a success is recorded is left as it is (INSERT …
//     ON DUPLICATE KEY UPDATE no-op): someone else finished the key.
//   - The message of a retried attempt is not stored; the last failure is, once attempts run
//     out and the worker records an error.
package jobsdb
