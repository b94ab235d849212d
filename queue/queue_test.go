package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetjobs/jetjobs/internal/buildtest"
	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/queue"
)

func TestOpenIsIdempotent(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		ctx := testContext(t)
		nc := natstest.Conn(t, url)
		cfg := queue.Config{Prefix: natstest.Name("jjtest"), AckWait: 10 * time.Second}
		schema, table := natstest.Name("lab"), natstest.Name("__session_analysis")

		first, err := queue.Open(ctx, nc, schema, table, cfg)
		if err != nil {
			t.Fatalf("first open: %v", err)
		}
		t.Cleanup(func() {
			if err := first.Delete(context.Background()); err != nil {
				t.Errorf("delete: %v", err)
			}
		})
		if _, err := queue.Open(ctx, nc, schema, table, cfg); err != nil {
			t.Fatalf("second open: %v", err)
		}

		// Several processes starting at once: Open and the consumer creation of a first
		// Publish race; none fails, and each key is stored once.
		const n = 8
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		publishedCount := make(chan int, n)
		conns := make([]*nats.Conn, n)
		for i := range conns {
			conns[i] = natstest.Conn(t, url)
		}
		for i, conn := range conns {
			wg.Go(func() {
				tbl, err := queue.Open(ctx, conn, schema, table, cfg)
				if err != nil {
					errs <- fmt.Errorf("concurrent open %d: %w", i, err)
					return
				}
				published, err := tbl.Publish(ctx, messages(3, 1, 2))
				if err != nil {
					errs <- fmt.Errorf("concurrent publish %d: %w", i, err)
					return
				}
				count := 0
				for _, p := range published {
					if p {
						count++
					}
				}
				publishedCount <- count
			})
		}
		wg.Wait()
		close(errs)
		close(publishedCount)
		for err := range errs {
			t.Error(err)
		}
		total := 0
		for c := range publishedCount {
			total += c
		}
		if total != 2 {
			t.Errorf("two keys published by %d tables were stored %d times, want 2", n, total)
		}

		state, err := first.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(state) != 1 || state[0].Priority != 3 || state[0].Consumer != "p3" || state[0].Waiting != 2 {
			t.Errorf("state = %+v, want one consumer p3 with 2 waiting", state)
		}
	})
}

func TestOpenRejectsBadNames(t *testing.T) {
	t.Parallel()
	nc := natstest.Conn(t, natstest.Embedded(t).ClientURL())
	ctx := testContext(t)
	for _, tc := range []struct {
		name          string
		schema, table string
		prefix        string
	}{
		{"empty schema", "", "t", ""},
		{"empty table", "s", "", ""},
		{"wildcard prefix", "s", "t", "jobs.*"},
		{"empty prefix token", "s", "t", "jobs..x"},
		{"space in prefix", "s", "t", "my jobs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := queue.Open(ctx, nc, tc.schema, tc.table, queue.Config{Prefix: tc.prefix})
			if !errors.Is(err, queue.ErrInvalidName) {
				t.Fatalf("open error = %v, want ErrInvalidName", err)
			}
		})
	}
}

func TestPublishFetchAckEmptiesTheStream(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		msgs := messages(5, 1, 2, 3)
		msgs[0].Header = nats.Header{"Traceparent": []string{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
		mustPublish(t, b.tbl, msgs, true)
		if err := b.tbl.Wake(); err != nil {
			t.Fatal(err)
		}

		f := b.tbl.NewFetcher(nil)
		defer f.Stop()
		got := fetchAtLeast(t, ctx, f, 3)
		if want := []string{`{"id":1}`, `{"id":2}`, `{"id":3}`}; !slices.Equal(keysOf(got), want) {
			t.Fatalf("fetched keys %v, want %v", keysOf(got), want)
		}
		for _, m := range got {
			if m.Priority() != 5 || m.NumDelivered() != 1 {
				t.Errorf("message %s: priority %d, delivered %d; want 5, 1", m.Key(), m.Priority(), m.NumDelivered())
			}
		}
		if tp := got[0].Header().Get("Traceparent"); tp != msgs[0].Header.Get("Traceparent") {
			t.Errorf("header Traceparent = %q, want %q", tp, msgs[0].Header.Get("Traceparent"))
		}
		if n, err := streamMsgs(ctx, b); err != nil || n != 3 {
			t.Fatalf("stream holds %d messages (%v) before the acks, want 3", n, err)
		}
		ackAll(t, got)
		// Acks are sent without waiting for their confirmation: the stream empties soon after.
		waitfor.True(t, "the acks to empty the stream", func() bool {
			n, err := streamMsgs(ctx, b)
			return err == nil && n == 0
		})
		fetchNone(t, f, 300*time.Millisecond)
	})
}

