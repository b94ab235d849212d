package cli

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jetjobs/jetjobs/startstop"
)

// httpTimeout bounds reading a request's header and the graceful shutdown.
const httpTimeout = 5 * time.Second

// HTTPServer serves a handler (health, readiness, metrics) on an address between Start and
// Stop.
type HTTPServer struct {
	startstop.Base
	addr    string
	handler http.Handler
	log     *slog.Logger
	bound   string
}

// NewHTTPServer returns a server of handler on addr (host:port; port 0 picks a free one).
func NewHTTPServer(addr string, handler http.Handler, log *slog.Logger) *HTTPServer {
	return &HTTPServer{addr: addr, handler: handler, log: log}
}

// Start listens on the address (an address that cannot be listened on is a usage error) and
// serves in the background.
func (s *HTTPServer) Start(ctx context.Context) error {
	ctx, ok, done := s.StartInit(ctx)
	if !ok {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		done()
		return Usagef("--metrics-addr %s: %v", s.addr, err)
	}
	s.bound = ln.Addr().String()
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: httpTimeout}
	s.log.Info("serving HTTP", "addr", s.bound)
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP server failed", "err", err)
		}
	}()
	go func() {
		defer done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), httpTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}()
	return nil
}

// Addr is the address the server listens on, once started.
func (s *HTTPServer) Addr() string { return s.bound }
