package ctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/jetjobs/jetjobs/config"
	"github.com/jetjobs/jetjobs/internal/cli"
	"github.com/jetjobs/jetjobs/internal/leadership"
	"github.com/jetjobs/jetjobs/internal/web"
	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// EnvWebToken is the environment variable holding serve's token (--token overrides it).
const EnvWebToken = "JETJOBS_WEB_TOKEN"

const (
	defaultListen = "127.0.0.1:8080"
	// minTokenLength keeps tokens out of guessing range: 16 characters or more.
	minTokenLength = 16
	// natsRetry is how long serve waits before trying NATS again after it failed.
	natsRetry = 15 * time.Second
	// shutdownTimeout bounds the requests still running when serve is stopped.
	shutdownTimeout = 5 * time.Second
)

var serveColumns = []column{
	{"url", "", "the console's address"},
	{"allow_actions", "", "whether retry, ignore, delete and refresh are on (--allow-actions)"},
	{"tables", "", "the tables it serves"},
}

func serveCommand() *command {
	return &command{
		name: "serve", args: "[TABLE...]", maxArgs: -1, argKind: argTables,
		summary: "serve the web console: progress, jobs, errors and actions in a browser",
		help: "Serves a web console for the tables (every configured table without arguments) until Ctrl-C: an overview with " +
			"the counts per status, rate and ETA of each table (as watch), a chart of recent throughput, the stream's messages per " +
			"priority (as stream) and which scheduler leads; each table's jobs with filters (status, priority, key values, due), " +
			"paged on the jobs table's index; a job with every field and its stack; errors grouped by message. " +
			"It is read-only unless --allow-actions, which adds retry, ignore, delete (after a confirmation page) and refresh. " +
			"It listens on loopback by default; any other address needs a token (--token or " + EnvWebToken + ", at least 16 characters), " +
			"checked on every request: open the console once with ?token=TOKEN, or send 'Authorization: Bearer TOKEN'. " +
			"The JSON API under /api/ uses the field names of -o json (see the README). Its address is printed on start; " +
			"actions, and requests that fail on the server's side, are logged on stderr.",
		example: []string{
			"jobsctl serve",
			"jobsctl serve lab.__analysis --allow-actions",
			"JETJOBS_WEB_TOKEN=$(openssl rand -hex 16) jobsctl serve --listen 0.0.0.0:8080",
		},
		fields: []outputDoc{{"-o json: one line when the console is up:", serveColumns}},
		setup: func(fs *pflag.FlagSet) runFunc {
			var listen, token string
			var allow bool
			var interval time.Duration
			var pageSize int
			fs.StringVar(&listen, "listen", defaultListen, "the address to listen on, `HOST:PORT` (port 0 picks a free one); beyond loopback a token is required")
			fs.BoolVar(&allow, "allow-actions", false, "allow retry, ignore, delete and refresh from the console (otherwise it is read-only)")
			fs.StringVar(&token, "token", "", "require this `TOKEN` (16 characters or more) on every request; prefer the environment, which other users cannot read")
			describeDefault(fs, "token", "$"+EnvWebToken+", else none (loopback only)")
			fs.DurationVar(&interval, "interval", defaultWatchInterval, "how often the overview is read while someone watches, e.g. 2s")
			fs.IntVar(&pageSize, "page-size", web.PageSizeDefault, fmt.Sprintf("jobs per page, `N` in 1..%d", web.MaxPageSize))
			return func(ctx context.Context, s *session, args []string) error {
				if token == "" {
					token = s.env.Getenv(EnvWebToken)
				}
				if err := checkServe(listen, token, interval, pageSize); err != nil {
					return err
				}
				names, err := s.tables(args)
				if err != nil {
					return err
				}
				all, err := s.openAll(ctx, names)
				if err != nil {
					return err
				}
				db, err := s.database(ctx)
				if err != nil {
					return err
				}
				cfg, _ := s.config()
				handles := map[string]*jobsdb.Jobs{}
				for i, n := range names {
					handles[n] = all[i]
				}
				logger, err := cli.NewLogger(s.env.Stderr, "info")
				if err != nil {
					return err
				}
				streams := &streamReader{cfg: cfg, tables: map[string]*queue.Table{}}
				defer streams.close()
				srv, err := web.New(web.Options{
					Tables: names,
					Open: func(ctx context.Context, table string) (*jobsdb.Jobs, error) {
						return handles[table], nil
					},
					DB:       db,
					LockName: leadership.LockName,
					Stream:   streams.health,
					Refresh: jobsdb.RefreshOptions{
						Priority:      cfg.Jobs.DefaultPriority,
						StaleTimeout:  cfg.Jobs.StaleTimeout.Duration(),
						OrphanTimeout: cfg.Jobs.OrphanTimeout.Duration(),
					},
					AllowActions: allow,
					Token:        token,
					Interval:     interval,
					PageSize:     pageSize,
					Timeout:      s.g.timeout,
					Location:     s.env.Location,
					Logger:       logger,
				})
				if err != nil {
					return err
				}
				ln, err := net.Listen("tcp", listen)
				if err != nil {
					return cli.Usagef("--listen %s: %v", listen, err)
				}
				url := "http://" + ln.Addr().String() + "/"
				if err := s.announce(url, allow, token != "", names); err != nil {
					ln.Close()
					return err
				}
				return serveUntilDone(ctx, srv, ln)
			}
		},
	}
}

