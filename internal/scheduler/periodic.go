package scheduler

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/jetjobs/jetjobs/startstop"
)

// periodic is the shape of every service of a table's leader (refresher, rescuer, dispatcher,
// sampler): a step run in a loop between Start and Stop. The loop runs the step at once, then
// at the time the step returns, or at once when poked, until the service's context ends. A
// step that fails is logged and retried after an exponential backoff of its own, so that one
// service's failures (a broken key source, say) never hold up another's work.
type periodic struct {
	startstop.Base
	log       *slog.Logger
	failMsg   string     // logged with the error and the wait when a step fails
	failLevel slog.Level // of that log
	backoff   *backoff.ExponentialBackOff
	poke      chan struct{}
	// pokeAt signals that at holds a time to run the step at, if earlier than planned.
	pokeAt chan struct{}
	atMu   sync.Mutex
	at     time.Time
	step   func(context.Context) (next time.Time, err error)
	// begin, when not nil, runs at each Start; the function it returns runs when the service
	// has stopped.
	begin func() (end func())
}

// init sets the loop up: step, what to log when it fails, and the backoff after failures
// (from first to at most maxWait).
func (p *periodic) init(log *slog.Logger, step func(context.Context) (time.Time, error), failMsg string, failLevel slog.Level, first, maxWait time.Duration) {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = first
	b.MaxInterval = max(maxWait, first)
	b.Reset()
	p.log, p.step, p.failMsg, p.failLevel, p.backoff = log, step, failMsg, failLevel, b
	p.poke = make(chan struct{}, 1)
	p.pokeAt = make(chan struct{}, 1)
}

// Start runs the loop in the background until Stop or the end of ctx.
func (p *periodic) Start(ctx context.Context) error {
	ctx, ok, done := p.StartInit(ctx)
	if !ok {
		return nil
	}
	end := func() {}
	if p.begin != nil {
		end = p.begin()
	}
	go func() {
		defer done()
		defer end()
		p.run(ctx)
	}()
	return nil
}

// Poke makes the loop run its step at once, or right after the step that is running: what
// the step reads may have changed since that step began.
func (p *periodic) Poke() {
	select {
	case p.poke <- struct{}{}:
	default: // a poke is pending already
	}
}

// PokeAt makes the loop run its step at t, unless it runs sooner anyway: the timer is
// re-armed when t is earlier than the planned run. A t that has passed is a Poke.
func (p *periodic) PokeAt(t time.Time) {
	if !time.Now().Before(t) {
		p.Poke()
		return
	}
	p.atMu.Lock()
	if p.at.IsZero() || t.Before(p.at) {
		p.at = t
	}
	p.atMu.Unlock()
	select {
	case p.pokeAt <- struct{}{}:
	default: // a PokeAt is pending already; it reads the earliest time
	}
}

func (p *periodic) run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	planned := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-p.poke:
		case <-p.pokeAt:
			p.atMu.Lock()
			at := p.at
			p.at = time.Time{}
			p.atMu.Unlock()
			if !at.IsZero() && at.Before(planned) {
				planned = at
				timer.Reset(time.Until(at))
			}
			continue
		}
		next, err := p.step(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			wait := p.backoff.NextBackOff()
			p.log.Log(ctx, p.failLevel, p.failMsg, "err", err, "retry_in", wait.Round(time.Millisecond))
			next = time.Now().Add(wait)
		} else {
			p.backoff.Reset()
		}
		planned = next
		timer.Reset(time.Until(next))
	}
}
