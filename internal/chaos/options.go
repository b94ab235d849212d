package chaos

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Defaults of a chaos run.
const (
	DefaultKeys        = 20_000
	DefaultDuration    = 4 * time.Minute
	DefaultDrain       = 90 * time.Second
	DefaultWorkers     = 4
	DefaultSchedulers  = 2
	DefaultConcurrency = 4
	DefaultNATS        = NATSCurrent
	// DefaultMaxSleep bounds the handler's random work time per call.
	DefaultMaxSleep = 50 * time.Millisecond
	// DefaultSlowPerMille calls in a thousand are slow: they work between slowMin and slowMax,
	// around the lease, so that a partition or a lost lease finds calls running.
	DefaultSlowPerMille = 10
	// DefaultFaultGapMin and DefaultFaultGapMax bound the quiet time between two faults.
	DefaultFaultGapMin = 1 * time.Second
	DefaultFaultGapMax = 4 * time.Second
	// DefaultHoldMin and DefaultHoldMax bound how long a lasting fault (partition, latency,
	// refusal, a stopped node) holds before it is healed. The upper end is beyond the lease, so
	// that leases do expire under a partition.
	DefaultHoldMin = 2 * time.Second
	DefaultHoldMax = 9 * time.Second
	// DefaultFeedShare is the share of the fault phase over which the keys are inserted, so that
	// work arrives while faults happen and the rest of the phase still hits a busy system.
	DefaultFeedShare = 0.6
	// DefaultInducedPerMille is how many keys per thousand always fail (at least one).
	DefaultInducedPerMille = 1
)

// The jetjobs settings of a chaos run: short leases and intervals, so that recoveries happen
// within seconds.
const (
	leaseSeconds   = 4
	ackWaitSeconds = 2
	refreshSeconds = 1
	workerGrace    = 5 * time.Second
	slowMin        = leaseSeconds * time.Second / 2
	slowMax        = leaseSeconds * time.Second * 2
)

// NATS server kinds.
const (
	// NATS29 is Debian's nats-server binary (2.9.10), the oldest server jetjobs supports.
	NATS29 = "2.9"
	// NATSCurrent is the nats-server of this module's go.mod, built as a program (natsd).
	NATSCurrent = "current"
)

// NoFaults as the only fault kind runs without faults.
const NoFaults = "none"

// DebianNATSServer is where Debian installs nats-server.
const DebianNATSServer = "/usr/sbin/nats-server"

// Options configure a chaos run. The zero value of a field means its default.
type Options struct {
	// Seed of the fault schedule and of the choice of induced-error keys.
	Seed uint64
	// Keys is the number of keys of the pipeline (subject → session → __analysis). Default
	// DefaultKeys.
	Keys int
	// Duration of the fault phase. Default DefaultDuration.
	Duration time.Duration
	// Drain is how long, after the faults are healed, the system may take to finish every job.
	// Default DefaultDrain.
	Drain time.Duration
	// Workers and Schedulers are the numbers of processes kept running. Defaults
	// DefaultWorkers, DefaultSchedulers.
	Workers, Schedulers int
	// Concurrency is each worker's -j. Default DefaultConcurrency.
	Concurrency int
	// NATS is NATS29 or NATSCurrent. Default DefaultNATS.
	NATS string
	// Cluster runs a three-node JetStream cluster with streams replicated three times instead
	// of one server.
	Cluster bool
	// Faults lists the fault kinds to use (see FaultKinds); empty means all that apply, and
	// NoFaults alone none (a baseline run that proves the checker quiet).
	Faults []string
	// MaxSleep bounds the handler's random work time. Default DefaultMaxSleep.
	MaxSleep time.Duration
	// SlowPerMille is how many calls in a thousand work for seconds (around the lease) instead.
	// Default DefaultSlowPerMille; negative: none.
	SlowPerMille int
	// FaultGapMin, FaultGapMax, HoldMin and HoldMax shape the schedule (see the defaults).
	FaultGapMin, FaultGapMax, HoldMin, HoldMax time.Duration
	// Dir is where the run's directory is made. Default os.TempDir().
	Dir string
	// Keep keeps the run's directory (logs of every process, the call log, the servers' data)
	// when the run fails, and says where it is.
	Keep bool
	// BinDir holds prebuilt scheduler, worker, jobsctl and natsd programs; empty: build them.
	BinDir string
	// Log receives the progress of the run (faults, phases); nil discards it.
	Log io.Writer
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Keys, DefaultKeys)
	def(&o.Workers, DefaultWorkers)
	def(&o.Schedulers, DefaultSchedulers)
	def(&o.Concurrency, DefaultConcurrency)
	if o.SlowPerMille == 0 {
		o.SlowPerMille = DefaultSlowPerMille
	}
	o.SlowPerMille = max(o.SlowPerMille, 0)
	defD(&o.Duration, DefaultDuration)
	defD(&o.Drain, DefaultDrain)
	defD(&o.MaxSleep, DefaultMaxSleep)
	defD(&o.FaultGapMin, DefaultFaultGapMin)
	defD(&o.FaultGapMax, DefaultFaultGapMax)
	defD(&o.HoldMin, DefaultHoldMin)
	defD(&o.HoldMax, DefaultHoldMax)
	if o.NATS == "" {
		o.NATS = DefaultNATS
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}

// validate reports bad options; the command line turns it into exit code 2.
func (o Options) validate() error {
	var problems []string
	if o.NATS != NATS29 && o.NATS != NATSCurrent {
		problems = append(problems, fmt.Sprintf("nats %q: want %q or %q", o.NATS, NATS29, NATSCurrent))
	}
	if o.FaultGapMax < o.FaultGapMin || o.HoldMax < o.HoldMin {
		problems = append(problems, "a maximum gap or hold is below its minimum")
	}
	if o.MaxSleep >= time.Second {
		problems = append(problems, fmt.Sprintf("max sleep %v: want less than a second", o.MaxSleep))
	}
	for _, f := range o.Faults {
		if f != NoFaults && !slices.Contains(FaultKinds(), f) {
			problems = append(problems, fmt.Sprintf("unknown fault %q (known: %s)", f, strings.Join(FaultKinds(), ", ")))
		}
	}
	if slices.Contains(o.Faults, FaultNATSNodeDown) && !o.Cluster {
		problems = append(problems, "fault "+FaultNATSNodeDown+" needs a cluster (--cluster); with one server, use "+FaultNATSKill)
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrUsage, strings.Join(problems, "; "))
	}
	return nil
}
