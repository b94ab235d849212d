package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Defaults of a soak run.
const (
	DefaultSoakRate        = 1000
	DefaultSoakDuration    = 10 * time.Minute
	DefaultSoakInterval    = 10 * time.Second
	DefaultSoakWorkers     = 2
	DefaultSoakConcurrency = 16
	// soakInsertInterval is the pace of the parent-row inserts.
	soakInsertInterval = 100 * time.Millisecond
	// soakSessions is the number of sessions per subject in the soak's pipeline.
	soakSessions = 1000
)

// Growth verdict: a series grew without bound when its mean over the last quarter of the run
// exceeds growthFactor times its mean over the second quarter (after the warm-up) by more than
// its floor, which ignores noise in small numbers.
const growthFactor = 1.5

// soakHandler prints an empty row: the worker fills in the key, result takes its default.
const soakHandler = "#!/bin/sh\necho '{}'\n"

// SoakOptions configure a soak run. The zero value of a field means its default.
type SoakOptions struct {
	// Rate is how many parent rows (so jobs) are inserted per second. Default DefaultSoakRate.
	Rate int
	// Duration of the load. Default DefaultSoakDuration.
	Duration time.Duration
	// Interval between two samples. Default DefaultSoakInterval.
	Interval time.Duration
	// Workers and Concurrency: worker processes and each one's -j. Defaults
	// DefaultSoakWorkers, DefaultSoakConcurrency.
	Workers, Concurrency int
	// NATS is NATS29 or NATSCurrent. Default DefaultNATS.
	NATS string
	// Dir, BinDir and Log as in Options.
	Dir, BinDir string
	Log         io.Writer
}

// SoakReport is what a soak run measured.
type SoakReport struct {
	Samples []SoakSample
	// Grew names every series that grew without bound, with its early and late means.
	Grew []string
	// Exited lists programs that exited during the run.
	Exited []string
}

// OK reports whether nothing grew and no program exited.
func (r *SoakReport) OK() bool { return len(r.Grew) == 0 && len(r.Exited) == 0 }

// SoakSample is one measurement.
type SoakSample struct {
	At                      time.Duration
	Inserted, Computed      int
	Lag                     time.Duration // age of the oldest due pending job
	StreamDepth             int
	MySQLConns, NATSConns   int
	WorkerRSS, SchedulerRSS []float64 // bytes, per process
	WorkerGoroutines        []float64
	SchedulerGoroutines     []float64
}

