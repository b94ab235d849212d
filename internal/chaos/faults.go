package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jetjobs/jetjobs/internal/faultproxy"
	"github.com/jetjobs/jetjobs/internal/procfs"
)

// Fault kinds, by the part of the system they hit.
const (
	FaultWorkerKill      = "worker-kill"       // SIGKILL a worker; a replacement starts
	FaultWorkerTerm      = "worker-term"       // SIGTERM a worker alone; a replacement starts
	FaultWorkerTermGroup = "worker-term-group" // SIGTERM a worker and its handlers' process groups
	FaultSchedulerKill   = "scheduler-kill"    // SIGKILL the leading scheduler; it is restarted
	FaultMySQLKillQuery  = "mysql-kill-query"  // KILL QUERY of random client connections
	FaultMySQLKillConn   = "mysql-kill-conn"   // KILL CONNECTION of random client connections
	FaultMySQLRestart    = "mysql-restart"     // SIGKILL or SIGTERM mariadbd, start it again
	FaultMySQLPartition  = "mysql-partition"   // workers ↔ MySQL blackholed for a while
	FaultMySQLLatency    = "mysql-latency"     // workers ↔ MySQL slowed for a while
	FaultMySQLReset      = "mysql-reset"       // every worker ↔ MySQL connection reset
	FaultMySQLRefuse     = "mysql-refuse"      // new worker ↔ MySQL connections refused for a while
	FaultNATSKill        = "nats-kill"         // kill -9 a NATS server, restart it on its store
	FaultNATSWipe        = "nats-wipe"         // kill -9 a NATS server, restart it with an empty store
	FaultNATSNodeDown    = "nats-node-down"    // cluster: stop one node for a while, then start it
	FaultNATSDelete      = "nats-delete-stream"
	FaultNATSPartition   = "nats-partition" // workers ↔ NATS blackholed for a while
	FaultNATSLatency     = "nats-latency"   // workers ↔ NATS slowed for a while
	FaultNATSReset       = "nats-reset"     // every worker ↔ NATS connection reset
	FaultNATSRefuse      = "nats-refuse"    // new worker ↔ NATS connections refused for a while
	FaultNetPartition    = "net-partition"  // workers cut off from MySQL and NATS at once for a while
)

// Bounds of the random parts of faults.
const (
	maxDown       = 2 * time.Second        // a crashed server stays down up to this long
	maxLatency    = 300 * time.Millisecond // per chunk and direction
	maxKillVictim = 3                      // connections killed at once
	// busyWait bounds the wait for a busy victim (a worker running handlers, a connection
	// running a statement); busyPoll is the pace of that wait.
	busyWait = 2 * time.Second
	busyPoll = 5 * time.Millisecond
)

// FaultKinds lists every fault kind, in a fixed order (the order a seed's choices index).
func FaultKinds() []string {
	return []string{
		FaultWorkerKill, FaultWorkerTerm, FaultWorkerTermGroup, FaultSchedulerKill,
		FaultMySQLKillQuery, FaultMySQLKillConn, FaultMySQLRestart, FaultMySQLPartition,
		FaultMySQLLatency, FaultMySQLReset, FaultMySQLRefuse,
		FaultNATSKill, FaultNATSWipe, FaultNATSNodeDown, FaultNATSDelete, FaultNATSPartition,
		FaultNATSLatency, FaultNATSReset, FaultNATSRefuse, FaultNetPartition,
	}
}

// faultRecord is one applied fault, for the report.
type faultRecord struct {
	at, healed time.Duration // since the start of the run
	kind       string
	detail     string
}

func (f faultRecord) String() string {
	return fmt.Sprintf("%8.3fs–%8.3fs %-18s %s", f.at.Seconds(), f.healed.Seconds(), f.kind, f.detail)
}

// enabledFaults is the list the schedule picks from.
func (h *harness) enabledFaults() []string {
	kinds := h.opts.Faults
	if len(kinds) == 0 {
		kinds = FaultKinds()
	}
	var out []string
	for _, k := range FaultKinds() {
		if !slices.Contains(kinds, k) {
			continue
		}
		if k == FaultNATSNodeDown && !h.opts.Cluster {
			continue // the single node going down is nats-kill
		}
		out = append(out, k)
	}
	return out
}

// runFaults applies faults one after another, with random gaps, until ctx ends; the fault
// holding when it ends is healed at once. The kinds come in rounds, each a random permutation
// of the enabled kinds, so that a run of a few rounds hits every part of the system.
func (h *harness) runFaults(ctx context.Context) {
	kinds := h.enabledFaults()
	if len(kinds) == 0 {
		<-ctx.Done()
		return
	}
	rng := h.rng
	var round []string
	for {
		if !sleepCtx(ctx, uniform(rng, h.opts.FaultGapMin, h.opts.FaultGapMax)) {
			return
		}
		if len(round) == 0 {
			round = slices.Clone(kinds)
			rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		}
		kind := round[0]
		round = round[1:]
		at := h.log.since()
		detail, err := h.applyFault(ctx, rng, kind)
		rec := faultRecord{at: at, healed: h.log.since(), kind: kind, detail: detail}
		if err != nil {
			h.log.printf("fault %s: not applied: %v", kind, err)
			continue
		}
		h.mu.Lock()
		h.faults = append(h.faults, rec)
		h.mu.Unlock()
		h.log.printf("fault %s", rec)
	}
}

