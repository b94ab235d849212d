// Command natsd is the current nats-server (the module github.com/nats-io/nats-server/v2 that
// jetjobs builds with) as a program of its own, so that the chaos harness can run, crash and
// restart it as a separate process next to the Debian binary /usr/sbin/nats-server. It takes
// nats-server's own flags (typically -c FILE) and behaves as nats-server does, signals included.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	fs := flag.NewFlagSet("natsd", flag.ExitOnError)
	usage := func() {
		fmt.Fprintln(os.Stderr, "usage: natsd [nats-server flags], e.g. natsd -c nats.conf")
		os.Exit(2)
	}
	fs.Usage = usage
	opts, err := server.ConfigureOptions(fs, os.Args[1:], server.PrintServerAndExit, usage, server.PrintTLSHelpAndDie)
	if err != nil {
		server.PrintAndDie("natsd: " + err.Error())
	}
	s, err := server.NewServer(opts)
	if err != nil {
		server.PrintAndDie("natsd: " + err.Error())
	}
	s.ConfigureLogger()
	if err := server.Run(s); err != nil {
		server.PrintAndDie("natsd: " + err.Error())
	}
	s.WaitForShutdown()
}
