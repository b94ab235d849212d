package queue

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go"
)

// Reconnect and first-connection pacing. The delay grows exponentially from
// ReconnectDelayInitial, with ±50% jitter, to at most ReconnectDelayMax, so a fleet of workers does not hammer a restarting server in step, and a
// server that comes back is found within about two seconds.
const (
	ReconnectDelayInitial = 50 * time.Millisecond
	ReconnectDelayMax     = 2 * time.Second
)

// ConnectOptions say how to reach NATS.
type ConnectOptions struct {
	URL         string // server URL(s), comma-separated; default nats.DefaultURL (nats://127.0.0.1:4222)
	Credentials string // .creds file (JWT and NKey seed), optional
	TLSCA       string // PEM CA file to verify the server, optional
	TLSCert     string // PEM client certificate, optional (with TLSKey)
	TLSKey      string // PEM key of TLSCert
	Name        string // connection name shown by the server, e.g. "jetjobs-worker"
	// Background: when the first attempt finds no server (nothing answers, a timeout), return
	// at once a connection that keeps trying in the background, its status RECONNECTING until
	// a server answers, instead of waiting for one. For programs that can work without NATS
	// meanwhile (dispatch=auto). Refusals retrying cannot fix are errors all the same.
	Background bool
	// Logger receives a line for each failed first-connection attempt, each disconnect and
	// each reconnect. Nil: nothing is logged.
	Logger *slog.Logger
}

// Connect connects to NATS. The first connection is retried with exponential backoff until it
// succeeds, ctx ends or the server refuses us for a reason retrying cannot fix (authorization,
// TLS, a missing file); the error then says what to do. Once connected, the connection
// reconnects forever (after a backoff-paced delay capped at ReconnectDelayMax) and buffers
// publishes meanwhile; the caller closes it.
func Connect(ctx context.Context, opts ConnectOptions) (*nats.Conn, error) {
	url := opts.URL
	if url == "" {
		url = nats.DefaultURL
	}
	natsOpts, err := opts.natsOptions()
	if err != nil {
		return nil, err
	}

	bo := newReconnectBackOff()
	var lastErr error
	for {
		nc, err := connectOnce(ctx, url, natsOpts)
		if err == nil {
			return nc, nil
		}
		if opts.Background && ctx.Err() == nil && retryableConnectError(err) {
			if opts.Logger != nil {
				opts.Logger.Warn("cannot reach NATS; connecting in the background", "url", url, "err", err)
			}
			return connectOnce(ctx, url, append(natsOpts, nats.RetryOnFailedConnect(true)))
		}
		wait := bo.NextBackOff()
		if ctx.Err() == nil {
			if !retryableConnectError(err) {
				return nil, fmt.Errorf("queue: connect to NATS at %s: %w", url, err)
			}
			lastErr = err
			if opts.Logger != nil {
				opts.Logger.Warn("cannot reach NATS; retrying", "url", url, "err", err, "retry_in", wait.Round(time.Millisecond))
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			if lastErr == nil {
				lastErr = errors.New("no connection attempt finished")
			}
			return nil, fmt.Errorf("queue: connect to NATS at %s: %w (gave up: %w); is nats-server running there "+
				"with JetStream (nats-server -js)? start one, or run jetjobs with --embedded-nats", url, lastErr, ctx.Err())
		case <-timer.C:
		}
	}
}

// Ping asks the JetStream API of nc's server for its account information: an error says that
// JetStream does not answer (no connection, JetStream disabled or without a leader).
func Ping(ctx context.Context, nc *nats.Conn) error {
	msg, err := nc.RequestWithContext(ctx, "$JS.API.INFO", nil)
	if err != nil {
		return fmt.Errorf("queue: ping JetStream: %w", err)
	}
	var reply struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return fmt.Errorf("queue: ping JetStream: %w", err)
	}
	if reply.Error != nil {
		return fmt.Errorf("queue: ping JetStream: %s (%d)", reply.Error.Description, reply.Error.Code)
	}
	return nil
}

// natsOptions turns the options into nats.go options, checking the files exist so that a typo
// is reported at once rather than retried.
func (o ConnectOptions) natsOptions() ([]nats.Option, error) {
	natsOpts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
	}
	if o.Name != "" {
		natsOpts = append(natsOpts, nats.Name(o.Name))
	}
	if log := o.Logger; log != nil {
		natsOpts = append(natsOpts,
			nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
				if nc.IsClosed() || nc.IsDraining() {
					return // closing on purpose
				}
				log.Warn("disconnected from NATS; reconnecting", "err", err)
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) {
				log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
			}),
		)
	}
	for _, f := range []struct{ what, path string }{
		{"credentials file", o.Credentials},
		{"TLS CA file", o.TLSCA},
		{"TLS certificate", o.TLSCert},
		{"TLS key", o.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("queue: NATS %s: %w", f.what, err)
		}
	}
	if o.Credentials != "" {
		natsOpts = append(natsOpts, nats.UserCredentials(o.Credentials))
	}
	if o.TLSCA != "" {
		natsOpts = append(natsOpts, nats.RootCAs(o.TLSCA))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, errors.New("queue: NATS TLS client certificate and key go together: set both or neither")
	}
	if o.TLSCert != "" {
		natsOpts = append(natsOpts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return natsOpts, nil
}

// connectOnce makes one connection attempt, returning early when ctx ends (a dial can take up
// to nats.go's two-second timeout); a connection made after that is closed.
func connectOnce(ctx context.Context, url string, natsOpts []nats.Option) (*nats.Conn, error) {
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, natsOpts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		return r.nc, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// retryableConnectError reports whether a failed first connection may succeed later: no server
// answering, a network error, a timeout. Authorization, TLS and configuration errors are not.
func retryableConnectError(err error) bool {
	var unknownAuthority x509.UnknownAuthorityError
	var invalidCert x509.CertificateInvalidError
	var hostname x509.HostnameError
	if errors.As(err, &unknownAuthority) || errors.As(err, &invalidCert) || errors.As(err, &hostname) {
		return false
	}
	var netErr net.Error
	return errors.Is(err, nats.ErrNoServers) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, io.EOF) ||
		errors.As(err, &netErr)
}

// newReconnectBackOff is the pacing of reconnects and first-connection retries.
func newReconnectBackOff() *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     ReconnectDelayInitial,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         ReconnectDelayMax * 2 / 3, // +50% jitter reaches ReconnectDelayMax
	}
}

// reconnectDelay is nats.go's CustomReconnectDelay: the delay after the attempts-th pass over
// the server list. It walks a fresh backoff (bounded: the interval saturates after a few steps)
// so it keeps no state across reconnect episodes.
func reconnectDelay(attempts int) time.Duration {
	bo := newReconnectBackOff()
	d := bo.NextBackOff()
	for i := 1; i < attempts && i < 16; i++ {
		d = bo.NextBackOff()
	}
	return d
}
