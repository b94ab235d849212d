package queue_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/queue"
)

// Workers and schedulers starting together all create a table's new stream at once: every
// Open succeeds (the creations that lose the race find the winner's stream), however the
// server reports the collision.
func TestConcurrentOpenOfANewStream(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		ctx := testContext(t)
		const processes, rounds = 12, 10
		conns := make([]*nats.Conn, processes)
		for i := range conns {
			conns[i] = natstest.Conn(t, url)
		}
		cfg := queue.Config{Prefix: natstest.Name("jjtest"), AckWait: 10 * time.Second}
		for round := range rounds {
			schema, table := natstest.Name("lab"), natstest.Name("__t")
			var wg sync.WaitGroup
			tables := make([]*queue.Table, processes)
			errs := make([]error, processes)
			for i, nc := range conns {
				wg.Go(func() { tables[i], errs[i] = queue.Open(ctx, nc, schema, table, cfg) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("round %d: open %d: %v", round, i, err)
				}
			}
			for _, tbl := range tables {
				if tbl != nil {
					if err := tbl.Delete(ctx); err != nil {
						t.Fatal(fmt.Errorf("delete: %w", err))
					}
					break
				}
			}
		}
	})
}

// Messages that no consumer delivers are found and removed: one on a subject of the table
// that is not a job's (published by something else) is purged; one on a job's subject of a
// priority without a consumer gets its consumer, which then delivers it.
func TestRepairRemovesStrayMessages(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		mustPublish(t, b.tbl, messages(5, 1, 2), true)
		job := b.tbl.Subject(7, key(70))
		junk := strings.TrimSuffix(job, ".p7."+queue.KeyHash(key(70))) + ".foo.bar"
		for _, subject := range []string{job, junk} {
			if _, err := b.js.Publish(ctx, subject, key(70)); err != nil {
				t.Fatal(err)
			}
		}
		h, err := b.tbl.Health(ctx)
		if err != nil || h.Messages != 4 || h.Stray != 2 {
			t.Fatalf("health %+v, %v; want 4 messages, 2 of them stray", h, err)
		}
		h, purged, err := b.tbl.Repair(ctx)
		if err != nil || purged != 1 || h.Messages != 3 || h.Stray != 0 {
			t.Fatalf("after repair: %+v, %d purged, %v; want the junk purged and nothing stray", h, purged, err)
		}
		want := []queue.PriorityState{
			{Priority: 5, Waiting: 2, Consumer: "p5"},
			{Priority: 7, Waiting: 1, Consumer: "p7"},
		}
		if !slices.Equal(h.Priorities, want) {
			t.Errorf("priorities %+v, want %+v", h.Priorities, want)
		}
		if _, purged, err := b.tbl.Repair(ctx); err != nil || purged != 0 {
			t.Errorf("a healthy stream was repaired: %d purged, %v", purged, err)
		}
	})
}

// A stream is created with the configured storage; a table opened without one keeps the
// stream's; a table opened with another recreates the stream (its messages are the
// scheduler's to publish again).
func TestStorage(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		ctx := testContext(t)
		nc := natstest.Conn(t, url)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		cfg := queue.Config{Prefix: natstest.Name("jjtest"), Storage: queue.StorageMemory}
		schema, table := natstest.Name("lab"), natstest.Name("__t")
		storage := func(tbl *queue.Table) jetstream.StorageType {
			s, err := js.Stream(ctx, tbl.StreamName())
			if err != nil {
				t.Fatal(err)
			}
			return s.CachedInfo().Config.Storage
		}
		mem, err := queue.Open(ctx, nc, schema, table, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mem.Delete(context.Background()) })
		if got := storage(mem); got != jetstream.MemoryStorage {
			t.Fatalf("storage %v, want memory", got)
		}
		mustPublish(t, mem, messages(5, 1, 2), true)

		cfg.Storage = ""
		kept, err := queue.Open(ctx, nc, schema, table, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := storage(kept); got != jetstream.MemoryStorage {
			t.Errorf("a table opened without a storage changed the stream's to %v", got)
		}
		if n, err := streamMsgs(ctx, bundle{js: js, tbl: kept}); err != nil || n != 2 {
			t.Errorf("the stream holds %d messages (%v), want its 2", n, err)
		}

		cfg.Storage = queue.StorageFile
		file, err := queue.Open(ctx, nc, schema, table, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := storage(file); got != jetstream.FileStorage {
			t.Errorf("storage %v after opening with file storage, want file", got)
		}
		mustPublish(t, file, messages(5, 1), true) // the old message went with the old stream
	})
}

// A worker's demand reports reach the table's subscriber; they are not stored in the stream.
func TestDemand(t *testing.T) {
	forEachServer(t, func(t *testing.T, url string) {
		b := setup(t, url, queue.Config{})
		ctx := testContext(t)
		got := make(chan queue.Demand, 1)
		sub, err := b.tbl.SubscribeDemand(func(d queue.Demand) { got <- d })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := b.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		want := queue.Demand{Worker: "w1", Taken: 250, Slots: 1000}
		if err := b.tbl.ReportDemand(want); err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-got:
			if d != want {
				t.Errorf("got %+v, want %+v", d, want)
			}
		case <-ctx.Done():
			t.Fatal("no demand report arrived")
		}
		if n, err := streamMsgs(ctx, b); err != nil || n != 0 {
			t.Errorf("the stream stored %d messages (%v): demand reports must not be stored", n, err)
		}
	})
}