func TestOneMessagePerKey(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		f := b.tbl.NewFetcher(nil)
		defer f.Stop()

		mustPublish(t, b.tbl, messages(2, 7), true)
		t.Run("a republish while the message waits is not published", func(t *testing.T) {
			mustPublish(t, b.tbl, messages(2, 7), false)
		})
		t.Run("the same key twice in one batch is stored once", func(t *testing.T) {
			published, err := b.tbl.Publish(ctx, messages(2, 8, 8))
			if err != nil || !slices.Equal(published, []bool{true, false}) {
				t.Fatalf("published %v (%v), want [true false]", published, err)
			}
		})
		t.Run("a key published at another priority is another message", func(t *testing.T) {
			// The subject holds the priority: a job whose priority changed gets a message on
			// its new priority's subject; the stale one fails its reservation in MySQL.
			mustPublish(t, b.tbl, messages(4, 7), true)
		})

		got := fetchAtLeast(t, ctx, f, 2)
		if want := []string{`{"id":7}`, `{"id":8}`}; !slices.Equal(keysOf(got), want) {
			t.Fatalf("fetched %v, want %v (one message per key)", keysOf(got), want)
		}
		t.Run("a republish while the message is delivered and unacked is not published", func(t *testing.T) {
			mustPublish(t, b.tbl, messages(2, 7), false)
		})
		before, err := streamMsgs(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		ackAll(t, got)
		// Acks are sent without waiting for their confirmation: wait for them to remove the
		// messages before publishing the keys again.
		waitfor.True(t, "the acks to remove their messages", func() bool {
			n, err := streamMsgs(ctx, b)
			return err == nil && n == before-uint64(len(got))
		})
		t.Run("a republish after the ack is published", func(t *testing.T) {
			mustPublish(t, b.tbl, messages(2, 7, 8), true)
		})
		got = fetchAtLeast(t, ctx, f, 2)
		if want := []string{`{"id":7}`, `{"id":8}`}; !slices.Equal(keysOf(got), want) {
			t.Fatalf("fetched %v after republishing, want %v", keysOf(got), want)
		}
		for _, m := range got {
			if m.NumDelivered() != 1 {
				t.Errorf("republished %s delivered %d times, want 1 (a new message)", m.Key(), m.NumDelivered())
			}
		}
	})
}

func TestPublishRejectsInvalidMessages(t *testing.T) {
	t.Parallel()
	b := setup(t, natstest.Embedded(t).ClientURL(), queue.Config{})
	ctx := testContext(t)
	for _, tc := range []struct {
		name string
		msg  queue.Message
	}{
		{"priority below -128", queue.Message{Priority: -129, Key: key(1)}},
		{"priority above 127", queue.Message{Priority: 128, Key: key(1)}},
		{"empty key", queue.Message{Priority: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			published, err := b.tbl.Publish(ctx, []queue.Message{{Priority: 1, Key: key(99)}, tc.msg})
			if !errors.Is(err, queue.ErrInvalidMessage) {
				t.Fatalf("publish error = %v, want ErrInvalidMessage", err)
			}
			if slices.Contains(published, true) {
				t.Fatalf("published %v: nothing of a refused batch may be published", published)
			}
		})
	}
	if n, err := streamMsgs(ctx, b); err != nil || n != 0 {
		t.Fatalf("stream holds %d messages (%v), want 0", n, err)
	}
}

