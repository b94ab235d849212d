package schedulercmd

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/queue"
)

// natsServer returns how to connect to NATS: to the configured server, or to an embedded one
// that it starts when no URL was given (by --nats, the environment or the config file) or
// with --embedded-nats. stop shuts an embedded server down.
func natsServer(cfg config.Config, f *flags, log *slog.Logger) (connect queue.ConnectOptions, stop func(), err error) {
	connect = cli.ConnectOptions(cfg, serviceName, log)
	given := f.config.NATSURLGiven()
	if given && !f.embedded {
		return connect, func() {}, nil
	}
	if given {
		log.Warn("--embedded-nats: ignoring the configured NATS URL", "url", cfg.NATS.URL)
	}
	srv, err := startEmbedded(f, log)
	if err != nil {
		return queue.ConnectOptions{}, nil, err
	}
	stop = func() {
		srv.Shutdown()
		log.Info("embedded NATS server stopped")
	}
	return queue.ConnectOptions{URL: srv.ClientURL(), Name: connect.Name, Logger: log}, stop, nil
}

// startEmbedded starts the embedded NATS server on --embedded-nats-listen with its store in
// --embedded-nats-store. A listen address off loopback, or not host:port, and a store that
// cannot be created are usage errors.
func startEmbedded(f *flags, log *slog.Logger) (*queue.Embedded, error) {
	if f.embeddedStore == "" {
		return nil, cli.Usagef("--embedded-nats-store: no user cache directory to default to; give a directory")
	}
	if err := os.MkdirAll(f.embeddedStore, 0o700); err != nil {
		return nil, cli.Usagef("--embedded-nats-store: %v", err)
	}
	srv, err := queue.StartEmbedded(queue.EmbeddedOptions{Listen: f.embeddedListen, StoreDir: f.embeddedStore})
	switch {
	case errors.Is(err, queue.ErrNotLoopback):
		return nil, cli.Usagef("--embedded-nats-listen %q: the embedded NATS server has no authentication, so it listens on loopback only (127.0.0.1, ::1 or localhost); for workers on other machines run nats-server and give its URL with --nats", f.embeddedListen)
	case errors.Is(err, queue.ErrBadListen):
		return nil, &cli.UsageError{Err: fmt.Errorf("--embedded-nats-listen: %w", err)}
	case err != nil:
		return nil, fmt.Errorf("start the embedded NATS server on %s: %w", f.embeddedListen, err)
	}
	log.Info("embedded NATS server started", "url", srv.ClientURL(), "store", f.embeddedStore)
	return srv, nil
}
