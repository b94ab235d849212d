package scheduler

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/natstest"
	"github.com/jetjobs/jetjobs/internal/waitfor"
	"github.com/jetjobs/jetjobs/queue"
	"github.com/jetjobs/jetjobs/worker"
)

// With dispatch=mysql the scheduler refreshes and recovers without NATS: it is given no
// connection, and publishes nothing.
func TestDispatchMySQLNeedsNoNATS(t *testing.T) {
	t.Parallel()
	b := setup(t, 5)
	b.start(t, func(o *Options) { o.NATS, o.Dispatch = nil, worker.DispatchMySQL })
	waitfor.Within(t, 10*time.Second, "the refresh to add 5 jobs", func() bool {
		p, err := b.jobs.Progress(t.Context())
		return err == nil && p.Pending == 5
	})
	b.reserve(t, 1)
	b.expire(t, 1)
	waitfor.Within(t, 10*time.Second, "the expired lease recovered", func() bool {
		return b.job(t, 1).Status == "pending"
	})
	if n := b.inStream(t); n != 0 || b.dispatched(t) != 0 {
		t.Errorf("%d messages in the stream, %d jobs marked dispatched: dispatch=mysql published", n, b.dispatched(t))
	}
	if len(b.logs.matching("refreshing and recovering (dispatch=mysql")) == 0 {
		t.Error("the leader did not say it leads without NATS")
	}
	rec := httptest.NewRecorder()
	New(Options{Tables: []Table{{Name: b.table}}, DB: b.pool, Dispatch: worker.DispatchMySQL}).Handler().
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if body := rec.Body.String(); !strings.Contains(body, "ok   nats: not used") {
		t.Errorf("/readyz with dispatch=mysql: %q", body)
	}
}

// With dispatch=auto and NATS down at start, the scheduler refreshes and recovers all the
// same, and publishes once NATS answers.
func TestDispatchAutoStartsWithoutNATS(t *testing.T) {
	t.Parallel()
	ns := natstest.StartRestartable(t)
	b := setupOn(t, ns.URL, 5)
	ns.Stop()
	nc, err := queue.Connect(t.Context(), queue.ConnectOptions{URL: ns.URL, Background: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b.start(t, func(o *Options) { o.NATS = nc })
	waitfor.Within(t, 10*time.Second, "the refresh to add 5 jobs without NATS", func() bool {
		p, err := b.jobs.Progress(t.Context())
		return err == nil && p.Pending == 5
	})
	b.reserve(t, 1)
	b.expire(t, 1)
	waitfor.Within(t, 10*time.Second, "the expired lease recovered without NATS", func() bool {
		return b.job(t, 1).Status == "pending"
	})
	ns.Start()
	waitfor.Within(t, 30*time.Second, "the 5 jobs published once NATS answers", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		n, err := b.stream.Messages(ctx)
		return err == nil && n == 5
	})
}
