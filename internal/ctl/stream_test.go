package ctl

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/queue"
)

// TestStream checks stream against the embedded server (the current nats-server).
func TestStream(t *testing.T) {
	t.Parallel()
	testStream(t, natstest.Embedded(t).ClientURL(), true)
}

// TestStreamExternal checks stream against the machine's server (Debian's nats-server 2.9).
func TestStreamExternal(t *testing.T) {
	t.Parallel()
	testStream(t, natstest.External(t), false)
}

func testStream(t *testing.T, url string, goldens bool) {
	f := newFixture(t)
	f.env["JETJOBS_NATS_URL"] = url
	a := f.analysis

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := queue.Connect(ctx, queue.ConnectOptions{URL: url, Name: "ctl-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close) // after the cleanup below, which needs the connection
	qt, err := queue.Open(ctx, nc, f.schema, "__analysis", queue.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// The database name is unique to the test, so are the streams; delete them in any case.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, name := range []string{"__analysis", "__greeting"} {
			if q, err := queue.Open(ctx, nc, f.schema, name, queue.Config{}); err == nil {
				q.Delete(ctx)
			}
		}
	})
	published, err := qt.Publish(ctx, []queue.Message{
		{Priority: 1, Key: []byte(`{"subject_id":3,"session_id":1}`)},
		{Priority: 5, Key: []byte(`{"subject_id":1,"session_id":2}`)},
		{Priority: 5, Key: []byte(`{"subject_id":1,"session_id":3}`)},
	})
	if err != nil || !reflect.DeepEqual(published, []bool{true, true, true}) {
		t.Fatalf("publish: %v %v", published, err)
	}
	// A worker takes the priority-1 message and has not acknowledged it yet.
	fetcher := qt.NewFetcher(nil)
	defer fetcher.Stop()
	msgs, err := fetcher.Fetch(ctx, 1)
	if err != nil || len(msgs) != 1 || msgs[0].Priority() != 1 {
		t.Fatalf("fetch: %v %v", msgs, err)
	}

	t.Run("text", func(t *testing.T) {
		out := f.normalize(f.mustRun(t, 0, "stream", a).stdout)
		if goldens {
			golden(t, "stream.txt", out)
		} else if !strings.Contains(out, "ACK_PENDING") || strings.Count(out, "\n") != 3 {
			t.Errorf("stream text:\n%s", out)
		}
	})

	t.Run("json is keyed by table", func(t *testing.T) {
		var got map[string][]map[string]any
		decodeJSON(t, f.mustRun(t, 0, "stream", a, "-o", "json").stdout, &got)
		want := map[string][]map[string]any{a: {
			{"priority": json.Number("1"), "waiting": json.Number("0"), "ack_pending": json.Number("1"), "redelivered": json.Number("0"), "consumer": queue.ConsumerName(1)},
			{"priority": json.Number("5"), "waiting": json.Number("2"), "ack_pending": json.Number("0"), "redelivered": json.Number("0"), "consumer": queue.ConsumerName(5)},
		}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("stream -o json = %v, want %v", got, want)
		}
	})

	t.Run("csv", func(t *testing.T) {
		rows := readCSV(t, f.mustRun(t, 0, "stream", a, "-o", "csv").stdout)
		want := [][]string{columnNames(streamColumns), {a, "1", "0", "1", "0", queue.ConsumerName(1)}, {a, "5", "2", "0", "0", queue.ConsumerName(5)}}
		if !reflect.DeepEqual(rows, want) {
			t.Errorf("stream -o csv = %v, want %v", rows, want)
		}
	})

	t.Run("every configured table, one without messages", func(t *testing.T) {
		var got map[string][]map[string]any
		decodeJSON(t, f.mustRun(t, 0, "stream", "-o", "json").stdout, &got)
		if len(got[a]) != 2 || got[f.greeting] == nil || len(got[f.greeting]) != 0 {
			t.Errorf("stream of all tables = %v, want 2 priorities for %s and none for %s", got, a, f.greeting)
		}
	})

	t.Run("messages no consumer delivers are shown on a row of their own", func(t *testing.T) {
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		junk := strings.TrimSuffix(qt.Subject(1, []byte("x")), ".p1."+queue.KeyHash([]byte("x"))) + ".not.ajob"
		if _, err := js.Publish(ctx, junk, []byte("junk")); err != nil {
			t.Fatal(err)
		}
		rows := readCSV(t, f.mustRun(t, 0, "stream", a, "-o", "csv").stdout)
		want := [][]string{columnNames(streamColumns), {a, "1", "0", "1", "0", queue.ConsumerName(1)},
			{a, "5", "2", "0", "0", queue.ConsumerName(5)}, {a, "", "1", "0", "0", ""}}
		if !reflect.DeepEqual(rows, want) {
			t.Errorf("stream -o csv = %v, want %v", rows, want)
		}
	})

	t.Run("an unknown table creates no stream", func(t *testing.T) {
		r := f.mustRun(t, 2, "stream", f.schema+".nosuch")
		if !strings.Contains(r.stderr, a) {
			t.Errorf("stderr should list the configured tables: %q", r.stderr)
		}
	})

	t.Run("an unreachable server fails with exit 1 naming the URL", func(t *testing.T) {
		r := f.mustRun(t, 1, "stream", a, "--nats", "nats://127.0.0.1:1", "--timeout", "1s")
		if !strings.Contains(r.stderr, "nats://127.0.0.1:1") || !strings.Contains(r.stderr, "--nats") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})
}
