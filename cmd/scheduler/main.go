// Command scheduler runs the jetjobs scheduler: for every target table, one scheduler among
// all those running leads (a MySQL named lock), refreshes the table's jobs from its key
// source, recovers expired leases and publishes due jobs to NATS JetStream for the workers.
//
// Run "scheduler --help" for the flags and environment variables.
package main

import (
	"os"

	"github.com/jetjobs/jetjobs/internal/schedulercmd"
)

func main() {
	os.Exit(schedulercmd.Main(os.Args[1:], os.Stdout, os.Stderr))
}
