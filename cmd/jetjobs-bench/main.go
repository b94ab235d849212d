// Command jetjobs-bench is jetjobs' end-to-end benchmark: the real scheduler and workers over
// a pipeline of N keys, one line of figures per run. Run "jetjobs-bench --help".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/jetjobs/jetjobs/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
