package queue_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

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
