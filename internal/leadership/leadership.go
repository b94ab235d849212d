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
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/jetjobs/jetjobs/startstop"
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

// Term is the leader's work for one term of leadership. It is called when the elector starts
// leading, with a context that is cancelled the moment the lock is lost or the elector stops,
// and must return promptly once that context ends. A Term that returns earlier ends the term:
// the elector releases the lock and campaigns again.
type Term func(ctx context.Context)

// Elector campaigns for one named lock between Start and Stop, and runs its Term while it
// leads.
type Elector struct {
	startstop.Base
	db    *sql.DB
	name  string
	cfg   Config
	term  Term
	log   *slog.Logger
	state atomic.Int32
}

// New returns an elector for the lock name (see LockName) on db that runs term whenever it
// leads. It does not touch the database until Start.
func New(db *sql.DB, name string, cfg Config, term Term) *Elector {
	cfg = cfg.withDefaults()
	return &Elector{db: db, name: name, cfg: cfg, term: term, log: cfg.Logger.With("lock", name)}
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

// Start campaigns for the lock in the background until Stop is called or ctx ends. Each time
// the elector wins, it runs its Term, and waits for it to return before it releases the lock
// and campaigns again. Start on a running elector does nothing. It never fails: MySQL errors
// are logged and retried.
func (e *Elector) Start(ctx context.Context) error {
	ctx, ok, done := e.StartInit(ctx)
	if !ok {
		return nil
	}
	go func() {
		defer done()
		e.campaign(ctx)
	}()
	return nil
}

// campaign tries to take the lock every RetryInterval (backing off while MySQL fails), and
// holds it while it leads, until ctx ends.
func (e *Elector) campaign(ctx context.Context) {
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
	for ctx.Err() == nil {
		wait := e.attempt(ctx, &conn, errBackoff)
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// attempt tries once to take the lock on *conn (opening one when it is nil, and discarding a
// connection that failed or lost the lock), leads for as long as it holds the lock, and
// returns how long to wait before the next attempt.
func (e *Elector) attempt(ctx context.Context, conn **sql.Conn, errBackoff *backoff.ExponentialBackOff) time.Duration {
	var err error
	if *conn == nil {
		*conn, err = e.db.Conn(ctx)
	}
	var won bool
	if err == nil {
		won, err = e.tryLock(ctx, *conn)
	}
	switch {
	case ctx.Err() != nil:
		return 0
	case err != nil:
		e.setState(StateUnknown)
		wait := errBackoff.NextBackOff()
		e.log.Warn("leadership: cannot reach MySQL; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
		if *conn != nil {
			e.discard(*conn)
			*conn = nil
		}
		return wait
	case !won:
		errBackoff.Reset()
		e.setState(StateStandby)
		return e.cfg.RetryInterval
	}
	errBackoff.Reset()
	e.setState(StateLeader)
	keep := e.hold(ctx, *conn)
	if !keep {
		// The lock was lost or its connection failed: never reuse that connection.
		e.discard(*conn)
		*conn = nil
	}
	switch {
	case ctx.Err() != nil:
		return 0
	case keep:
		e.setState(StateStandby)
		return e.cfg.RetryInterval
	}
	// Losing the lock usually means this connection or process is in trouble: let a
	// standby, which retries every RetryInterval, take over first.
	e.setState(StateUnknown)
	return e.cfg.RetryInterval + e.cfg.TakeoverDelay
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

// hold runs while conn holds the lock: the takeover delay, then the term under a context that
// is cancelled when the lock is lost. It returns whether conn is still usable (the lock was
// released cleanly).
func (e *Elector) hold(ctx context.Context, conn *sql.Conn) bool {
	ticker := time.NewTicker(e.cfg.CheckInterval)
	defer ticker.Stop()
	if lead, keep := e.takeover(ctx, conn, ticker.C); !lead {
		return keep
	}
	return e.lead(ctx, conn, ticker.C)
}

// takeover waits TakeoverDelay after the lock was taken, checking it on every tick: a previous
// holder that lost its connection notices within CheckInterval + CheckTimeout. It reports
// whether to lead, and otherwise whether conn is still usable.
func (e *Elector) takeover(ctx context.Context, conn *sql.Conn, tick <-chan time.Time) (lead, keep bool) {
	e.log.Debug("leadership: got the lock; waiting before leading", "delay", e.cfg.TakeoverDelay)
	delay := time.NewTimer(e.cfg.TakeoverDelay)
	defer delay.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, e.release(conn)
		case <-delay.C:
			return true, false
		case <-tick:
			if err := e.check(ctx, conn); err != nil {
				if ctx.Err() == nil {
					e.log.Warn("leadership: lost the lock before leading", "err", err)
				}
				return false, false
			}
		}
	}
}

// lead runs the term until it returns, checking the lock on every tick and cancelling the
// term's context when it is lost. It returns whether conn is still usable.
func (e *Elector) lead(ctx context.Context, conn *sql.Conn, tick <-chan time.Time) bool {
	e.log.Info("leadership: leading")
	termCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.term(termCtx)
	}()
	for {
		select {
		case <-done:
			// Stopped by ctx, or the term returned on its own: give the lock back.
			if ctx.Err() != nil {
				e.log.Info("leadership: stopped leading; releasing the lock")
			} else {
				e.log.Warn("leadership: leader function returned; releasing the lock")
			}
			return e.release(conn)
		case <-tick:
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