func TestStrictPriority(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		// Least urgent first, so that stream order is the opposite of priority order.
		mustPublish(t, b.tbl, messages(5, 50, 51, 52), true)
		mustPublish(t, b.tbl, messages(1, 10, 11), true)
		mustPublish(t, b.tbl, messages(-3, -30), true)
		mustPublish(t, b.tbl, messages(127, 1270), true)
		mustPublish(t, b.tbl, messages(-128, -1280), true)

		f := b.tbl.NewFetcher(nil)
		defer f.Stop()
		for _, want := range []struct {
			priority int
			keys     []string
		}{
			{-128, []string{`{"id":-1280}`}},
			{-3, []string{`{"id":-30}`}},
			{1, []string{`{"id":10}`, `{"id":11}`}},
			{5, []string{`{"id":50}`, `{"id":51}`, `{"id":52}`}},
			{127, []string{`{"id":1270}`}},
		} {
			got, _ := fetch(t, ctx, f, 10)
			if !slices.Equal(keysOf(got), want.keys) {
				t.Fatalf("fetched %v, want %v (priority %d)", keysOf(got), want.keys, want.priority)
			}
			for _, m := range got {
				if m.Priority() != want.priority {
					t.Fatalf("message %s has priority %d, want %d", m.Key(), m.Priority(), want.priority)
				}
			}
			ackAll(t, got)
		}

		t.Run("a more urgent message published later is fetched before older ones", func(t *testing.T) {
			mustPublish(t, b.tbl, messages(5, 53, 54), true)
			got, _ := fetch(t, ctx, f, 1)
			ackAll(t, got)
			mustPublish(t, b.tbl, messages(0, 1), true) // a priority the fetcher has not seen yet
			if err := b.tbl.Wake(); err != nil {
				t.Fatal(err)
			}
			got, _ = fetch(t, ctx, f, 10)
			if !slices.Equal(keysOf(got), []string{`{"id":1}`}) {
				t.Fatalf("fetched %v, want the priority 0 message", keysOf(got))
			}
			ackAll(t, got)
			got, _ = fetch(t, ctx, f, 10)
			ackAll(t, got)
		})
	})
}

func TestFetchNeverReturnsMoreThanN(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		ids := make([]int, 10)
		for i := range ids {
			ids[i] = i
		}
		mustPublish(t, b.tbl, messages(2, ids...), true)

		f := b.tbl.NewFetcher(nil)
		defer f.Stop()
		seen := map[string]bool{}
		for len(seen) < len(ids) {
			got, _ := fetch(t, ctx, f, 3)
			if len(got) > 3 {
				t.Fatalf("Fetch(3) returned %d messages", len(got))
			}
			for _, k := range keysOf(got) {
				if seen[k] {
					t.Fatalf("key %s fetched twice", k)
				}
				seen[k] = true
			}
			// Unacked: they are in flight, not fetchable again.
		}
		fetchNone(t, f, 300*time.Millisecond)
		if _, err := f.Fetch(ctx, 0); err == nil {
			t.Fatal("Fetch(0) succeeded, want an error")
		}
	})
}

func TestMaxPriorityFilters(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		mustPublish(t, b.tbl, messages(7, 70), true)
		mustPublish(t, b.tbl, messages(1, 10), true)
		mustPublish(t, b.tbl, messages(5, 50), true)

		limit := 5
		urgent := b.tbl.NewFetcher(&limit)
		defer urgent.Stop()
		for _, want := range []string{`{"id":10}`, `{"id":50}`} {
			got, _ := fetch(t, ctx, urgent, 10)
			if !slices.Equal(keysOf(got), []string{want}) {
				t.Fatalf("fetched %v, want [%s]", keysOf(got), want)
			}
			ackAll(t, got)
		}
		fetchNone(t, urgent, 1500*time.Millisecond) // long enough for a relist of the consumers

		all := b.tbl.NewFetcher(nil)
		defer all.Stop()
		got, _ := fetch(t, ctx, all, 10)
		if !slices.Equal(keysOf(got), []string{`{"id":70}`}) {
			t.Fatalf("fetched %v, want the priority 7 message", keysOf(got))
		}
		ackAll(t, got)
	})
}

