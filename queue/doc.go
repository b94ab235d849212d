// Package queue is the JetStream side of jetjobs: it dispatches due jobs to workers. MySQL
// (package jobsdb) is the source of truth for every job; a message in JetStream only says "this
// key may be due, go and look". Losing a message delays a job until the scheduler republishes
// it; a duplicate or late message costs a failed reservation in MySQL. Nothing here decides a
// job's state. The package speaks JetStream and nothing else.
//
// # Layout on the server
//
// One WorkQueue stream per target table (see [Table.StreamName]), file storage, capturing
//
//	<prefix>.<schema>.<table>.*.*
//
// A job's message goes to a subject of its own,
//
//	<prefix>.<schema>.<table>.p<priority>.<keyhash>
//
// where keyhash is the hex of the first 16 bytes of the SHA-256 of the key's canonical JSON
// (the message body) and priority is DataJoint's signed tinyint (p5, p-3). Schema and table
// names are escaped for subjects and stream names deterministically and injectively: bytes
// outside [A-Za-z0-9_] become "-xx" (two lowercase hex digits), so "-" only ever starts an
// escape; stream names join the escaped prefix, schema and table with "--", which an escaped
// part never contains.
//
// Each priority has one durable pull consumer, named "p<priority>", filtering
// <prefix>.<schema>.<table>.p<priority>.*: explicit acks, deliver-all, MaxDeliver unlimited
// (MySQL owns retries), AckWait from [Config]. The filters do not overlap, as a WorkQueue
// stream requires. Publish creates the consumer of each priority it publishes to; fetchers
// discover consumers by listing them.
//
// Idle workers are woken by a core NATS message on <prefix>.<schema>.<table>.wake, which the
// stream does not capture (its subjects have two tokens after the table). It carries the
// publisher's priorities, so a fetcher starts pulling from a new priority at once. The other
// core NATS subjects of a table, which the stream does not capture either: <base>.demand
// (workers' demand reports), <base>.due (a retry's due time, PublishDue), <base>.notify and
// <base>.inserted (keys that may be new, and rows inserted into the table: package notify;
// workers publish the keys of the successes they commit with PublishInserted).
//
// # Invariants
//
//  1. At most one message per key and priority is in the stream. The stream keeps one message
//     per subject (MaxMsgsPerSubject 1) and rejects a new one while the old is still there
//     (DiscardNewPerSubject), waiting or delivered-but-unacked; Publish reports that key as not
//     published, which is not an error. Once the message is acked it is removed, so the next
//     publish of the key is accepted: a needed republish is never swallowed, unlike a
//     Nats-Msg-Id deduplication window. (A job whose priority changed may briefly have a
//     message at each priority; the stale one fails its reservation in MySQL.)
//  2. Strict priority: [Fetcher.Fetch] returns messages of one priority only, the most urgent
//     (lowest number) that has any, and never more than asked for.
//  3. No bare Nak: a message is acked (confirmed by the server, [Msg.Ack]), delayed
//     ([Msg.NakWithDelay], at least [MinNakDelay]), kept alive ([Msg.InProgress]) or
//     terminated ([Msg.Term]). An instant redelivery loop cannot be started from here.
//  4. Self-healing: a stream or consumer deleted behind our back (jobsctl drop, a NATS server
//     restarted without its store) is recreated, idempotently, by Publish and by Fetch. Retries
//     are paced with exponential backoff; the package logs nothing and returns its errors.
//
// # Keep the backlog bounded
//
// The consumers filter on a wildcard over one subject per key, and some server work grows with
// the number of subjects waiting. Measured with 50,000 messages waiting on one priority:
// nats-server 2.15 walks the waiting subjects whenever a pull starts at the head of the
// stream (a pull of 100 took 20-50 ms instead of about 2 ms with 1,000 waiting); nats-server
// 2.9 does so whenever it counts a consumer's pending messages (consumer info, State: about
// 100 ms). Fetchers therefore list consumer names, not infos, and publishers re-check their
// consumers only every 30 s. The scheduler should dispatch due jobs in windows sized to the
// workers' capacity (State().Waiting tells what is still queued), not the whole backlog of
// MySQL at once: MySQL holds the jobs, the stream only what is about to be taken.
//
// # Acks are not fences
//
// JetStream applies an ack that arrives after AckWait even when the message was redelivered to
// another worker (nats-server#4786), and a crashed worker's messages are only redelivered after
// AckWait. Fencing lives in MySQL (lease tokens). Ack a message only after the MySQL write that
// settles it has committed.
//
// # Server compatibility
//
// nats-server 2.9 and later. Only features 2.9 has are used (DiscardNewPerSubject arrived in
// 2.9.0); Open checks that the server echoes the per-subject limits back and fails with
// [ErrUnsupportedServer] otherwise. A nats-server 2.9 does not answer a pull request for a
// consumer that does not exist (2.10+ answers "no responders"), so the Fetcher also treats a
// pull that gets no answer at all (nats.go gives up after a second) as a sign of a missing
// consumer and resynchronises.
//
// # Embedded server
//
// [StartEmbedded] runs nats-server in process for single-machine setups, on loopback only. Its
// file store syncs to disk every two minutes by default: a power loss can lose recent messages,
// which is acceptable because MySQL is the truth and the scheduler republishes lost messages.
package queue
