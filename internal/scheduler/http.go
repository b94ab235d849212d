package scheduler

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/worker"
)

// readyTimeout bounds the MySQL ping of /readyz.
const readyTimeout = 2 * time.Second

// Handler serves the scheduler's HTTP endpoints:
//
//   - /healthz: 200 while the process runs;
//   - /readyz: 200 when MySQL answers a ping, the NATS connection is up (with dispatch=nats
//     only) and every table's leadership state is known (leader or standby), 503 otherwise;
//     the body lists each check;
//   - /metrics: Options.Metrics, or 404 when it is nil.
func (s *Scheduler) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	if s.opts.Metrics != nil {
		mux.Handle("/metrics", s.opts.Metrics)
	} else {
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "metrics are not enabled in this build", http.StatusNotFound)
		})
	}
	return mux
}

func (s *Scheduler) serveReady(w http.ResponseWriter, r *http.Request) {
	var lines []string
	ready := true
	check := func(ok bool, format string, args ...any) {
		mark := "ok  "
		if !ok {
			mark, ready = "FAIL", false
		}
		lines = append(lines, mark+" "+fmt.Sprintf(format, args...))
	}

	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if s.opts.DB == nil {
		check(false, "mysql: no connection")
	} else if err := s.opts.DB.PingContext(ctx); err != nil {
		check(false, "mysql: %v", err)
	} else {
		check(true, "mysql")
	}
	switch {
	case s.opts.Dispatch == worker.DispatchMySQL:
		check(true, "nats: not used (dispatch=mysql)")
	case s.opts.NATS == nil || !s.opts.NATS.IsConnected():
		status := "no connection"
		if s.opts.NATS != nil {
			status = s.opts.NATS.Status().String()
		}
		if s.opts.Dispatch == worker.DispatchAuto {
			// Workers claim from MySQL meanwhile: the scheduler still does all it can.
			check(true, "nats: %s (dispatch=auto: publishing when it returns)", strings.ToLower(status))
		} else {
			check(false, "nats: %s", strings.ToLower(status))
		}
	default:
		check(true, "nats")
	}
	states := s.States()
	names := make([]string, 0, len(states))
	for name := range states {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		st := states[name]
		check(st != leadership.StateUnknown, "table %s: %s", name, st)
	}

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}