func TestWakeWakesABlockedFetch(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		// The consumer exists before the fetch starts, so the fetch finds it, finds nothing
		// and blocks.
		mustPublish(t, b.tbl, messages(3, 1), true)
		f := b.tbl.NewFetcher(nil)
		defer f.Stop()
		got, _ := fetch(t, ctx, f, 10)
		ackAll(t, got)

		// Only a wake-up can end this wait early.
		queue.SetFetchPollInterval(f, time.Hour)
		idle := make(chan struct{}, 1)
		queue.SetFetchIdleHook(f, func() {
			select {
			case idle <- struct{}{}:
			default:
			}
		})
		type result struct {
			msgs []queue.Msg
			err  error
		}
		done := make(chan result, 1)
		go func() {
			msgs, err := f.Fetch(ctx, 10)
			done <- result{msgs, err}
		}()
		select {
		case <-idle:
		case r := <-done:
			t.Fatalf("fetch returned before anything was published: %v, %v", keysOf(r.msgs), r.err)
		case <-ctx.Done():
			t.Fatal("fetch never went idle")
		}

		mustPublish(t, b.tbl, messages(3, 2), true)
		if err := b.tbl.Wake(); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			if r.err != nil || !slices.Equal(keysOf(r.msgs), []string{`{"id":2}`}) {
				t.Fatalf("woken fetch returned %v, %v; want [{\"id\":2}]", keysOf(r.msgs), r.err)
			}
			ackAll(t, r.msgs)
		case <-ctx.Done():
			t.Fatal("Wake did not wake the blocked fetch")
		}
	})
}

func TestFetchReturnsWhenContextEnds(t *testing.T) {
	t.Parallel()
	b := setup(t, natstest.Embedded(t).ClientURL(), queue.Config{})
	f := b.tbl.NewFetcher(nil)
	defer f.Stop()
	queue.SetFetchPollInterval(f, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	queue.SetFetchIdleHook(f, cancel)
	if _, err := f.Fetch(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("fetch error = %v, want context.Canceled", err)
	}

	stopped := b.tbl.NewFetcher(nil)
	queue.SetFetchPollInterval(stopped, time.Hour)
	queue.SetFetchIdleHook(stopped, stopped.Stop)
	if _, err := stopped.Fetch(testContext(t), 1); !errors.Is(err, queue.ErrStopped) {
		t.Fatalf("fetch error after Stop = %v, want ErrStopped", err)
	}
}

func TestNakWithDelayRedeliversLater(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		mustPublish(t, b.tbl, messages(1, 1, 2), true)
		f := b.tbl.NewFetcher(nil)
		defer f.Stop()

		got, _ := fetch(t, ctx, f, 1)
		if len(got) != 1 || string(got[0].Key()) != `{"id":1}` {
			t.Fatalf("fetched %v, want [{\"id\":1}]", keysOf(got))
		}
		if err := got[0].NakWithDelay(time.Second); err != nil {
			t.Fatal(err)
		}
		// Held back: the next message comes first.
		got, _ = fetch(t, ctx, f, 10)
		if !slices.Equal(keysOf(got), []string{`{"id":2}`}) {
			t.Fatalf("fetched %v right after the nak, want [{\"id\":2}]", keysOf(got))
		}
		ackAll(t, got)

		got, _ = fetch(t, ctx, f, 10)
		if !slices.Equal(keysOf(got), []string{`{"id":1}`}) || got[0].NumDelivered() != 2 {
			t.Fatalf("redelivered %v (delivered %d), want [{\"id\":1}] delivered twice", keysOf(got), got[0].NumDelivered())
		}
		ackAll(t, got)
	})
}

func TestInProgressAndTerm(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{AckWait: 2 * time.Second})
		ctx := testContext(t)
		mustPublish(t, b.tbl, messages(1, 1), true)
		f := b.tbl.NewFetcher(nil)
		defer f.Stop()
		got, _ := fetch(t, ctx, f, 1)
		if err := got[0].InProgress(); err != nil {
			t.Fatal(err)
		}
		if err := got[0].Term(); err != nil {
			t.Fatal(err)
		}
		eventually(t, func() error {
			if n, err := streamMsgs(ctx, b); err != nil || n != 0 {
				return fmt.Errorf("stream holds %d messages (%v) after Term, want 0", n, err)
			}
			return nil
		})
	})
}

