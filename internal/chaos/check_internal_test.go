package chaos

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/procfs"
)

const testWait = 10 * time.Second

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(watchInterval)
	}
}

func appendLine(t *testing.T, path, format string, args ...any) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, format+"\n", args...); err != nil {
		t.Fatal(err)
	}
}

func newTestWatcher(t *testing.T) (*callWatcher, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "calls.log")
	w, err := newCallWatcher(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	return w, path
}

func TestCallWatcher(t *testing.T) {
	t.Parallel()

	t.Run("a handler that dies without an end line ends when it was last seen alive", func(t *testing.T) {
		t.Parallel()
		w, path := newTestWatcher(t)
		handler := exec.Command("sleep", "60")
		if err := handler.Start(); err != nil {
			t.Fatal(err)
		}
		st, ok := procfs.Read(handler.Process.Pid)
		if !ok {
			t.Fatal("no /proc entry for a running process")
		}
		start := time.Now()
		appendLine(t, path, "start 1:1 tokA %d %d %d %d", handler.Process.Pid, os.Getpid(), start.UnixNano(), st.StartTime)
		waitFor(t, "the watcher to see the handler alive", func() bool {
			calls, _ := w.snapshot()
			w.mu.Lock()
			defer w.mu.Unlock()
			return len(calls) == 1 && calls[0].lastAlive.After(start)
		})
		handler.Process.Kill()
		handler.Wait()
		killed := time.Now()
		waitFor(t, "the watcher to see the handler gone", func() bool { return w.running() == 0 })
		calls, bad := w.snapshot()
		w.mu.Lock()
		defer w.mu.Unlock()
		c := calls[0]
		if len(bad) > 0 || c.key != "1:1" || c.token != "tokA" || !c.end.IsZero() {
			t.Fatalf("call %+v, bad lines %q", c, bad)
		}
		if !c.until().Before(killed) || c.until().Before(start) {
			t.Errorf("interval end %v is not between the start %v and the kill %v", c.until(), start, killed)
		}
		if c.deadSeen.Before(c.lastAlive) {
			t.Errorf("seen dead at %v before last seen alive at %v", c.deadSeen, c.lastAlive)
		}
	})

	t.Run("a start line of a process that is not there (pid reused) is dead at once", func(t *testing.T) {
		t.Parallel()
		w, path := newTestWatcher(t)
		st, _ := procfs.Read(os.Getpid())
		appendLine(t, path, "start 1:2 - %d 1 %d %d", os.Getpid(), time.Now().UnixNano(), st.StartTime+1)
		waitFor(t, "the call to be read and found dead", func() bool {
			calls, _ := w.snapshot()
			return len(calls) == 1 && w.running() == 0
		})
	})

	t.Run("an end line ends the call; bad lines are kept", func(t *testing.T) {
		t.Parallel()
		w, path := newTestWatcher(t)
		t0 := time.Now()
		appendLine(t, path, "start 2:2 tok 999999 1 %d 5", t0.UnixNano())
		appendLine(t, path, "end 2:2 tok 999999 1 %d 5 ok", t0.Add(40*time.Millisecond).UnixNano())
		appendLine(t, path, "garbage")
		waitFor(t, "three lines read", func() bool {
			calls, bad := w.snapshot()
			return len(calls) == 1 && len(bad) == 1
		})
		calls, _ := w.snapshot()
		w.mu.Lock()
		defer w.mu.Unlock()
		if c := calls[0]; !c.until().Equal(t0.Add(40*time.Millisecond)) || c.outcome != "ok" {
			t.Errorf("call %+v: want it to end at its end line, ok", c)
		}
	})
}

