package scheduler

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/queue"
)

// dispatcherFixture is a table with subjects 1..subjects, all pending, and its dispatcher,
// whose passes are sent on the returned channel.
func dispatcherFixture(t *testing.T, subjects int, modify func(*Options)) (*dispatcher, *bundle, chan DispatchEvent) {
	t.Helper()
	b := setup(t, subjects)
	b.refresh(t)
	events := make(chan DispatchEvent, 100)
	o := b.options(func(o *Options) {
		if modify != nil {
			modify(o)
		}
		o.OnDispatch = func(ev DispatchEvent) { events <- ev }
	})
	d := newDispatcher(o, b.table, b.log, b.jobs, b.stream)
	t.Cleanup(d.Stop)
	return d, b, events
}

// passOnce runs one dispatch pass and returns what it published.
func (d *dispatcher) passOnce(t *testing.T, events chan DispatchEvent) DispatchEvent {
	t.Helper()
	if _, err := d.runOnce(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		return ev
	default:
		return DispatchEvent{Table: d.table}
	}
}

// markAll marks every published job dispatched now, without waiting for MarkDelay.
func (d *dispatcher) markAll(t *testing.T) {
	t.Helper()
	if err := d.markPublished(t.Context(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if len(d.unmarked) != 0 || len(d.inFlight) != 0 {
		t.Fatalf("%d batches, %d keys left unmarked", len(d.unmarked), len(d.inFlight))
	}
}

func TestDispatcher(t *testing.T) {
	t.Parallel()

	t.Run("publishes a refresh's new jobs at once when poked", func(t *testing.T) {
		t.Parallel()
		// A poll interval of a minute: only the poke can explain a prompt publish.
		d, b, events := dispatcherFixture(t, 1, func(o *Options) { o.PollInterval = time.Minute })
		if err := d.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-events:
			if ev.Published != 1 {
				t.Fatalf("first pass published %d, want 1", ev.Published)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the first pass published nothing")
		}
		b.addSubjects(t, 2, 2)
		b.refresh(t)
		d.Poke()
		rcv := b.receiver(t)
		if got := rcv.fetch(2, 10*time.Second); !slices.Equal(got, seq(1, 2)) {
			t.Fatalf("after the poke, fetched %v, want 1..2", got)
		}
	})

	t.Run("respects the dispatch window and fills it as workers finish messages", func(t *testing.T) {
		t.Parallel()
		d, b, events := dispatcherFixture(t, 12, func(o *Options) { o.DispatchWindow = 5 })
		if ev := d.passOnce(t, events); ev.Published != 5 {
			t.Fatalf("first pass published %d, want the window of 5", ev.Published)
		}
		if ev := d.passOnce(t, events); ev.Published != 0 {
			t.Errorf("a pass with a full window published %d", ev.Published)
		}
		d.markAll(t)
		if n, w := b.dispatched(t), b.waiting(t); n != 5 || w != 5 {
			t.Fatalf("%d jobs dispatched, %d messages waiting; want 5 and 5", n, w)
		}
		rcv := b.receiver(t)
		got := rcv.fetch(3, 10*time.Second)
		if len(got) != 3 {
			t.Fatalf("fetched %v, want 3 messages", got)
		}
		// Taken, they still count: a worker holds them until their jobs are recorded.
		if ev := d.passOnce(t, events); ev.Published != 0 {
			t.Errorf("with 3 messages taken but not acked, a pass published %d, want 0", ev.Published)
		}
		for _, id := range got {
			rcv.ack(id)
		}
		waitfor.True(t, "the acks to reach the stream", func() bool { return b.inStream(t) == 2 })
		if ev := d.passOnce(t, events); ev.Published != 3 {
			t.Errorf("after workers finished 3 messages, a pass published %d, want 3", ev.Published)
		}
		d.markAll(t)
		if n, w := b.dispatched(t), b.waiting(t); n != 8 || w != 5 {
			t.Errorf("%d jobs dispatched, %d messages waiting; want 8 and 5", n, w)
		}
	})

	t.Run("sizes the window by the slots of the workers that report demand", func(t *testing.T) {
		t.Parallel()
		d, b, events := dispatcherFixture(t, 30, func(o *Options) { o.DispatchWindow, o.BatchSize = 100, 2 })
		end := d.followDemand()
		defer end()
		if w := d.window(); w != 100 {
			t.Fatalf("window %d before any worker reported, want all of DispatchWindow", w)
		}
		if err := b.stream.ReportDemand(queue.Demand{Worker: "w1", Taken: 1, Slots: 2}); err != nil {
			t.Fatal(err)
		}
		waitfor.True(t, "the report to arrive", func() bool { return d.window() == WindowPerSlot*2 })
		if ev := d.passOnce(t, events); ev.Published != WindowPerSlot*2 {
			t.Errorf("a pass published %d, want the window of %d messages for 2 slots", ev.Published, WindowPerSlot*2)
		}
	})

	t.Run("a worker's demand report brings a pass at once, not after the poll interval", func(t *testing.T) {
		t.Parallel()
		d, b, _ := dispatcherFixture(t, 12, func(o *Options) { o.DispatchWindow, o.PollInterval = 5, time.Hour })
		if err := d.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		rcv := b.receiver(t)
		first := rcv.fetch(5, 10*time.Second)
		if len(first) != 5 {
			t.Fatalf("fetched %v, want the first window of 5", first)
		}
		for _, id := range first {
			rcv.ack(id)
		}
		waitfor.True(t, "the acks to reach the stream", func() bool { return b.inStream(t) == 0 })
		if err := b.stream.ReportDemand(queue.Demand{Worker: "w1", Taken: 5, Slots: 5}); err != nil {
			t.Fatal(err)
		}
		if got := rcv.fetch(5, 10*time.Second); len(got) != 5 {
			t.Errorf("after the demand report, fetched %v, want the next 5", got)
		}
	})

	t.Run("a dropped jobs table is nothing to dispatch, not an error", func(t *testing.T) {
		t.Parallel()
		d, b, _ := dispatcherFixture(t, 1, nil)
		b.db.Exec(t, "DROP TABLE `"+jobsName+"`")
		start := time.Now()
		next, err := d.runOnce(t.Context())
		if err != nil {
			t.Fatalf("runOnce = %v, want nil", err)
		}
		if wait := next.Sub(start); wait < d.o.PollInterval || wait > d.o.PollInterval+5*time.Second {
			t.Errorf("next pass %v later, want the poll interval %v", wait, d.o.PollInterval)
		}
	})

	t.Run("passes again when the next job becomes due", func(t *testing.T) {
		t.Parallel()
		d, b, _ := dispatcherFixture(t, 1, func(o *Options) { o.PollInterval = time.Minute })
		b.db.Exec(t, "UPDATE `"+jobsName+"` SET scheduled_time = NOW(3) + INTERVAL 2 SECOND")
		start := time.Now()
		next, err := d.runOnce(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if wait := next.Sub(start); wait <= 0 || wait > 3*time.Second {
			t.Errorf("next pass %v later, want when the job becomes due (2s), not the poll interval", wait)
		}
	})
}