func TestRecoversFromADeletedStream(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		t.Run("publish recreates the stream and fetch goes on", func(t *testing.T) {
			b := setup(t, url, queue.Config{})
			ctx := testContext(t)
			f := b.tbl.NewFetcher(nil)
			defer f.Stop()
			mustPublish(t, b.tbl, messages(2, 1), true)
			got, _ := fetch(t, ctx, f, 10)
			ackAll(t, got)

			// Behind the package's back, as jobsctl drop or a NATS restart without its store.
			if err := b.js.DeleteStream(ctx, b.tbl.StreamName()); err != nil {
				t.Fatal(err)
			}
			mustPublish(t, b.tbl, messages(2, 2), true)
			got, _ = fetch(t, ctx, f, 10)
			if !slices.Equal(keysOf(got), []string{`{"id":2}`}) {
				t.Fatalf("fetched %v after the stream was recreated, want [{\"id\":2}]", keysOf(got))
			}
			ackAll(t, got)
		})

		t.Run("fetch recreates the stream and its consumers", func(t *testing.T) {
			b := setup(t, url, queue.Config{})
			ctx := testContext(t)
			mustPublish(t, b.tbl, messages(4, 1), true) // the publisher now trusts consumer p4 exists

			// The worker is another process: its own connection and table handle.
			workerConn := natstest.Conn(t, url)
			workerTbl, err := queue.Open(ctx, workerConn, b.tbl.Schema(), b.tbl.TableName(), b.tbl.Config())
			if err != nil {
				t.Fatal(err)
			}
			f := workerTbl.NewFetcher(nil)
			defer f.Stop()
			got, _ := fetch(t, ctx, f, 10)
			ackAll(t, got)

			if err := b.js.DeleteStream(ctx, b.tbl.StreamName()); err != nil {
				t.Fatal(err)
			}
			fetchDone := make(chan []queue.Msg, 1)
			go func() {
				for {
					msgs, err := f.Fetch(ctx, 10)
					if err == nil || ctx.Err() != nil {
						fetchDone <- msgs
						return
					}
					// A transient error while the stream is being recreated; the caller's
					// loop just calls Fetch again.
				}
			}()
			// The fetcher alone brings back the stream and consumer p4...
			eventually(t, func() error {
				_, err := b.js.Consumer(ctx, b.tbl.StreamName(), "p4")
				return err
			})
			// ...so that a publisher that does not know the stream was lost still reaches it.
			mustPublish(t, b.tbl, messages(4, 2), true)
			select {
			case got := <-fetchDone:
				if ctx.Err() != nil {
					t.Fatal("fetch did not recover")
				}
				if !slices.Equal(keysOf(got), []string{`{"id":2}`}) {
					t.Fatalf("fetched %v after recovery, want [{\"id\":2}]", keysOf(got))
				}
				ackAll(t, got)
			case <-ctx.Done():
				t.Fatal("fetch did not recover")
			}
		})

		t.Run("fetch recreates a deleted consumer", func(t *testing.T) {
			b := setup(t, url, queue.Config{})
			ctx := testContext(t)
			mustPublish(t, b.tbl, messages(6, 1), true)
			f := b.tbl.NewFetcher(nil)
			defer f.Stop()
			got, _ := fetch(t, ctx, f, 10)
			ackAll(t, got)

			if err := b.js.DeleteConsumer(ctx, b.tbl.StreamName(), "p6"); err != nil {
				t.Fatal(err)
			}
			// Stored while no consumer exists; delivered once the fetcher recreated it.
			if _, err := b.js.Publish(ctx, b.tbl.Subject(6, key(2)), key(2)); err != nil {
				t.Fatal(err)
			}
			got, _ = fetch(t, ctx, f, 10)
			if !slices.Equal(keysOf(got), []string{`{"id":2}`}) {
				t.Fatalf("fetched %v after the consumer was recreated, want [{\"id\":2}]", keysOf(got))
			}
			ackAll(t, got)
		})
	})
}