// applyFault applies one fault, holds it (lasting faults), heals it and describes it.
func (h *harness) applyFault(ctx context.Context, rng *rand.Rand, kind string) (string, error) {
	hold := uniform(rng, h.opts.HoldMin, h.opts.HoldMax)
	// Healing must happen even when the phase ends during the hold.
	heal := context.WithoutCancel(ctx)
	switch kind {
	case FaultWorkerKill, FaultWorkerTerm, FaultWorkerTermGroup:
		return h.faultWorker(ctx, rng, kind)
	case FaultSchedulerKill:
		return h.faultScheduler(ctx, rng)

	case FaultMySQLKillQuery, FaultMySQLKillConn:
		what := "QUERY"
		if kind == FaultMySQLKillConn {
			what = "CONNECTION"
		}
		killed, err := h.mysql.kill(ctx, rng, what, 1+rng.IntN(maxKillVictim))
		if err != nil {
			return "", err
		}
		if len(killed) == 0 {
			return "", fmt.Errorf("no client connection to kill")
		}
		return strings.Join(killed, "; "), nil
	case FaultMySQLRestart:
		sig := syscall.SIGKILL
		if rng.IntN(2) == 0 {
			sig = syscall.SIGTERM
		}
		down := uniform(rng, 0, maxDown)
		if err := h.mysql.restart(heal, sig, down); err != nil {
			return "", fmt.Errorf("restart MariaDB: %w", err)
		}
		return fmt.Sprintf("%v, down %v", sig, down.Round(time.Millisecond)), nil
	case FaultMySQLPartition, FaultMySQLLatency, FaultMySQLReset, FaultMySQLRefuse:
		slots, scope := h.pickSlots(rng)
		var proxies []*faultproxy.Proxy
		for _, i := range slots {
			proxies = append(proxies, h.links[i].mysql)
		}
		detail, err := h.faultProxies(ctx, rng, kind, proxies, hold)
		return scope + ": " + detail, err

	case FaultNATSKill, FaultNATSWipe, FaultNATSNodeDown:
		node := h.nats.nodes[rng.IntN(len(h.nats.nodes))]
		sig, wipe, down := syscall.SIGKILL, kind == FaultNATSWipe, uniform(rng, 0, maxDown)
		if kind == FaultNATSNodeDown {
			sig, down = syscall.SIGTERM, hold
		}
		if err := h.nats.restart(ctx, node, sig, wipe, down); err != nil {
			return "", fmt.Errorf("restart nats %s: %w", node.name, err)
		}
		detail := fmt.Sprintf("node %s %v, down %v", node.name, sig, down.Round(time.Millisecond))
		if wipe {
			detail += ", store emptied"
		}
		if err := node.waitHealthy(heal, natsReadyTimeout); err != nil {
			detail += fmt.Sprintf(" (not healthy again: %v)", err)
		}
		return detail, nil
	case FaultNATSDelete:
		name, err := h.nats.deleteStream(ctx, h.prefix)
		if err != nil {
			return "", err
		}
		return "stream " + name, nil
	case FaultNetPartition:
		slots, scope := h.pickSlots(rng)
		var proxies []*faultproxy.Proxy
		for _, i := range slots {
			proxies = append(proxies, h.links[i].mysql)
			proxies = append(proxies, h.links[i].nats...)
		}
		detail, err := h.faultProxies(ctx, rng, "-partition", proxies, hold)
		return scope + ": MySQL and NATS " + detail, err
	case FaultNATSPartition, FaultNATSLatency, FaultNATSReset, FaultNATSRefuse:
		slots, scope := h.pickSlots(rng)
		var proxies []*faultproxy.Proxy
		for _, i := range slots {
			proxies = append(proxies, h.links[i].nats...)
		}
		detail, err := h.faultProxies(ctx, rng, kind, proxies, hold)
		return scope + ": " + detail, err
	}
	return "", fmt.Errorf("unknown fault kind %q", kind)
}

// pickSlots chooses the workers a network fault cuts off: all of them, or one (as when one
// machine loses its network while the others carry on).
func (h *harness) pickSlots(rng *rand.Rand) ([]int, string) {
	if rng.IntN(2) == 0 {
		all := make([]int, len(h.links))
		for i := range all {
			all[i] = i
		}
		return all, "all workers"
	}
	i := rng.IntN(len(h.links))
	h.mu.Lock()
	defer h.mu.Unlock()
	who := "no process"
	if w := h.workers[i]; w != nil {
		who = fmt.Sprintf("%s, pid %d", w.name, w.pid())
	}
	return []int{i}, fmt.Sprintf("worker slot %d (%s)", i, who)
}