// checkServe checks serve's flags before anything connects.
func checkServe(listen, token string, interval time.Duration, pageSize int) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return cli.Usagef("--listen %q: want HOST:PORT, e.g. %s: %v", listen, defaultListen, err)
	}
	if token != "" && len(token) < minTokenLength {
		return cli.Usagef("the token (--token or %s) has %d characters: use %d or more, e.g. $(openssl rand -hex 16)", EnvWebToken, len(token), minTokenLength)
	}
	if token == "" && !web.LoopbackHost(host) {
		return cli.Usagef("--listen %s is beyond loopback: anyone who reaches it could read the queue; set a token with %s (or --token), "+
			"or listen on 127.0.0.1", listen, EnvWebToken)
	}
	if interval < minWatchInterval {
		return cli.Usagef("--interval %v: want at least %v", interval, minWatchInterval)
	}
	if pageSize < 1 || pageSize > web.MaxPageSize {
		return cli.Usagef("--page-size %d: want 1..%d", pageSize, web.MaxPageSize)
	}
	return nil
}

// announce prints where the console is: a sentence, or one JSON line.
func (s *session) announce(url string, allow, token bool, tables []string) error {
	if s.g.output == formatJSON {
		r := &records{cols: serveColumns}
		r.add(url, allow, tables)
		return writeJSONLine(s.env.Stdout, r.object(0))
	}
	mode := "read-only (--allow-actions to retry, ignore, delete and refresh)"
	if allow {
		mode = "actions allowed"
	}
	s.printf("jobsctl serve: %s — %s; %s\n", url, mode, strings.Join(tables, ", "))
	if token {
		s.printf("jobsctl serve: open it once with ?token=<the token>; the browser keeps it in a cookie\n")
	}
	s.printf("jobsctl serve: Ctrl-C stops it\n")
	return nil
}

// serveUntilDone serves the console on ln and keeps its overview until ctx ends (Ctrl-C),
// then lets running requests finish for a moment.
func serveUntilDone(ctx context.Context, srv *web.Server, ln net.Listener) error {
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Run(runCtx)
	}()
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		stop()
		wg.Wait()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	stop()
	wg.Wait()
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: stop: %w", err)
	}
	return nil
}

// streamReader reads tables' stream state for the console as stream does, on one NATS
// connection made when first needed and made again after a failure, at most every natsRetry.
type streamReader struct {
	cfg config.Config

	mu       sync.Mutex
	nc       *nats.Conn
	tables   map[string]*queue.Table
	lastErr  error
	failedAt time.Time
}

func (r *streamReader) health(ctx context.Context, t *jobsdb.Target) (queue.Health, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nc == nil {
		if r.lastErr != nil && time.Since(r.failedAt) < natsRetry {
			return queue.Health{}, r.lastErr
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		nc, err := connectNATS(cctx, r.cfg)
		cancel()
		if err != nil {
			r.lastErr, r.failedAt = err, time.Now()
			return queue.Health{}, err
		}
		r.nc, r.lastErr = nc, nil
	}
	qt := r.tables[t.FullName()]
	if qt == nil {
		var err error
		if qt, err = queue.Open(ctx, r.nc, t.Schema, t.Name, streamConfig(r.cfg)); err != nil {
			return queue.Health{}, fmt.Errorf("stream of %s: %w", t.FullName(), err)
		}
		r.tables[t.FullName()] = qt
	}
	h, err := qt.Health(ctx)
	if err != nil {
		return queue.Health{}, fmt.Errorf("stream of %s: %w", t.FullName(), err)
	}
	return h, nil
}

func (r *streamReader) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nc != nil {
		r.nc.Close()
	}
}
