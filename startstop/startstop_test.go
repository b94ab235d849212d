package startstop_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/jetjobs/jetjobs/startstop"
)

// ticker is a service that counts its runs and records why its context ended.
type ticker struct {
	startstop.Base
	runs    atomic.Int32
	cause   atomic.Value
	started chan struct{}
	fail    error
}

func newTicker() *ticker { return &ticker{started: make(chan struct{}, 10)} }

func (s *ticker) Start(ctx context.Context) error {
	ctx, ok, done := s.StartInit(ctx)
	if !ok {
		return nil
	}
	if s.fail != nil {
		done()
		return s.fail
	}
	s.runs.Add(1)
	go func() {
		defer done()
		s.started <- struct{}{}
		<-ctx.Done()
		s.cause.Store(context.Cause(ctx))
	}()
	return nil
}

func TestStopWaitsAndTellsAStopFromTheParentEnding(t *testing.T) {
	s := newTicker()
	s.Stop() // before Start: nothing to do
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil || s.runs.Load() != 1 {
		t.Fatalf("a second Start while running started another run (%d runs, %v)", s.runs.Load(), err)
	}
	<-s.started
	s.Stop()
	if c, _ := s.cause.Load().(error); !errors.Is(c, startstop.ErrStop) {
		t.Errorf("cause %v, want ErrStop: Stop returned before the goroutine recorded it", c)
	}
	s.Stop() // twice: nothing to do

	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil || s.runs.Load() != 2 {
		t.Fatalf("a stopped service did not start again (%d runs, %v)", s.runs.Load(), err)
	}
	<-s.started
	cancel()
	<-s.Stopped()
	if c, _ := s.cause.Load().(error); !errors.Is(c, context.Canceled) {
		t.Errorf("cause %v, want the parent's cancellation", c)
	}
}

func TestStartAllStopsWhatStartedWhenOneFails(t *testing.T) {
	a, b, c := newTicker(), newTicker(), newTicker()
	b.fail = errors.New("no")
	if err := startstop.StartAll(context.Background(), a, b, c); !errors.Is(err, b.fail) {
		t.Fatalf("StartAll = %v, want b's error", err)
	}
	<-a.Stopped()
	if c.runs.Load() != 0 {
		t.Error("a service after the failing one was started")
	}
	b.fail = nil
	if err := startstop.StartAll(context.Background(), a, b, c); err != nil {
		t.Fatal(err)
	}
	startstop.StopAll(a, b, c)
	for _, s := range []*ticker{a, b, c} {
		select {
		case <-s.Stopped():
		default:
			t.Error("StopAll returned before a service stopped")
		}
	}
}
