// Command demo is `make demo`: it runs the sample pipeline of this directory (pipeline.sql,
// analysis.sh, jetjobs.json) with the scheduler, a worker and jobsctl from bin/, against the
// MySQL server at JETJOBS_MYSQL_DSN or a private one it starts. See package internal/demo and
// the README.
//
// Run it from the project's directory: go run ./demo (after make build), or make demo.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/demo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `Usage: demo [flags]

Runs the jetjobs demo: creates the sample pipeline in its own database, starts the scheduler
with an embedded NATS server and a worker with a progress bar, and shows jobsctl progress and
jobsctl errors once every key is computed or failed. Run it from the project's directory after
make build (make demo does both).

MySQL: the server at $` + config.EnvMySQLDSN + ` (default ` + config.DefaultMySQLDSN + `) when one
answers there; otherwise a private MariaDB or MySQL server started from the mariadbd or mysqld
binary of this machine, stopped at the end.

On a terminal the programs keep running once the pipeline is done, for you to explore, until
Ctrl-C. When stdin is not a terminal, or with ` + demo.EnvExit + `=1, the demo ends by itself.
Ctrl-C stops everything it started; a second Ctrl-C kills it at once.

Exit status: 0 done, 1 failure, 2 bad usage, 130 interrupted before the pipeline was done.

Flags:
`

func run(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	var o demo.Options
	fs.StringVar(&o.Bin, "bin", demo.DefaultBin, "directory of the scheduler, worker and jobsctl programs")
	fs.StringVar(&o.Assets, "assets", demo.DefaultAssets, "directory of the demo's pipeline.sql, analysis.sh and jetjobs.json")
	fs.StringVar(&o.State, "state", demo.DefaultState, "the demo's own directory: logs, NATS store, a private MySQL server's data")
	fs.StringVar(&o.Database, "database", demo.DefaultDatabase, "the demo database, dropped and created again on every run")
	fs.IntVarP(&o.Concurrency, "concurrency", "j", demo.DefaultConcurrency, "jobs the worker runs at once")
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "demo: unexpected arguments %q\n", fs.Args())
		return 2
	}
	o.MySQLDSN = os.Getenv(config.EnvMySQLDSN)
	o.Exit = os.Getenv(demo.EnvExit) == "1" || !term.IsTerminal(int(stdin.Fd()))
	o.Stdout, o.Stderr = stdout, stderr
	d := demo.New(o)

	// The first Ctrl-C (or SIGTERM) stops everything in order; a second one kills at once.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		cancel()
		if _, ok := <-sigs; ok {
			d.Kill()
		}
	}()

	err := d.Run(ctx)
	switch {
	case err == nil:
		fmt.Fprintln(stdout, "demo finished; nothing it started is left running")
		return 0
	case errors.Is(err, demo.ErrInterrupted):
		fmt.Fprintln(stdout, "demo interrupted; nothing it started is left running")
		return 130
	default:
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
}
