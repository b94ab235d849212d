// Package cli is what jetjobs' three programs share, and only they: exit codes and the
// mapping of errors to them, the translation of the configuration into the libraries'
// options, the identity a process writes into the jobs it reserves, opening MySQL and NATS
// with retries and logs, logging, and the HTTP server for health and metrics.
//
// The libraries (worker, jobsdb, queue, tracing) and the services (internal/scheduler,
// internal/leadership) never import it: they take plain options and return errors a caller
// can test, and this package turns those into exit codes and messages for people.
package cli
