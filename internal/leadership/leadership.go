package leadership

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Defaults of Config.
const (
	// RetryIntervalDefault is how often a standby tries to take the lock: the bulk of the
	// takeover time after a leader dies, for one cheap statement per table per second.
	RetryIntervalDefault = time.Second
	// CheckIntervalDefault is how often a leader checks that it still holds the lock.
	CheckIntervalDefault = time.Second
	// CheckTimeoutDefault bounds one check; a slower check counts as losing the lock.
	CheckTimeoutDefault = time.Second
	// MaxErrorBackoffDefault caps the wait between attempts while MySQL fails.
	MaxErrorBackoffDefault = 5 * time.Second
)

// lockPrefix starts every lock name.
const lockPrefix = "jetjobs:"

// maxLockName is MySQL's limit on lock names (MariaDB has none).
const maxLockName = 64

// LockName returns the lock name for a target table "schema.table": "jetjobs:schema.table"
// when that fits MySQL's 64-character limit and has no upper-case letters (MySQL may compare
// lock names without regard to case, while table names on Linux are case-sensitive), otherwise
// "jetjobs:" + the first characters of the table + "~" + 32 hex digits of its SHA-256.
func LockName(table string) string {
	name := lockPrefix + table
	if len(name) <= maxLockName && strings.ToLower(name) == name {
		return name
	}
	sum := sha256.Sum256([]byte(table))
	digest := hex.EncodeToString(sum[:16])
	room := maxLockName - len(lockPrefix) - 1 - len(digest)
	readable := strings.ToLower(table)
	if len(readable) > room {
		readable = readable[:room]
	}
	return lockPrefix + readable + "~" + digest
}

// State is what an elector knows about its role.
type State int32

// The states of an elector.
const (
	// StateUnknown: not yet asked MySQL, or the last attempt failed (MySQL unreachable).
	StateUnknown State = iota
	// StateStandby: another connection holds the lock.
	StateStandby
	// StateLeader: this elector holds the lock (including the takeover delay before it leads).
	StateLeader
)

func (s State) String() string {
	switch s {
	case StateStandby:
		return "standby"
	case StateLeader:
		return "leader"
	default:
		return "unknown"
	}
}

// Config configures an Elector. Zero values take the defaults.
type Config struct {
	// RetryInterval between a standby's attempts to take the lock. Default
	// RetryIntervalDefault (1 s). Shorter takes over sooner at one more statement per attempt.
	RetryInterval time.Duration
	// CheckInterval between a leader's checks that it still holds the lock. Default
	// CheckIntervalDefault (1 s). It bounds how long a leader that lost its connection keeps
	// leading.
	CheckInterval time.Duration
	// CheckTimeout bounds each check; a slower one counts as a loss. Default
	// CheckTimeoutDefault (1 s).
	CheckTimeout time.Duration
	// TakeoverDelay is how long a new holder of the lock waits, checking it, before it leads,
	// so that a previous holder that lost its connection has noticed. Default CheckInterval +
	// CheckTimeout. Never set it below that: it is what keeps two leaders from overlapping.
	TakeoverDelay time.Duration
	// MaxErrorBackoff caps the exponential wait between attempts while MySQL fails. Default
	// MaxErrorBackoffDefault (5 s).
	MaxErrorBackoff time.Duration
	// Logger receives state changes and errors. Default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.RetryInterval <= 0 {
		c.RetryInterval = RetryIntervalDefault
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = CheckIntervalDefault
	}
	if c.CheckTimeout <= 0 {
		c.CheckTimeout = CheckTimeoutDefault
	}
	if c.TakeoverDelay <= 0 {
		c.TakeoverDelay = c.CheckInterval + c.CheckTimeout
	}
	if c.MaxErrorBackoff < c.RetryInterval {
		c.MaxErrorBackoff = max(MaxErrorBackoffDefault, c.RetryInterval)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// errLost reports that the lock is no longer held by the elector's connection.
var errLost = errors.New("lock lost")

// Elector campaigns for one named lock and runs a function while it leads.
type Elector struct {
	db    *sql.DB
	name  string
	cfg   Config
	log   *slog.Logger
	state atomic.Int32

	mu      sync.Mutex // guards running
	running bool
}

// New returns an elector for the lock name (see LockName) on db. It does not touch the
// database until Run.
func New(db *sql.DB, name string, cfg Config) *Elector {
	cfg = cfg.withDefaults()
	return &Elector{db: db, name: name, cfg: cfg, log: cfg.Logger.With("lock", name)}
}

// Name returns the lock name.
func (e *Elector) Name() string { return e.name }

// State returns the elector's current role.
func (e *Elector) State() State { return State(e.state.Load()) }

func (e *Elector) setState(s State) {
	if old := State(e.state.Swap(int32(s))); old != s {
		e.log.Debug("leadership state", "from", old, "to", s)
	}
}

// Run campaigns for the lock until ctx ends. Each time it wins, it calls lead with a context
// that is cancelled when the lock is lost or ctx ends, and waits for lead to return before it
// releases the lock and campaigns again. lead must return promptly once its context ends. Run
// returns nil when ctx ends; it is an error to run one Elector twice at once.
func (e *Elector) Run(ctx context.Context, lead func(ctx context.Context)) error {
	e.mu.Lock()
	if e.running {
		e.mu.Unlock()
		return errors.New("leadership: elector is already running")
	}
	e.running = true
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.running = false
		e.mu.Unlock()
	}()
	defer e.setState(StateUnknown)

	errBackoff := backoff.NewExponentialBackOff()
	errBackoff.InitialInterval = e.cfg.RetryInterval
	errBackoff.MaxInterval = e.cfg.MaxErrorBackoff
	errBackoff.Reset()

	var conn *sql.Conn
	defer func() {
		if conn != nil {
			e.discard(conn)
		}
	}()
	for {
		if ctx.Err() != nil {
			return nil
		}
		wait := e.cfg.RetryInterval
		var err error
		if conn == nil {
			conn, err = e.db.Conn(ctx)
		}
		var won bool
		if err == nil {
			won, err = e.tryLock(ctx, conn)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			e.setState(StateUnknown)
			wait = errBackoff.NextBackOff()
			e.log.Warn("leadership: cannot reach MySQL; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
			if conn != nil {
				e.discard(conn)
				conn = nil
			}
		case !won:
			errBackoff.Reset()
			e.setState(StateStandby)
		default:
			errBackoff.Reset()
			e.setState(StateLeader)
			keep := e.hold(ctx, conn, lead)
			if !keep {
				// The lock was lost or its connection failed: never reuse that connection.
				e.discard(conn)
				conn = nil
			}
			if ctx.Err() != nil {
				return nil
			}
			if keep {
				e.setState(StateStandby)
			} else {
				// Losing the lock usually means this connection or process is in trouble:
				// let a standby, which retries every RetryInterval, take over first.
				e.setState(StateUnknown)
				wait = e.cfg.RetryInterval + e.cfg.TakeoverDelay
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// tryLock asks for the lock without waiting.
func (e *Elector) tryLock(ctx context.Context, conn *sql.Conn) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.CheckTimeout)
	defer cancel()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", e.name).Scan(&got); err != nil {
		return false, fmt.Errorf("get lock %s: %w", e.name, err)
	}
	if !got.Valid {
		return false, fmt.Errorf("get lock %s: the server returned NULL", e.name)
	}
	return got.Int64 == 1, nil
}

// check reports errLost unless conn still holds the lock.
func (e *Elector) check(ctx context.Context, conn *sql.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.CheckTimeout)
	defer cancel()
	var held sql.NullBool
	if err := conn.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?) = CONNECTION_ID()", e.name).Scan(&held); err != nil {
		return fmt.Errorf("%w: check failed: %v", errLost, err)
	}
	if !held.Valid || !held.Bool {
		return errLost
	}
	return nil
}