func TestStateReportsWaitingAndAckPending(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		if state, err := b.tbl.State(ctx); err != nil || len(state) != 0 {
			t.Fatalf("state of a fresh table = %+v, %v; want empty", state, err)
		}
		mustPublish(t, b.tbl, messages(4, 40, 41), true)
		mustPublish(t, b.tbl, messages(2, 20, 21, 22), true)
		f := b.tbl.NewFetcher(nil)
		defer f.Stop()
		got, _ := fetch(t, ctx, f, 1) // one p2 message in flight

		want := []queue.PriorityState{
			{Priority: 2, Waiting: 2, AckPending: 1, Consumer: "p2"},
			{Priority: 4, Waiting: 2, AckPending: 0, Consumer: "p4"},
		}
		eventually(t, func() error {
			state, err := b.tbl.State(ctx)
			if err != nil {
				return err
			}
			if !slices.Equal(state, want) {
				return fmt.Errorf("state = %+v, want %+v", state, want)
			}
			return nil
		})

		// Redelivered counts messages in flight that were delivered before.
		if err := got[0].NakWithDelay(queue.MinNakDelay); err != nil {
			t.Fatal(err)
		}
		two := 2
		p2 := b.tbl.NewFetcher(&two)
		defer p2.Stop()
		for redelivered := false; !redelivered; {
			got, _ = fetch(t, ctx, p2, 1)
			if got[0].NumDelivered() > 1 {
				redelivered = true
				continue
			}
			ackAll(t, got)
		}
		want = []queue.PriorityState{
			{Priority: 2, Waiting: 0, AckPending: 1, Redelivered: 1, Consumer: "p2"},
			{Priority: 4, Waiting: 2, AckPending: 0, Consumer: "p4"},
		}
		eventually(t, func() error {
			state, err := b.tbl.State(ctx)
			if err != nil {
				return err
			}
			if !slices.Equal(state, want) {
				return fmt.Errorf("state = %+v, want %+v", state, want)
			}
			return nil
		})

		if err := b.tbl.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		if state, err := b.tbl.State(ctx); err != nil || len(state) != 0 {
			t.Fatalf("state after Delete = %+v, %v; want empty", state, err)
		}
		if err := b.tbl.Delete(ctx); err != nil {
			t.Fatalf("second Delete: %v", err)
		}
	})
}

func TestEmbedded(t *testing.T) {
	t.Parallel()
	t.Run("refuses a listen address off loopback", func(t *testing.T) {
		for _, listen := range []string{"0.0.0.0:0", ":0", "192.0.2.1:4222", "example.com:4222", "[::]:0"} {
			_, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: listen, StoreDir: t.TempDir()})
			if !errors.Is(err, queue.ErrNotLoopback) {
				t.Errorf("listen %q: error = %v, want ErrNotLoopback", listen, err)
			}
		}
	})
	t.Run("needs a store directory", func(t *testing.T) {
		if _, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: "127.0.0.1:0"}); err == nil {
			t.Fatal("started without a store directory")
		}
	})
	t.Run("reports a port in use", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, err = queue.StartEmbedded(queue.EmbeddedOptions{Listen: l.Addr().String(), StoreDir: t.TempDir()})
		if err == nil || !strings.Contains(err.Error(), l.Addr().String()) {
			t.Fatalf("error = %v, want one naming %s", err, l.Addr())
		}
	})
	t.Run("serves JetStream on localhost", func(t *testing.T) {
		e, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: "localhost:0", StoreDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Shutdown()
		nc, err := queue.Connect(testContext(t), queue.ConnectOptions{URL: e.ClientURL(), Name: "jetjobs-test"})
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.AccountInfo(testContext(t)); err != nil {
			t.Fatalf("JetStream: %v", err)
		}
	})
}

