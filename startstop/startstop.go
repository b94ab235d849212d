// Package startstop is the lifecycle of jetjobs' long-running parts: the worker, its batch
// completer and lease keeper, the scheduler and each of its per-table services. A Service is
// started with a context, runs in the background, and is stopped with Stop, which returns only
// once everything the service started has returned. Services embed Base for the bookkeeping.
//
// # Invariants
//
//   - Start returns once the service runs (or failed to start); it never blocks for the
//     service's lifetime.
//   - Stop returns only after the service's goroutines have returned; it may be called any
//     number of times, also before Start or after the service ended by itself.
//   - A service runs until Stop or until the context given to Start ends, whichever is
//     first; it may also end by itself (Stopped is closed then).
//   - A stopped service may be started again.
package startstop

import (
	"context"
	"errors"
	"sync"
)

// ErrStop is the cause of a service's context when Stop cancels it: a controlled stop, as
// opposed to the parent context ending (context.Cause tells them apart).
var ErrStop = errors.New("service stopped")

// Service is a part that runs in the background between Start and Stop.
type Service interface {
	// Start starts the service and returns once it runs. The service runs until Stop is
	// called or ctx ends. An error means the service did not start.
	Start(ctx context.Context) error
	// Stop stops the service and returns once it has stopped.
	Stop()
}

// Base implements the bookkeeping of a Service, for embedding:
//
//	func (s *service) Start(ctx context.Context) error {
//		ctx, ok, done := s.StartInit(ctx)
//		if !ok {
//			return nil // already running
//		}
//		go func() {
//			defer done()
//			s.run(ctx) // returns when ctx ends
//		}()
//		return nil
//	}
//
// Stop and Stopped come with it. A Start that fails after StartInit calls done before it
// returns its error.
type Base struct {
	mu      sync.Mutex
	cancel  context.CancelCauseFunc
	stopped chan struct{}
}

// StartInit begins a Start: it returns the service's context (cancelled with ErrStop by Stop,
// and when ctx ends), whether to start (false when the service is already running), and done,
// which the service calls exactly once when its last goroutine returns.
func (b *Base) StartInit(ctx context.Context) (context.Context, bool, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped != nil {
		select {
		case <-b.stopped: // ended by itself: may start again
		default:
			return ctx, false, func() {}
		}
	}
	stopped := make(chan struct{})
	b.stopped = stopped
	ctx, b.cancel = context.WithCancelCause(ctx)
	cancel := b.cancel
	return ctx, true, sync.OnceFunc(func() {
		cancel(ErrStop)
		close(stopped)
	})
}

// Stop cancels the service's context and waits until it called done. It does nothing when
// the service never started.
func (b *Base) Stop() {
	b.mu.Lock()
	cancel, stopped := b.cancel, b.stopped
	b.mu.Unlock()
	if stopped == nil {
		return
	}
	cancel(ErrStop)
	<-stopped
}

// Stopped returns a channel closed once the current (or last) run of the service ended; nil
// before the first Start.
func (b *Base) Stopped() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stopped
}

// StartAll starts the services in order. When one fails, those already started are stopped
// (in reverse order) and its error is returned.
func StartAll(ctx context.Context, services ...Service) error {
	for i, s := range services {
		if err := s.Start(ctx); err != nil {
			StopAll(services[:i]...)
			return err
		}
	}
	return nil
}

// StopAll stops the services in reverse order, so that a service is stopped before those it
// was started after (and may depend on).
func StopAll(services ...Service) {
	for i := len(services) - 1; i >= 0; i-- {
		services[i].Stop()
	}
}
