// Package e2e holds the end-to-end tests: the built scheduler, worker and jobsctl programs run
// as separate processes against a real MariaDB/MySQL and real NATS servers (embedded, and the
// external server on 127.0.0.1:4222), with an --exec handler that logs every call.
package e2e