// TestCheck feeds the checker a known final state and call log and checks every count.
func TestCheck(t *testing.T) {
	t.Parallel()
	w, path := newTestWatcher(t)
	t0 := time.Now().Add(-time.Minute)
	h := &harness{
		opts:    Options{Keys: 6, Drain: time.Second},
		log:     &runLog{w: io.Discard, t0: t0},
		induced: map[string]bool{"0:5": true},
		watcher: w,
		faults:  []faultRecord{{at: 9 * time.Second, healed: 12 * time.Second, kind: FaultMySQLPartition, detail: "partition for 3s"}},
	}
	ms := func(n int) int64 { return t0.Add(time.Duration(n) * time.Millisecond).UnixNano() }
	lines := []string{
		// 0:0 ran twice at once: the second call starts before the first one's end line.
		fmt.Sprintf("start 0:0 a 900001 1 %d 1", ms(10000)),
		fmt.Sprintf("start 0:0 b 900002 1 %d 2", ms(10050)),
		fmt.Sprintf("end 0:0 a 900001 1 %d 1 ok", ms(10100)),
		fmt.Sprintf("end 0:0 b 900002 1 %d 2 ok", ms(10150)),
		// 0:1 ran twice, one after the other: fine.
		fmt.Sprintf("start 0:1 a 900003 1 %d 3", ms(10000)),
		fmt.Sprintf("end 0:1 a 900003 1 %d 3 ok", ms(10100)),
		fmt.Sprintf("start 0:1 b 900004 1 %d 4", ms(10100)),
		fmt.Sprintf("end 0:1 b 900004 1 %d 4 ok", ms(10200)),
		// 0:5 is the induced error.
		fmt.Sprintf("start 0:5 a 900005 1 %d 5", ms(10000)),
		fmt.Sprintf("end 0:5 a 900005 1 %d 5 fail", ms(10010)),
	}
	for _, l := range lines {
		appendLine(t, path, "%s", l)
	}
	waitFor(t, "every line read", func() bool {
		calls, _ := w.snapshot()
		return len(calls) == 5 && w.running() == 0
	})
	snap := snapshot{
		computed: map[string]bool{"0:0": true, "0:1": true, "0:3": true},
		jobs: map[string]jobRow{
			"0:2": {status: "error", message: "Error 1317"}, // unexpected error: lost and error
			"0:3": {status: "reserved"},                     // computed, yet stuck reserved
			"0:4": {status: "pending"},                      // lost and stuck
			"0:5": {status: "error", message: "induced"},    // expected
		},
	}
	res := h.check(snap)
	if res.Lost != 2 || res.Double != 1 || res.Stuck != 2 || res.Errors != 1 || res.Faults != 1 {
		t.Fatalf("counts: %s\n%s", res.Summary(), strings.Join(res.Violations, "\n"))
	}
	want := []string{"double: key 0:0", "lost+error: key 0:2", "stuck: key 0:3", "lost+stuck: key 0:4"}
	all := strings.Join(res.Violations, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("no violation %q in:\n%s", w, all)
		}
	}
	if !strings.Contains(all, "faults around:") || !strings.Contains(all, FaultMySQLPartition) {
		t.Errorf("the double call does not name the fault around it:\n%s", all)
	}
	if res.OK() {
		t.Error("OK with violations")
	}
	if got := res.Summary(); !strings.HasPrefix(got, "chaos: keys=6 faults=1 lost=2 double=1 stuck=2 errors=1 seconds=") {
		t.Errorf("summary %q", got)
	}
}

func TestSoakGrowth(t *testing.T) {
	t.Parallel()
	samples := func(f func(i int) SoakSample) []SoakSample {
		var s []SoakSample
		for i := range 40 {
			s = append(s, f(i))
		}
		return s
	}
	flat := samples(func(i int) SoakSample {
		return SoakSample{WorkerRSS: []float64{30 << 20}, WorkerGoroutines: []float64{float64(20 + i%3)}, MySQLConns: 9, Lag: 100 * time.Millisecond}
	})
	if grew := growth(flat); len(grew) != 0 {
		t.Errorf("flat series reported as growing: %v", grew)
	}
	leaking := samples(func(i int) SoakSample {
		return SoakSample{WorkerRSS: []float64{30 << 20}, WorkerGoroutines: []float64{float64(20 + 10*i)}, Lag: time.Duration(i) * time.Second}
	})
	grew := growth(leaking)
	if len(grew) != 2 || !strings.HasPrefix(grew[0], "worker goroutines") || !strings.HasPrefix(grew[1], "lag") {
		t.Errorf("growth = %v, want worker goroutines and lag", grew)
	}
}
