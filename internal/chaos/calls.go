package chaos

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetjobs/jetjobs/internal/procfs"
)

// handlerScript is the workers' --exec handler. Each call appends a start line and, unless it
// is killed, an end line to $CHAOS_CALLS (O_APPEND, one write per line):
//
//	start <key> <lease token or -> <handler pid> <worker pid> <unix ns> <handler start ticks>
//	end   <key> <lease token or -> <handler pid> <worker pid> <unix ns> <handler start ticks> ok|fail
//
// The start ticks (field 22 of /proc/<pid>/stat) tell a handler from a later process that
// reuses its pid. It works for a random time up to $CHAOS_MAX_SLEEP_MS, or, for
// $CHAOS_SLOW_PERMILLE calls in a thousand, between $CHAOS_SLOW_MIN_MS and $CHAOS_SLOW_MAX_MS
// (around the lease, so that partitions catch calls running); it fails (exit 3) for the keys in
// $CHAOS_FAIL_KEYS, and prints the target row. bash, for $EPOCHREALTIME and $RANDOM
// without extra processes: only sleep is one.
const handlerScript = `#!/bin/bash
k="$JETJOBS_KEY_SUBJECT_ID:$JETJOBS_KEY_SESSION_ID"
tok="${JETJOBS_LEASE_TOKEN:--}"
read -r -a st < /proc/$$/stat
ticks=${st[21]}
t=${EPOCHREALTIME//[!0-9]/}
echo "start $k $tok $$ $PPID ${t}000 $ticks" >> "$CHAOS_CALLS"
ms=$((RANDOM % (CHAOS_MAX_SLEEP_MS + 1)))
if ((RANDOM % 1000 < CHAOS_SLOW_PERMILLE)); then
  ms=$((CHAOS_SLOW_MIN_MS + (RANDOM * 32768 + RANDOM) % (CHAOS_SLOW_MAX_MS - CHAOS_SLOW_MIN_MS + 1)))
fi
printf -v frac %03d $((ms % 1000))
sleep "$((ms / 1000)).$frac"
case " $CHAOS_FAIL_KEYS " in
*" $k "*)
  t=${EPOCHREALTIME//[!0-9]/}
  echo "end $k $tok $$ $PPID ${t}000 $ticks fail" >> "$CHAOS_CALLS"
  echo "chaos: induced failure of key $k" >&2
  exit 3
  ;;
esac
t=${EPOCHREALTIME//[!0-9]/}
echo "end $k $tok $$ $PPID ${t}000 $ticks ok" >> "$CHAOS_CALLS"
echo "{\"result\": $JETJOBS_KEY_SESSION_ID.5}"
`

// handlerName is the script's file name (and so the handler processes' name in /proc).
const handlerName = "chaos-handler"

// watchInterval is how often the watcher reads the call log and looks at running handlers.
const watchInterval = 3 * time.Millisecond

// call is one run of the handler.
type call struct {
	key       string
	token     string
	hpid      int
	wpid      int
	ticks     uint64 // the handler's start time in /proc, with hpid its identity
	start     time.Time
	end       time.Time // from the end line; zero if the handler wrote none
	outcome   string    // ok, fail, or "" without an end line
	lastAlive time.Time // the last time /proc showed the handler alive (at least start)
	deadSeen  time.Time // the first time /proc showed it gone, if it died without an end line
}

// until is the end of the call's interval: its end line, or else the last time it was seen
// alive. Never later than the real end, so overlaps computed with it are real.
func (c *call) until() time.Time {
	if !c.end.IsZero() {
		return c.end
	}
	return c.lastAlive
}

// callWatcher tails the call log and watches the handlers that have started and not ended.
type callWatcher struct {
	path string
	file *os.File
	rest []byte // an incomplete last line

	mu    sync.Mutex
	calls []*call
	open  map[string]*call // by "hpid/ticks": started, no end line, not seen dead
	bad   []string         // unreadable lines

	stop chan struct{}
	done chan struct{}
}

func newCallWatcher(path string) (*callWatcher, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	w := &callWatcher{path: path, file: f, open: map[string]*call{}, stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w, nil
}

func (w *callWatcher) loop() {
	defer close(w.done)
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	for {
		w.poll()
		select {
		case <-w.stop:
			w.poll()
			return
		case <-t.C:
		}
	}
}

// close stops watching after a last look, and closes the log.
func (w *callWatcher) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.file.Close()
}

// running is the number of handlers started and not yet known to have ended.
func (w *callWatcher) running() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.open)
}

// snapshot returns the calls so far (the pointers stay owned by the watcher until it stops).
func (w *callWatcher) snapshot() ([]*call, []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*call(nil), w.calls...), append([]string(nil), w.bad...)
}

func (w *callWatcher) poll() {
	w.readLines()
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, c := range w.open {
		before := time.Now()
		st, ok := procfs.Read(c.hpid)
		if ok && st.StartTime == c.ticks && st.State != 'Z' && st.State != 'X' {
			c.lastAlive = before
			continue
		}
		c.deadSeen = time.Now()
		delete(w.open, id)
	}
}

func (w *callWatcher) readLines() {
	buf := make([]byte, 256<<10)
	for {
		n, err := w.file.Read(buf)
		if n > 0 {
			w.rest = append(w.rest, buf[:n]...)
		}
		if err == io.EOF || n == 0 {
			break
		}
		if err != nil {
			break
		}
	}
	for {
		i := bytes.IndexByte(w.rest, '\n')
		if i < 0 {
			break
		}
		line := string(w.rest[:i])
		w.rest = w.rest[i+1:]
		w.addLine(line)
	}
}

func (w *callWatcher) addLine(line string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := strings.Fields(line)
	if len(f) < 7 || (f[0] != "start" && f[0] != "end") {
		w.bad = append(w.bad, line)
		return
	}
	hpid, err1 := strconv.Atoi(f[3])
	wpid, err2 := strconv.Atoi(f[4])
	ns, err3 := strconv.ParseInt(f[5], 10, 64)
	ticks, err4 := strconv.ParseUint(f[6], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		w.bad = append(w.bad, line)
		return
	}
	at := time.Unix(0, ns)
	id := fmt.Sprintf("%d/%d", hpid, ticks)
	switch f[0] {
	case "start":
		c := &call{key: f[1], token: f[2], hpid: hpid, wpid: wpid, ticks: ticks, start: at, lastAlive: at}
		w.calls = append(w.calls, c)
		w.open[id] = c
	case "end":
		c := w.open[id]
		if c == nil {
			// Seen dead before its end line was read: find it among the calls.
			for i := len(w.calls) - 1; i >= 0; i-- {
				if x := w.calls[i]; x.hpid == hpid && x.ticks == ticks {
					c = x
					break
				}
			}
		}
		if c == nil || c.key != f[1] {
			w.bad = append(w.bad, line+" (no matching start line)")
			return
		}
		c.end = at
		c.deadSeen = time.Time{}
		if len(f) > 7 {
			c.outcome = f[7]
		}
		delete(w.open, id)
	}
}
