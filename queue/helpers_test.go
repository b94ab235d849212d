package queue_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/queue"
)

// testTimeout bounds every wait of a test: generous, so a slow machine is not a failure.
const testTimeout = 30 * time.Second

// bundle is what a test gets: a table on a fresh stream, the connection it uses and a raw
// JetStream context to look behind the package's back.
type bundle struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	tbl *queue.Table
}

// forEachServer runs test against the embedded server and the external one, in parallel.
func forEachServer(t *testing.T, test func(t *testing.T, url string)) {
	t.Helper()
	t.Parallel()
	for _, s := range natstest.Servers(t) {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			test(t, s.URL)
		})
	}
}

// setup opens a table with unique names on url; its stream is deleted when the test ends.
func setup(t *testing.T, url string, cfg queue.Config) bundle {
	t.Helper()
	nc := natstest.Conn(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return bundle{nc: nc, js: js, tbl: natstest.OpenTable(t, nc, cfg)}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// key is the canonical JSON of a one-column key.
func key(id int) []byte { return fmt.Appendf(nil, `{"id":%d}`, id) }

// messages makes one message per id, all of one priority.
func messages(priority int, ids ...int) []queue.Message {
	msgs := make([]queue.Message, len(ids))
	for i, id := range ids {
		msgs[i] = queue.Message{Priority: priority, Key: key(id)}
	}
	return msgs
}

// mustPublish publishes msgs and checks which were published.
func mustPublish(t *testing.T, tbl *queue.Table, msgs []queue.Message, want bool) {
	t.Helper()
	published, err := tbl.Publish(testContext(t), msgs)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	for i, p := range published {
		if p != want {
			t.Fatalf("published[%d] (%s) = %t, want %t", i, msgs[i].Key, p, want)
		}
	}
}

// fetch calls Fetch until it returns messages, failing on ctx's end. Transient errors (a
// stream being recreated) are tolerated and returned for inspection.
func fetch(t *testing.T, ctx context.Context, f *queue.Fetcher, n int) ([]queue.Msg, []error) {
	t.Helper()
	var transient []error
	for {
		msgs, err := f.Fetch(ctx, n)
		if err == nil {
			return msgs, transient
		}
		if ctx.Err() != nil {
			t.Fatalf("fetch: no messages before the deadline: %v (transient errors: %v)", err, transient)
		}
		transient = append(transient, err)
	}
}

// fetchAtLeast fetches until it has at least n messages: the server delivers messages that
// were just published one after another, and one Fetch returns those already there.
func fetchAtLeast(t *testing.T, ctx context.Context, f *queue.Fetcher, n int) []queue.Msg {
	t.Helper()
	var got []queue.Msg
	for len(got) < n {
		msgs, _ := fetch(t, ctx, f, n-len(got))
		got = append(got, msgs...)
	}
	return got
}

// fetchNone checks that Fetch finds nothing within d.
func fetchNone(t *testing.T, f *queue.Fetcher, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	msgs, err := f.Fetch(ctx, 100)
	if len(msgs) > 0 {
		t.Fatalf("fetch returned %d messages (first %s, priority %d), want none", len(msgs), msgs[0].Key(), msgs[0].Priority())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fetch error = %v, want context.DeadlineExceeded", err)
	}
}

// ackAll acks msgs and fails the test on an error.
func ackAll(t *testing.T, msgs []queue.Msg) {
	t.Helper()
	if err := queue.AckAll(testContext(t), msgs); err != nil {
		t.Fatalf("ack: %v", err)
	}
}

// keysOf returns the keys of msgs, as strings.
func keysOf(msgs []queue.Msg) []string {
	keys := make([]string, len(msgs))
	for i, m := range msgs {
		keys[i] = string(m.Key())
	}
	return keys
}

// eventually polls check until it returns nil, failing with its last error at the deadline
// (before the test's contexts end, so the error is check's own).
func eventually(t *testing.T, check func() error) {
	t.Helper()
	deadline := time.Now().Add(testTimeout * 2 / 3)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", testTimeout*2/3, err)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// streamMsgs is the number of messages in the table's stream.
func streamMsgs(ctx context.Context, b bundle) (uint64, error) {
	s, err := b.js.Stream(ctx, b.tbl.StreamName())
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.Msgs, nil
}
