package scheduler

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/waitfor"
)

// stepper is a periodic service whose step is the test's.
type stepper struct {
	periodic
	calls chan time.Time // one per step
}

func newStepper(t *testing.T, logs io.Writer, step func(context.Context) (time.Time, error)) *stepper {
	t.Helper()
	s := &stepper{calls: make(chan time.Time, 100)}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), nil))
	s.init(log, func(ctx context.Context) (time.Time, error) {
		s.calls <- time.Now()
		return step(ctx)
	}, "step failed; retrying", slog.LevelError, 10*time.Millisecond, 50*time.Millisecond)
	t.Cleanup(s.Stop)
	return s
}

// next waits for the next step and returns when it began.
func (s *stepper) next(t *testing.T, within time.Duration) time.Time {
	t.Helper()
	select {
	case at := <-s.calls:
		return at
	case <-time.After(within):
		t.Fatalf("no step within %v", within)
		return time.Time{}
	}
}

// quiet fails the test when a step begins within d: an observation window.
func (s *stepper) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-s.calls:
		t.Fatalf("a step ran within %v, with nothing to make it run", d)
	case <-time.After(d):
	}
}

func TestPeriodic(t *testing.T) {
	t.Parallel()

	t.Run("runs at once, then when the step asks, and at once when poked", func(t *testing.T) {
		t.Parallel()
		s := newStepper(t, io.Discard, func(context.Context) (time.Time, error) {
			return time.Now().Add(300 * time.Millisecond), nil
		})
		started := time.Now()
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		first := s.next(t, 5*time.Second)
		if d := first.Sub(started); d > time.Second {
			t.Errorf("first step %v after Start, want at once", d)
		}
		if d := s.next(t, 5*time.Second).Sub(first); d < 300*time.Millisecond {
			t.Errorf("second step %v after the first, before the time the step asked for", d)
		}
		s.Poke()
		poked := time.Now()
		if d := s.next(t, 5*time.Second).Sub(poked); d > 200*time.Millisecond {
			t.Errorf("poked step %v after the poke, want at once", d)
		}
		s.quiet(t, 150*time.Millisecond)
	})

	t.Run("PokeAt runs the step at the time given when it is earlier than planned", func(t *testing.T) {
		t.Parallel()
		s := newStepper(t, io.Discard, func(context.Context) (time.Time, error) {
			return time.Now().Add(time.Hour), nil
		})
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.next(t, 5*time.Second)
		at := time.Now().Add(200 * time.Millisecond)
		s.PokeAt(at.Add(time.Second)) // later than the next: only the earliest counts
		s.PokeAt(at)
		ran := s.next(t, 5*time.Second)
		if ran.Before(at) {
			t.Errorf("step ran %v before the time given", at.Sub(ran))
		}
		if d := ran.Sub(at); d > 150*time.Millisecond {
			t.Errorf("step ran %v after the time given, want at it", d)
		}
		s.quiet(t, 1500*time.Millisecond)      // the later time was dropped: the step asked for an hour
		s.PokeAt(time.Now().Add(-time.Second)) // a past time: at once
		s.next(t, 200*time.Millisecond)
	})

	t.Run("a failing step is logged and retried with growing waits; a success resets them", func(t *testing.T) {
		t.Parallel()
		logs := &logLines{}
		var fail atomic.Bool
		var successes atomic.Int32
		fail.Store(true)
		s := newStepper(t, logs, func(context.Context) (time.Time, error) {
			if fail.Load() {
				return time.Time{}, errors.New("broken")
			}
			successes.Add(1)
			return time.Now().Add(time.Hour), nil
		})
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitfor.True(t, "five failures logged", func() bool { return len(logs.matching("step failed; retrying", "err=broken")) >= 5 })
		fail.Store(false)
		waits := func() []time.Duration {
			var ds []time.Duration
			for _, l := range logs.matching("step failed; retrying") {
				d, err := time.ParseDuration(attr(l, "retry_in"))
				if err != nil {
					t.Fatalf("log line without a retry_in: %s", l)
				}
				ds = append(ds, d)
			}
			return ds
		}
		// 10 ms ± 50 % first, then ×1.5 each time: the fourth wait is longer than the
		// first can be.
		if ds := waits(); ds[3] <= ds[0] || ds[0] > 15*time.Millisecond {
			t.Errorf("waits after failures %v, want growing from about 10ms", ds)
		}
		// After the success the step asks for an hour: only a poke runs it again.
		waitfor.True(t, "a step succeeded", func() bool { return successes.Load() > 0 })
		fail.Store(true)
		before := len(waits())
		s.Poke()
		waitfor.True(t, "the poked step's failure logged", func() bool { return len(waits()) > before })
		if d := waits()[before]; d > 15*time.Millisecond {
			t.Errorf("first wait after a success %v, want the backoff reset to about 10ms", d)
		}
	})

	t.Run("Start twice runs one loop; Stop waits for the step and runs begin's end", func(t *testing.T) {
		t.Parallel()
		var stepping, stepped atomic.Bool
		s := newStepper(t, io.Discard, func(ctx context.Context) (time.Time, error) {
			stepping.Store(true)
			<-ctx.Done()
			time.Sleep(50 * time.Millisecond) // a step that takes a while to notice
			stepped.Store(true)
			return time.Time{}, ctx.Err()
		})
		var begun, ended atomic.Int32
		s.begin = func() func() {
			begun.Add(1)
			return func() { ended.Add(1) }
		}
		s.Stop() // before Start: nothing to do
		for range 2 {
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		s.next(t, 5*time.Second)
		waitfor.True(t, "the step runs", stepping.Load)
		s.Stop()
		if !stepped.Load() {
			t.Error("Stop returned before the running step did")
		}
		if b, e := begun.Load(), ended.Load(); b != 1 || e != 1 {
			t.Errorf("begin ran %d times, its end %d times; want once each", b, e)
		}
		if len(s.calls) != 0 {
			t.Errorf("%d more steps ran: a second loop", len(s.calls))
		}
	})
}
