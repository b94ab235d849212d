package web

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/jobsdb"
)

// sampler reads every table's progress, leader and stream state, as jobsctl watch and stream
// do, keeps the latest reading with a short history for the throughput chart, and computes
// the rate and ETA with watch's estimator.
type sampler struct {
	s *Server

	mu         sync.Mutex
	tables     map[string]*tableState
	lastAsked  time.Time
	lastSample time.Time  // when the last reading started; zero before the first
	readMu     sync.Mutex // one reading at a time
}

type tableState struct {
	view      TableOverview
	estimator cli.RateEstimator
	history   []Point
}

func newSampler(s *Server) *sampler {
	sm := &sampler{s: s, tables: map[string]*tableState{}}
	for _, name := range s.opts.Tables {
		sm.tables[name] = &tableState{view: TableOverview{Table: name}}
	}
	return sm
}

// touch records that someone asked for something: the overview stays live for idleAfter.
func (sm *sampler) touch() {
	sm.mu.Lock()
	sm.lastAsked = sm.s.opts.Now()
	sm.mu.Unlock()
}

func (sm *sampler) run(ctx context.Context) {
	sm.once(ctx)
	t := time.NewTicker(sm.s.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sm.mu.Lock()
		idle := sm.s.opts.Now().Sub(sm.lastAsked) > idleAfter
		sm.mu.Unlock()
		if !idle {
			sm.once(ctx)
		}
	}
}

// once reads every table now.
func (sm *sampler) once(ctx context.Context) {
	sm.readMu.Lock()
	defer sm.readMu.Unlock()
	sm.readAll(ctx)
}

// onceAfter reads every table unless a reading started after last ended meanwhile: requests
// that found the same stale reading wait for one new reading, not one each.
func (sm *sampler) onceAfter(ctx context.Context, last time.Time) {
	sm.readMu.Lock()
	defer sm.readMu.Unlock()
	sm.mu.Lock()
	fresh := !sm.lastSample.Equal(last)
	sm.mu.Unlock()
	if !fresh {
		sm.readAll(ctx)
	}
}

// readAll reads every table, at once; the caller holds readMu.
func (sm *sampler) readAll(ctx context.Context) {
	start := sm.s.opts.Now()
	var wg sync.WaitGroup
	for _, name := range sm.s.opts.Tables {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sm.read(ctx, name)
		}()
	}
	wg.Wait()
	sm.mu.Lock()
	sm.lastSample = start
	sm.mu.Unlock()
}

// read reads one table: progress and leader first, shown at once, then the stream (NATS may
// be slow or away).
func (sm *sampler) read(ctx context.Context, name string) {
	s := sm.s
	ctx, cancel := context.WithTimeout(ctx, max(s.opts.Interval*5, 10*time.Second))
	defer cancel()
	now := s.opts.Now()
	v := TableOverview{Table: name, Time: apiTime(now)}
	j, err := s.table(ctx, name)
	var p jobsdb.Progress
	if err == nil {
		p, err = j.Progress(ctx)
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	if err != nil {
		v.ReadError = err.Error()
	} else {
		v.Progress = p
	}
	if s.opts.DB != nil && s.opts.LockName != nil {
		if h, ok, err := leaderOf(ctx, s, name); err != nil {
			v.LeaderError = err.Error()
		} else if ok {
			v.Leader = &h
		}
	}

	sm.mu.Lock()
	st := sm.tables[name]
	if v.ReadError == "" {
		r := st.estimator.Observe(now, p.Pending+p.Reserved)
		if r.Known {
			rate := round(r.PerSecond, 3)
			v.Rate = &rate
		}
		if r.ETAKnown {
			eta := round(r.ETA.Seconds(), 0)
			v.ETASeconds = &eta
		}
		st.history = append(st.history, Point{Time: v.Time, Rate: v.Rate, Remaining: p.Pending + p.Reserved})
		if len(st.history) > historyLength {
			st.history = st.history[len(st.history)-historyLength:]
		}
	}
	v.Stream, v.StreamError = st.view.Stream, st.view.StreamError
	st.view = v
	sm.mu.Unlock()

	if s.opts.Stream == nil || j == nil {
		return
	}
	h, err := s.opts.Stream(ctx, j.Target())
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if err != nil {
		st.view.Stream, st.view.StreamError = nil, err.Error()
	} else {
		st.view.Stream, st.view.StreamError = streamRows(h), ""
	}
}

// overview returns the latest reading; when there is none yet, or it is older than two
// intervals (nobody asked for a while, so the sampler paused), it reads first.
func (sm *sampler) overview(ctx context.Context) (Overview, error) {
	sm.mu.Lock()
	last := sm.lastSample
	stale := last.IsZero() || sm.s.opts.Now().Sub(last) > 2*sm.s.opts.Interval
	sm.mu.Unlock()
	if stale {
		sm.onceAfter(ctx, last)
		if err := ctx.Err(); err != nil {
			return Overview{}, err
		}
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	o := Overview{Time: apiTime(sm.s.opts.Now()), Interval: sm.s.opts.Interval.Seconds(), Tables: []TableOverview{}}
	for _, name := range sm.s.opts.Tables {
		st := sm.tables[name]
		v := st.view
		v.History = append([]Point{}, st.history...)
		o.Tables = append(o.Tables, v)
	}
	return o, nil
}

// readOne reads one table now (after an action).
func (sm *sampler) readOne(ctx context.Context, name string) {
	sm.readMu.Lock()
	defer sm.readMu.Unlock()
	sm.read(ctx, name)
}
