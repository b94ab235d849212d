package queue

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultEmbeddedListen is where the embedded server listens when EmbeddedOptions.Listen is
// empty: NATS's standard port on IPv4 loopback, so jobsctl and workers on the same machine
// find it with the default NATS URL. It clashes with a standalone nats-server on that port;
// use "127.0.0.1:0" for a free port and pass ClientURL to the other processes.
const DefaultEmbeddedListen = "127.0.0.1:4222"

// Embedded-server limits. jetjobs streams use file storage; memory storage is capped small.
const (
	embeddedMaxMemory    = 64 << 20
	embeddedStartTimeout = 10 * time.Second
	embeddedServerName   = "jetjobs-embedded"
)

// EmbeddedOptions configure an in-process NATS server with JetStream.
type EmbeddedOptions struct {
	// Listen is host:port on loopback (127.0.0.0/8, ::1 or "localhost"); port 0 picks a free
	// port (read it back with ClientURL). Default DefaultEmbeddedListen. Other hosts are
	// refused: the embedded server has no authentication, so it must not be reachable from the
	// network. Use a standalone nats-server for workers on other machines.
	Listen string
	// StoreDir is the JetStream store directory. Required: nats-server would otherwise silently
	// use a shared temporary directory.
	StoreDir string
}

// Embedded is an in-process NATS server with JetStream, for single-machine setups and tests.
type Embedded struct {
	ns *server.Server
}

// StartEmbedded starts the server and waits until it accepts connections. The server installs
// no signal handlers and logs nothing; a failure to start (port in use, store not writable) is
// returned.
func StartEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("queue: embedded NATS needs a JetStream store directory (EmbeddedOptions.StoreDir)")
	}
	listen := opts.Listen
	if listen == "" {
		listen = DefaultEmbeddedListen
	}
	host, port, err := loopbackHostPort(listen)
	if err != nil {
		return nil, err
	}

	ns, err := server.NewServer(&server.Options{
		ServerName:         embeddedServerName,
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           opts.StoreDir,
		JetStreamMaxMemory: embeddedMaxMemory,
		NoLog:              true,
		NoSigs:             true,
	})
	if err != nil {
		return nil, fmt.Errorf("queue: embedded NATS: %w", err)
	}
	logger := &startupLogger{}
	ns.SetLogger(logger, false, false)

	go ns.Start()
	deadline := time.Now().Add(embeddedStartTimeout)
	for !ns.ReadyForConnections(25 * time.Millisecond) {
		if msg := logger.fatal(); msg != "" || time.Now().After(deadline) {
			ns.Shutdown()
			ns.WaitForShutdown()
			if msg == "" {
				msg = "not ready within " + embeddedStartTimeout.String()
			}
			return nil, fmt.Errorf("queue: embedded NATS on %s: %s", listen, msg)
		}
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("queue: embedded NATS on %s: JetStream did not start (store %s): %s", listen, opts.StoreDir, logger.fatal())
	}
	return &Embedded{ns: ns}, nil
}

// ClientURL is the URL other processes connect to, e.g. "nats://127.0.0.1:4222".
func (e *Embedded) ClientURL() string { return e.ns.ClientURL() }

// Shutdown stops the server and waits for it. Connected clients see a disconnect.
func (e *Embedded) Shutdown() {
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
}

// loopbackHostPort splits listen and refuses hosts that are not loopback. Port 0 becomes
// server.RANDOM_PORT.
func loopbackHostPort(listen string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("%w %q: %v (want host:port, e.g. %s)", ErrBadListen, listen, err, DefaultEmbeddedListen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w %q: the port must be a number in 0..65535", ErrBadListen, listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return "", 0, fmt.Errorf("%w: %q is not a loopback address (use 127.0.0.1, ::1 or localhost; "+
				"for workers on other machines run a standalone nats-server)", ErrNotLoopback, host)
		}
	}
	return host, port, nil
}

// startupLogger discards the server's logging but keeps its first fatal message (a listener
// that cannot bind, a store JetStream cannot use), so StartEmbedded can say why the server did
// not come up. Unlike nats-server's own logger, its Fatalf does not exit the process.
type startupLogger struct {
	mu    sync.Mutex
	first string
}

func (l *startupLogger) Fatalf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.first == "" {
		l.first = fmt.Sprintf(format, v...)
	}
}

func (l *startupLogger) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

func (l *startupLogger) Errorf(string, ...any)  {}
func (l *startupLogger) Noticef(string, ...any) {}
func (l *startupLogger) Warnf(string, ...any)   {}
func (l *startupLogger) Debugf(string, ...any)  {}
func (l *startupLogger) Tracef(string, ...any)  {}
