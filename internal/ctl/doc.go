// Package ctl is jobsctl, the command-line tool that inspects and steers jetjobs' job queues:
// the jobs tables in MySQL (DataJoint's schema.~~table) and their JetStream streams.
//
// Commands are a table (registry in commands.go): each entry has a name, a summary, a flag set
// builder and a run function. Dispatch, 'jobsctl help', '--help' and the bash, zsh and fish
// completion scripts are all generated from it, so they cannot drift apart.
//
// Invariants:
//   - Key values from --key never reach SQL text: they are typed by their column
//     (jobsdb Target.KeyFromStrings) and passed to jobsdb as values, which sends them as
//     placeholders. An unknown column, a missing column of a whole key or a value of the wrong
//     type is a usage error (exit 2) that names the column, before any statement runs.
//   - --restrict is a trusted SQL condition, as DataJoint's string restrictions: it is for
//     operators with database privileges, never for untrusted input.
//   - Destructive commands that select every job (drop; delete without --status, --restrict or
//     --key) run only after a "y" on a terminal or with --yes; without either they change
//     nothing and exit 2.
//   - Field names of -o json and -o csv are snake_case, documented in 'jobsctl help output'
//     from the same column definitions that produce them, and never renamed.
//     The web console (serve, package internal/web) answers its JSON API with the same names
//     and formats for the same objects; serve_test.go compares the two.
//   - A jobs table declared by DataJoint is never dropped or rewritten: progress, list, errors
//     and show read it as it is; retry, which writes jetjobs' columns, adopts it first through
//     jobsdb Declare (adding the columns with their defaults), and says so on stderr.
//   - Exit codes: 0 success, 1 the operation failed, 2 bad usage or configuration.
//
// serve runs the web console (package internal/web) on the session's configuration, database
// and stream settings; it is read-only unless --allow-actions, and beyond loopback only with
// a token.
//
// Main is what cmd/jobsctl calls; Run takes an Env (streams, environment, terminal detection,
// time zone and clock) so tests run jobsctl in-process.
package ctl
