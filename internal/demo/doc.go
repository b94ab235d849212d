// Package demo is `make demo`: the first five minutes with jetjobs on one machine.
//
// It runs the sample pipeline of demo/ (DataJoint's subject → session → __analysis, with the
// shell handler demo/analysis.sh) with the real programs from bin/, as a user would:
//
//  1. MySQL: the server at JETJOBS_MYSQL_DSN (default root@tcp(127.0.0.1:3306)/) when one
//     answers there, otherwise a private MariaDB or MySQL server started from the binary
//     installed on the machine (package mysqlserver), with its data under the state directory
//     (.demo/mysql).
//  2. The demo database (jetjobs_demo) is dropped and created again from demo/pipeline.sql, so
//     every run starts from the same state.
//  3. jobsctl refresh queues one subject's sessions at priority 1, ahead of the rest.
//  4. The scheduler runs with an embedded NATS server on a free loopback port, its JetStream
//     store under the state directory (.demo/nats), and refreshes the other keys at the
//     default priority.
//  5. A worker runs the handler with a progress bar (on a terminal).
//  6. Once every key is computed or failed, jobsctl progress and jobsctl errors show the
//     outcome. On a terminal the programs keep running for the user to explore until Ctrl-C;
//     when stdin is not a terminal, or with JETJOBS_DEMO_EXIT=1, the demo ends by itself.
//
// Invariants:
//   - Nothing the demo started outlives it. Every program runs in its own process group (so a
//     Ctrl-C on the terminal reaches the demo only, which stops them in order: worker,
//     scheduler, then the MySQL server) and with a parent-death signal (so a killed demo does
//     not leave them behind). Each stop signals the process group, waits, and kills the group
//     when the wait runs out; a second Ctrl-C kills at once. The worker kills its handlers'
//     process groups itself.
//   - The demo only touches its own database on a shared server, and only its state
//     directory on disk.
//   - The pid of every server and program that runs in the background is printed as "(pid N)",
//     so that a test can check they are gone (jobsctl runs are waited for in place).
package demo