func TestConnect(t *testing.T) {
	t.Parallel()
	t.Run("a dead port fails when ctx ends, saying what to do", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "nats://" + l.Addr().String()
		l.Close() // nothing listens there now
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		nc, err := queue.Connect(ctx, queue.ConnectOptions{URL: url})
		if err == nil {
			nc.Close()
			t.Fatal("connected to a dead port")
		}
		t.Logf("the error: %v", err)
		for _, want := range []string{url, "is nats-server running", "--embedded-nats"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
	t.Run("a missing credentials file fails at once", func(t *testing.T) {
		_, err := queue.Connect(context.Background(), queue.ConnectOptions{URL: natstest.DefaultURL, Credentials: "/nonexistent/jetjobs.creds"})
		if err == nil || !strings.Contains(err.Error(), "credentials") {
			t.Fatalf("error = %v, want a credentials file error", err)
		}
	})
	t.Run("a certificate without its key fails at once", func(t *testing.T) {
		cert := t.TempDir() + "/cert.pem"
		if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := queue.Connect(context.Background(), queue.ConnectOptions{URL: natstest.DefaultURL, TLSCert: cert})
		if err == nil || !strings.Contains(err.Error(), "key") {
			t.Fatalf("error = %v, want a certificate/key error", err)
		}
	})
	t.Run("the first connection is retried until a server appears", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		ctx := testContext(t)
		type result struct {
			nc  *nats.Conn
			err error
		}
		done := make(chan result, 1)
		logs := &buildtest.Output{}
		go func() {
			nc, err := queue.Connect(ctx, queue.ConnectOptions{URL: "nats://" + addr, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			done <- result{nc, err}
		}()
		// Nothing listens yet: the attempts are logged, so an operator sees what it waits for.
		eventually(t, func() error {
			if !strings.Contains(logs.String(), "cannot reach NATS; retrying") {
				return fmt.Errorf("logs: %q", logs.String())
			}
			return nil
		})
		e, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: addr, StoreDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Shutdown()
		r := <-done
		if r.err != nil {
			t.Fatalf("connect: %v", r.err)
		}
		r.nc.Close()
	})
	t.Run("reconnects after the server restarts", func(t *testing.T) {
		store := t.TempDir()
		e, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: store})
		if err != nil {
			t.Fatal(err)
		}
		addr := strings.TrimPrefix(e.ClientURL(), "nats://")
		logs := &buildtest.Output{}
		nc, err := queue.Connect(testContext(t), queue.ConnectOptions{URL: e.ClientURL(), Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		e.Shutdown()
		e, err = queue.StartEmbedded(queue.EmbeddedOptions{Listen: addr, StoreDir: store})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Shutdown()
		eventually(t, func() error {
			if !nc.IsConnected() {
				return fmt.Errorf("connection status %v", nc.Status())
			}
			if !strings.Contains(logs.String(), "disconnected from NATS") || !strings.Contains(logs.String(), "reconnected to NATS") {
				return fmt.Errorf("the disconnect and the reconnect are not both logged: %q", logs.String())
			}
			return nil
		})
	})
}

// fakeMsg is a Msg of another implementation, as a worker's unit test would have.
type fakeMsg struct {
	queue.Msg
	acked bool
}

func (m *fakeMsg) Ack(context.Context) error { m.acked = true; return nil }

func TestAckAll(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		ids := make([]int, 300)
		for i := range ids {
			ids[i] = i
		}
		mustPublish(t, b.tbl, messages(1, ids...), true)
		f := b.tbl.NewFetcher(nil)
		defer f.Stop()
		var got []queue.Msg
		for len(got) < len(ids) {
			msgs, _ := fetch(t, ctx, f, 1000)
			got = append(got, msgs...)
		}
		fake := &fakeMsg{}
		if err := queue.AckAll(ctx, append(got, fake)); err != nil {
			t.Fatal(err)
		}
		if !fake.acked {
			t.Error("AckAll skipped a Msg of another implementation")
		}
		// The acks reached the server (AckAll flushed); the consumer applies them on its own.
		eventually(t, func() error {
			if n, err := streamMsgs(ctx, b); err != nil || n != 0 {
				return fmt.Errorf("stream holds %d messages (%v) after AckAll, want 0", n, err)
			}
			return nil
		})
		if err := got[0].Ack(ctx); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			t.Errorf("Ack after AckAll = %v, want ErrMsgAlreadyAckd", err)
		}
		if err := got[0].NakWithDelay(time.Second); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			t.Errorf("NakWithDelay after AckAll = %v, want ErrMsgAlreadyAckd", err)
		}
		if err := queue.AckAll(ctx, nil); err != nil {
			t.Errorf("AckAll of nothing: %v", err)
		}
	})
}

func TestFailingFetchDoesNotSpin(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		nc := natstest.Conn(t, url)
		tbl, err := queue.Open(testContext(t), nc, natstest.Name("s"), natstest.Name("t"), queue.Config{Prefix: natstest.Name("jjtest")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cleanup := natstest.Conn(t, url)
			other, err := queue.Open(context.Background(), cleanup, tbl.Schema(), tbl.TableName(), tbl.Config())
			if err == nil {
				err = other.Delete(context.Background())
			}
			if err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		f := tbl.NewFetcher(nil)
		defer f.Stop()
		nc.Close() // every attempt now fails at once

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		calls := 0
		var last error
		for ctx.Err() == nil {
			_, err := f.Fetch(ctx, 10)
			if err == nil {
				t.Fatal("fetch on a closed connection succeeded")
			}
			last = err
			calls++
		}
		// Backoff from 100ms doubling: about 5 attempts in 2s; a hot loop makes thousands.
		if calls > 20 {
			t.Fatalf("%d Fetch calls in 2s on a closed connection (last error %v): retries are not paced", calls, last)
		}
		if !errors.Is(last, context.DeadlineExceeded) && !errors.Is(last, nats.ErrConnectionClosed) {
			t.Errorf("last error = %v, want the connection closed or the deadline", last)
		}
	})
}
