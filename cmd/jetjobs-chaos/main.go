// Command jetjobs-chaos proves jetjobs under faults (the chaos run, the default) and under
// steady load (soak). Run "jetjobs-chaos --help" and "jetjobs-chaos soak --help".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/jetjobs/jetjobs/internal/chaos"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := chaos.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