// faultProxies applies a network fault to proxies: partitions, latency and refusals hold for
// hold, then heal; a reset is instant.
func (h *harness) faultProxies(ctx context.Context, rng *rand.Rand, kind string, proxies []*faultproxy.Proxy, hold time.Duration) (string, error) {
	var detail string
	switch {
	case strings.HasSuffix(kind, "-reset"):
		n := 0
		for _, p := range proxies {
			n += p.Reset()
		}
		return fmt.Sprintf("%d connections reset", n), nil
	case strings.HasSuffix(kind, "-partition"):
		for _, p := range proxies {
			p.Partition()
		}
		detail = "partition"
	case strings.HasSuffix(kind, "-refuse"):
		for _, p := range proxies {
			p.Refuse()
		}
		detail = "new connections refused"
	case strings.HasSuffix(kind, "-latency"):
		up, down := uniform(rng, 0, maxLatency), uniform(rng, 0, maxLatency)
		for _, p := range proxies {
			p.SetLatency(up, down)
		}
		detail = fmt.Sprintf("latency %v to the server, %v back", up.Round(time.Millisecond), down.Round(time.Millisecond))
	}
	began := time.Now()
	sleepCtx(ctx, hold)
	for _, p := range proxies {
		p.Heal()
	}
	return fmt.Sprintf("%s for %v", detail, time.Since(began).Round(time.Millisecond)), nil
}

// faultWorker kills or stops a random worker, preferring one that is running handlers at the
// time (it waits up to busyWait for one); the supervisor starts a replacement at once.
func (h *harness) faultWorker(ctx context.Context, rng *rand.Rand, kind string) (string, error) {
	first := rng.IntN(len(h.workers))
	deadline := time.Now().Add(busyWait)
	var w *proc
	for w == nil {
		h.mu.Lock()
		for j := range h.workers {
			i := (first + j) % len(h.workers)
			c := h.workers[i]
			if c != nil && !c.exited() && (len(procfs.Children(c.pid())) > 0 || time.Now().After(deadline)) {
				w = c
				h.workers[i] = nil // the supervisor fills the slot
				break
			}
		}
		h.mu.Unlock()
		if w == nil && !sleepCtx(ctx, busyPoll) {
			return "", ctx.Err()
		}
	}
	w.markStopping()
	if kind != FaultWorkerKill {
		// A stopped worker must still exit cleanly: note it when it does not.
		go func() {
			<-w.done
			if status := w.exitStatus(); status != "exit 0" {
				h.note("%s (pid %d), stopped by %s, ended with %s at %.3fs; last log lines:\n%s", w.name, w.pid(), kind, status, h.log.since().Seconds(), indent(w.logTail(8)))
			}
		}()
	}
	switch kind {
	case FaultWorkerKill:
		w.signal(syscall.SIGKILL)
		return fmt.Sprintf("%s (pid %d) SIGKILL", w.name, w.pid()), nil
	case FaultWorkerTerm:
		w.signal(syscall.SIGTERM)
		return fmt.Sprintf("%s (pid %d) SIGTERM", w.name, w.pid()), nil
	default:
		// The worker and each handler's process group, at once, as a terminal's Ctrl-C or a
		// container stop does.
		var groups []string
		kids := procfs.Children(w.pid())
		w.signal(syscall.SIGTERM)
		for _, pid := range kids {
			syscall.Kill(-pid, syscall.SIGTERM)
			groups = append(groups, fmt.Sprint(pid))
		}
		return fmt.Sprintf("%s (pid %d) SIGTERM with handler groups [%s]", w.name, w.pid(), strings.Join(groups, " ")), nil
	}
}

// faultScheduler kills the leading scheduler (a random one when no leader is known); the
// supervisor restarts it.
func (h *harness) faultScheduler(ctx context.Context, rng *rand.Rand) (string, error) {
	h.mu.Lock()
	scheds := slices.Clone(h.schedulers)
	h.mu.Unlock()
	victim, how := -1, "leader"
	for i, s := range scheds {
		if s != nil && !s.exited() && h.leads(ctx, s) {
			victim = i
			break
		}
	}
	if victim < 0 {
		victim, how = rng.IntN(len(scheds)), "no leader known: a random one"
	}
	h.mu.Lock()
	s := h.schedulers[victim]
	if s == nil || s.exited() || s != scheds[victim] {
		h.mu.Unlock()
		return "", fmt.Errorf("scheduler slot %d has no running scheduler", victim)
	}
	h.schedulers[victim] = nil
	h.mu.Unlock()
	s.markStopping()
	s.signal(syscall.SIGKILL)
	return fmt.Sprintf("%s (pid %d, %s) SIGKILL", s.name, s.pid(), how), nil
}

// leads asks a scheduler's /readyz whether it leads the table.
func (h *harness) leads(ctx context.Context, s *proc) bool {
	body, _, err := httpGet(ctx, "http://"+s.metrics+"/readyz")
	return err == nil && strings.Contains(body, "table "+h.table+": leader")
}

func uniform(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}
