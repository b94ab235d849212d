// Command jobsctl inspects and steers jetjobs' job queues: progress, list, errors, show,
// refresh, ignore, retry, delete, drop, watch and stream. See 'jobsctl help' and README.md.
package main

import (
	"os"

	"github.com/jetjobs/jetjobs/internal/ctl"
)

func main() {
	os.Exit(ctl.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}