// hold runs while conn holds the lock: the takeover delay, then lead under a context that is
// cancelled when the lock is lost. It returns whether conn is still usable (the lock was
// released cleanly).
func (e *Elector) hold(ctx context.Context, conn *sql.Conn, lead func(context.Context)) bool {
	ticker := time.NewTicker(e.cfg.CheckInterval)
	defer ticker.Stop()

	// Takeover delay: a previous holder that lost its connection notices within
	// CheckInterval + CheckTimeout; keep checking our own hold meanwhile.
	e.log.Debug("leadership: got the lock; waiting before leading", "delay", e.cfg.TakeoverDelay)
	delay := time.NewTimer(e.cfg.TakeoverDelay)
	defer delay.Stop()
waiting:
	for {
		select {
		case <-ctx.Done():
			return e.release(conn)
		case <-delay.C:
			break waiting
		case <-ticker.C:
			if err := e.check(ctx, conn); err != nil {
				if ctx.Err() != nil {
					return false
				}
				e.log.Warn("leadership: lost the lock before leading", "err", err)
				return false
			}
		}
	}

	e.log.Info("leadership: leading")
	leadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(leadCtx)
	}()
	for {
		select {
		case <-done:
			// Stopped by ctx, or lead returned on its own: give the lock back.
			if ctx.Err() != nil {
				e.log.Info("leadership: stopped leading; releasing the lock")
			} else {
				e.log.Warn("leadership: leader function returned; releasing the lock")
			}
			return e.release(conn)
		case <-ticker.C:
			if err := e.check(ctx, conn); err != nil {
				if ctx.Err() != nil {
					continue // stopping anyway; done follows
				}
				e.log.Error("leadership: lost the lock; stopping leader work", "err", err)
				cancel()
				e.setState(StateUnknown)
				<-done
				return false
			}
		}
	}
}

// release gives the lock back and reports whether conn may be reused.
func (e *Elector) release(conn *sql.Conn) bool {
	// ctx may be done already: release with a context of its own.
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.CheckTimeout)
	defer cancel()
	var released sql.NullInt64
	err := conn.QueryRowContext(ctx, "SELECT RELEASE_LOCK(?)", e.name).Scan(&released)
	if err != nil || !released.Valid || released.Int64 != 1 {
		e.log.Warn("leadership: release lock failed; closing its connection instead", "err", err)
		return false
	}
	e.log.Debug("leadership: released the lock")
	return true
}

// discard closes conn instead of returning it to the pool, so that a lock it may still hold
// is released by the server and never lingers in a pooled connection.
func (e *Elector) discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = conn.Close()
}
