package queue_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/queue"
)

// benchTable opens a table on a fresh embedded server.
func benchTable(b *testing.B) *queue.Table {
	b.Helper()
	nc := natstest.Conn(b, natstest.Embedded(b).ClientURL())
	return natstest.OpenTable(b, nc, queue.Config{})
}

// benchBatches publishes n messages with fresh keys, batch at a time, at priority 5.
func benchPublish(b *testing.B, tbl *queue.Table, first, n, batch int) {
	b.Helper()
	ctx := context.Background()
	msgs := make([]queue.Message, 0, batch)
	for id := first; id < first+n; id += batch {
		msgs = msgs[:0]
		for k := id; k < min(id+batch, first+n); k++ {
			msgs = append(msgs, queue.Message{Priority: 5, Key: key(k)})
		}
		published, err := tbl.Publish(ctx, msgs)
		if err != nil {
			b.Fatal(err)
		}
		for i, p := range published {
			if !p {
				b.Fatalf("message %d of a batch not published", i)
			}
		}
	}
}

// BenchmarkPublish measures Publish throughput (messages/s, each with its PubAck) into the
// embedded server's file store.
func BenchmarkPublish(b *testing.B) {
	for _, batch := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			tbl := benchTable(b)
			benchPublish(b, tbl, -1, 1, 1) // the consumer exists before timing
			b.ResetTimer()
			start := time.Now()
			benchPublish(b, tbl, 0, b.N, batch)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

// BenchmarkFetchAck measures taking messages off the queue: Fetch of up to batch messages,
// then a confirmed ack of each (AckAll pipelines them; sequential waits for each in turn). The
// stream is refilled with backlog messages whenever it is empty, untimed: the server's cost of
// a pull grows with the number of messages waiting (see the package doc).
func BenchmarkFetchAck(b *testing.B) {
	for _, tc := range []struct {
		batch, backlog int
		sequential     bool
	}{
		{batch: 1, backlog: 1000},
		{batch: 100, backlog: 1000},
		{batch: 100, backlog: 1000, sequential: true},
		{batch: 1000, backlog: 10000},
		{batch: 100, backlog: 10000},
		{batch: 100, backlog: 50000},
	} {
		name := fmt.Sprintf("batch=%d/backlog=%d/ackall", tc.batch, tc.backlog)
		if tc.sequential {
			name = fmt.Sprintf("batch=%d/backlog=%d/sequential", tc.batch, tc.backlog)
		}
		b.Run(name, func(b *testing.B) {
			tbl := benchTable(b)
			f := tbl.NewFetcher(nil)
			defer f.Stop()
			ctx := context.Background()
			var timed time.Duration
			for done := 0; done < b.N; {
				chunk := min(tc.backlog, b.N-done)
				b.StopTimer()
				benchPublish(b, tbl, done, chunk, 1000)
				b.StartTimer()
				start := time.Now()
				for got := 0; got < chunk; {
					msgs, err := f.Fetch(ctx, tc.batch)
					if err != nil {
						b.Fatal(err)
					}
					if tc.sequential {
						for _, m := range msgs {
							if err := m.Ack(ctx); err != nil {
								b.Fatal(err)
							}
						}
					} else if err := queue.AckAll(ctx, msgs); err != nil {
						b.Fatal(err)
					}
					got += len(msgs)
				}
				timed += time.Since(start)
				done += chunk
			}
			b.ReportMetric(float64(b.N)/timed.Seconds(), "msgs/s")
		})
	}
}
