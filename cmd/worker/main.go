// Command worker takes due jobs from NATS JetStream, reserves them in MySQL, runs a handler
// and records the outcome. See `worker --help` and the README.
package main

import (
	"os"

	"github.com/jetjobs/jetjobs/internal/workercmd"
)

func main() {
	os.Exit(workercmd.Main(os.Args[1:], os.Stdout, os.Stderr))
}