func (s SoakSample) String() string {
	mb := func(v []float64) string {
		var parts []string
		for _, x := range v {
			parts = append(parts, strconv.Itoa(int(x/(1<<20))))
		}
		return strings.Join(parts, ",")
	}
	ints := func(v []float64) string {
		var parts []string
		for _, x := range v {
			parts = append(parts, strconv.Itoa(int(x)))
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprintf("at %4.0fs: inserted %d computed %d backlog %d lag %.2fs depth %d | worker rss %s MB goroutines %s | scheduler rss %s MB goroutines %s | mysql conns %d | nats conns %d",
		s.At.Seconds(), s.Inserted, s.Computed, s.Inserted-s.Computed, s.Lag.Seconds(), s.StreamDepth,
		mb(s.WorkerRSS), ints(s.WorkerGoroutines), mb(s.SchedulerRSS), ints(s.SchedulerGoroutines), s.MySQLConns, s.NATSConns)
}

// Soak inserts parent rows at a steady rate for a while, so that the scheduler's refresh
// creates the jobs and the workers compute them with a cheap handler, and samples every
// interval the programs' memory and goroutines, the servers' connections, the stream's depth
// and the lag of due jobs. At the end it says whether anything grew without bound.
func Soak(ctx context.Context, opts SoakOptions) (*SoakReport, error) {
	if opts.Rate <= 0 {
		opts.Rate = DefaultSoakRate
	}
	if opts.Duration <= 0 {
		opts.Duration = DefaultSoakDuration
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultSoakInterval
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultSoakWorkers
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultSoakConcurrency
	}
	if opts.NATS == "" {
		opts.NATS = DefaultNATS
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.NATS != NATS29 && opts.NATS != NATSCurrent {
		return nil, fmt.Errorf("%w: nats %q: want %q or %q", ErrUsage, opts.NATS, NATS29, NATSCurrent)
	}
	dir, err := os.MkdirTemp(opts.Dir, "jetjobs-soak-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	s := &soak{opts: opts, dir: dir, log: &runLog{w: opts.Log, t0: time.Now(), name: "soak"}}
	defer s.cleanup()
	return s.run(ctx)
}

type soak struct {
	opts       SoakOptions
	dir        string
	log        *runLog
	mysql      *mysqlWorld
	nats       *natsWorld
	workers    []*proc
	schedulers []*proc
	stream     string
}

func (s *soak) run(ctx context.Context) (*SoakReport, error) {
	o := s.opts
	bins := o.BinDir
	if bins == "" {
		s.log.printf("building the programs")
		b, remove, err := Build()
		if err != nil {
			return nil, fmt.Errorf("%w (run inside the jetjobs module, or give prebuilt programs with --bin)", err)
		}
		defer remove()
		bins = b
	}
	natsBin := binPath(bins, "natsd")
	if o.NATS == NATS29 {
		natsBin = DebianNATSServer
	}
	var err error
	if s.mysql, err = startMySQL(ctx, s.dir); err != nil {
		return nil, err
	}
	if s.nats, err = startNATS(ctx, s.dir, natsBin, false, s.log); err != nil {
		return nil, err
	}
	total := int(float64(o.Rate) * o.Duration.Seconds())
	subjects := total/soakSessions + 1
	for _, q := range []string{
		"CREATE TABLE subject (subject_id int NOT NULL, PRIMARY KEY (subject_id))",
		"CREATE TABLE session (subject_id int NOT NULL, session_id int NOT NULL, PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id) REFERENCES subject (subject_id))",
		"CREATE TABLE " + targetTable + " (subject_id int NOT NULL, session_id int NOT NULL, result float NOT NULL DEFAULT 0, PRIMARY KEY (subject_id, session_id), FOREIGN KEY (subject_id, session_id) REFERENCES session (subject_id, session_id))",
		fmt.Sprintf("INSERT INTO subject SELECT seq FROM seq_0_to_%d", subjects-1),
	} {
		if _, err := s.mysql.exec(ctx, q); err != nil {
			return nil, fmt.Errorf("create the pipeline: %w", err)
		}
	}
	handler := filepath.Join(s.dir, "soak-handler")
	if err := os.WriteFile(handler, []byte(soakHandler), 0o755); err != nil {
		return nil, err
	}
	cfg := map[string]any{
		"mysql":  map[string]any{"dsn": s.mysql.schedulerDSN()},
		"nats":   map[string]any{"url": s.nats.urls(), "subject_prefix": subjectPrefix, "ack_wait": ackWaitSeconds},
		"jobs":   map[string]any{"lease_duration": leaseSeconds, "refresh_interval": refreshSeconds},
		"tables": []map[string]any{{"table": database + "." + targetTable}},
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	config := filepath.Join(s.dir, "jetjobs.json")
	if err := os.WriteFile(config, data, 0o644); err != nil {
		return nil, err
	}
	start := func(program string, i int, args ...string) (*proc, error) {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s-%d", program, i+1)
		p, err := startProc(name, filepath.Join(s.dir, name+".log"), nil, binPath(bins, program),
			append([]string{"--config", config, "--metrics-addr", addr}, args...)...)
		if err != nil {
			return nil, err
		}
		p.metrics = addr
		return p, nil
	}
	for i := range 2 {
		p, err := start("scheduler", i)
		if err != nil {
			return nil, err
		}
		s.schedulers = append(s.schedulers, p)
	}
	for i := range o.Workers {
		p, err := start("worker", i, "--mysql", workerUser+"@tcp("+s.mysql.addr+")/",
			"--exec", handler, "-j", strconv.Itoa(o.Concurrency), "--suppress-errors")
		if err != nil {
			return nil, err
		}
		s.workers = append(s.workers, p)
	}
	s.log.printf("%d jobs/s for %v (%d jobs), %d workers (-j %d), 2 schedulers, NATS %s; a sample every %v",
		o.Rate, o.Duration, total, o.Workers, o.Concurrency, o.NATS, o.Interval)

	// The load: parent rows at the rate, in small batches, on a fixed clock.
	loadCtx, stopLoad := context.WithTimeout(ctx, o.Duration)
	defer stopLoad()
	inserted := make(chan int, 1)
	go func() { inserted <- s.insert(loadCtx, total) }()

	rep := &SoakReport{}
	t0 := time.Now()
	ticker := time.NewTicker(o.Interval)
	defer ticker.Stop()
	var last int
	exited := map[*proc]bool{}
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("interrupted: %w", ctx.Err())
		case n := <-inserted:
			last, done = n, true
		case <-ticker.C:
		}
		sample := s.sample(ctx, time.Since(t0))
		if done {
			sample.Inserted = last
		}
		rep.Samples = append(rep.Samples, sample)
		s.log.printf("%s", sample)
		for _, p := range append(slices.Clone(s.workers), s.schedulers...) {
			if p.exited() && !exited[p] {
				exited[p] = true
				rep.Exited = append(rep.Exited, fmt.Sprintf("%s (%s)", p.name, p.exitStatus()))
				s.log.printf("%s exited (%s):\n%s", p.name, p.exitStatus(), indent(p.logTail(8)))
			}
		}
	}
	rep.Grew = growth(rep.Samples)
	return rep, nil
}

// insert adds rate rows per second until ctx ends or total rows are in; it returns how many.
func (s *soak) insert(ctx context.Context, total int) int {
	perTick := max(1, int(float64(s.opts.Rate)*soakInsertInterval.Seconds()))
	next := time.Now()
	n := 0
	for n < total {
		var values []string
		for k := n; k < min(n+perTick, total); k++ {
			values = append(values, fmt.Sprintf("(%d,%d)", k/soakSessions, k%soakSessions))
		}
		if _, err := s.mysql.exec(ctx, "INSERT INTO session VALUES "+strings.Join(values, ",")); err != nil {
			if ctx.Err() != nil {
				return n
			}
			s.log.printf("insert: %v", err)
			continue
		}
		n += len(values)
		next = next.Add(soakInsertInterval)
		if !sleepCtx(ctx, time.Until(next)) {
			return n
		}
	}
	return n
}

// sample takes one measurement; what cannot be read is left zero and said in the log.
func (s *soak) sample(ctx context.Context, at time.Duration) SoakSample {
	sm := SoakSample{At: at}
	var err error
	if sm.Inserted, err = s.mysql.count(ctx, "SELECT COUNT(*) FROM session"); err != nil {
		s.log.printf("sample: %v", err)
	}
	sm.Computed, _ = s.mysql.count(ctx, "SELECT COUNT(*) FROM "+targetTable)
	lagMicros, _ := s.mysql.count(ctx, "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(scheduled_time), NOW(3)) FROM `"+jobsTable+"` WHERE status = 'pending' AND scheduled_time <= NOW(3)")
	sm.Lag = time.Duration(lagMicros) * time.Microsecond
	sm.MySQLConns, _ = s.mysql.count(ctx, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER IN (?, ?)", workerUser, schedulerUser)
	if sm.NATSConns, err = s.nats.connections(ctx); err != nil {
		s.log.printf("sample: %v", err)
	}
	sm.StreamDepth = s.streamDepth(ctx)
	for _, p := range s.workers {
		rss, gor := processMetrics(ctx, p)
		sm.WorkerRSS, sm.WorkerGoroutines = append(sm.WorkerRSS, rss), append(sm.WorkerGoroutines, gor)
	}
	for _, p := range s.schedulers {
		rss, gor := processMetrics(ctx, p)
		sm.SchedulerRSS, sm.SchedulerGoroutines = append(sm.SchedulerRSS, rss), append(sm.SchedulerGoroutines, gor)
	}
	return sm
}

// processMetrics reads a program's resident memory and goroutines from its /metrics.
func processMetrics(ctx context.Context, p *proc) (rss, goroutines float64) {
	page, code, err := httpGet(ctx, "http://"+p.metrics+"/metrics")
	if err != nil || code != 200 {
		return 0, 0
	}
	v := promValues(page, "process_resident_memory_bytes", "go_goroutines")
	return v["process_resident_memory_bytes"], v["go_goroutines"]
}

func (s *soak) streamDepth(ctx context.Context) int {
	nc, js, err := s.nats.connect()
	if err != nil {
		return 0
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if s.stream == "" {
		if s.stream, err = js.StreamNameBySubject(ctx, streamSubject(subjectPrefix)); err != nil {
			return 0
		}
	}
	st, err := js.Stream(ctx, s.stream)
	if err != nil {
		return 0
	}
	return int(st.CachedInfo().State.Msgs)
}

func (s *soak) cleanup() {
	for _, p := range append(slices.Clone(s.workers), s.schedulers...) {
		if !p.exited() {
			p.stop(syscall.SIGTERM, stopTimeout)
		}
	}
	if s.nats != nil {
		s.nats.close()
	}
	if s.mysql != nil {
		s.mysql.close(false)
	}
}

// series are the measurements checked for growth, with the floor below which a rise is noise.
var series = []struct {
	name  string
	floor float64
	unit  string
	scale float64
	get   func(SoakSample) float64
}{
	{"worker RSS", 32 << 20, "MB", 1 << 20, func(s SoakSample) float64 { return maxOf(s.WorkerRSS) }},
	{"worker goroutines", 50, "", 1, func(s SoakSample) float64 { return maxOf(s.WorkerGoroutines) }},
	{"scheduler RSS", 32 << 20, "MB", 1 << 20, func(s SoakSample) float64 { return maxOf(s.SchedulerRSS) }},
	{"scheduler goroutines", 50, "", 1, func(s SoakSample) float64 { return maxOf(s.SchedulerGoroutines) }},
	{"MySQL connections", 5, "", 1, func(s SoakSample) float64 { return float64(s.MySQLConns) }},
	{"NATS connections", 3, "", 1, func(s SoakSample) float64 { return float64(s.NATSConns) }},
	{"stream depth", 2000, "", 1, func(s SoakSample) float64 { return float64(s.StreamDepth) }},
	{"lag", 5, "s", 1, func(s SoakSample) float64 { return s.Lag.Seconds() }},
	{"backlog", 5000, "", 1, func(s SoakSample) float64 { return float64(s.Inserted - s.Computed) }},
}

// growth compares each series' second quarter with its last quarter.
func growth(samples []SoakSample) []string {
	n := len(samples)
	if n < 8 {
		return nil
	}
	mean := func(from, to int, get func(SoakSample) float64) float64 {
		sum := 0.0
		for _, s := range samples[from:to] {
			sum += get(s)
		}
		return sum / float64(to-from)
	}
	var grew []string
	for _, sr := range series {
		early := mean(n/4, n/2, sr.get)
		late := mean(n-n/4, n, sr.get)
		if late > early*growthFactor && late-early > sr.floor {
			grew = append(grew, fmt.Sprintf("%s %.1f%s → %.1f%s", sr.name, early/sr.scale, sr.unit, late/sr.scale, sr.unit))
		}
	}
	return grew
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = max(m, x)
	}
	if math.IsInf(m, -1) {
		return 0
	}
	return m
}
