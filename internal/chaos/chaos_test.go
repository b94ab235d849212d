package chaos_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/jetjobs/jetjobs/internal/buildtest"
	"github.com/jetjobs/jetjobs/internal/chaos"
)

var binDir string

func TestMain(m *testing.M) {
	dir, remove, err := chaos.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	// The harness's connections die with every MySQL fault and are retried; the driver's
	// complaints about them are noise.
	mysql.SetLogger(log.New(io.Discard, "", 0))
	code := m.Run()
	remove()
	os.Exit(code)
}

// TestChaosShort is the chaos run of make test: 3,000 keys through two schedulers and four
// workers on Debian's NATS 2.9, under a fixed seed's schedule of faults that hits the workers,
// the scheduler, NATS and MySQL; every count of the checker must be zero.
func TestChaosShort(t *testing.T) {
	progress := &buildtest.Output{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := chaos.Run(ctx, chaos.Options{
		Seed:     20261206,
		Keys:     3000,
		Duration: 60 * time.Second,
		Drain:    45 * time.Second,
		NATS:     chaos.NATS29,
		Faults: []string{
			chaos.FaultWorkerKill, chaos.FaultWorkerTermGroup, chaos.FaultSchedulerKill,
			chaos.FaultMySQLKillQuery, chaos.FaultMySQLRestart, chaos.FaultMySQLPartition,
			chaos.FaultNATSKill, chaos.FaultNATSDelete, chaos.FaultNATSPartition,
		},
		FaultGapMin: 500 * time.Millisecond,
		FaultGapMax: 2 * time.Second,
		HoldMin:     2 * time.Second,
		HoldMax:     7 * time.Second,
		BinDir:      binDir,
		Log:         progress,
	})
	if err != nil {
		t.Fatalf("the chaos run failed: %v\nprogress:\n%s", err, progress)
	}
	if !res.OK() {
		t.Errorf("%s\nprogress:\n%s", res.Report(), progress)
		return
	}
	if res.Faults < 9 {
		t.Errorf("only %d faults applied:\n%s\nprogress:\n%s", res.Faults, res.Report(), progress)
	}
	t.Log(res.Report())
}
