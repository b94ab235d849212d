package leadership_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/waitfor"
)

func TestLockHolder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, ok, err := leadership.LockHolder(ctx, b.db.SQL, b.lock); ok || err != nil {
		t.Fatalf("a holder before anyone campaigned: ok %v, %v", ok, err)
	}
	a := b.start(t, "a")
	waitfor.Within(t, 10*time.Second, "a leads", func() bool { return a.leading.Load() })
	h, ok, err := leadership.LockHolder(ctx, b.db.SQL, b.lock)
	if err != nil || !ok || h.ConnectionID == 0 || h.User == "" || h.Host == "" {
		t.Fatalf("holder %+v, ok %v, %v", h, ok, err)
	}
	a.stop()
	if _, ok, err := leadership.LockHolder(ctx, b.db.SQL, b.lock); ok || err != nil {
		t.Fatalf("a holder after the leader stopped: ok %v, %v", ok, err)
	}
}
