package jobsdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Defaults of Options.
const (
	// LeaseDurationDefault is how long a reservation lives without a heartbeat. Shorter
	// recovers a crashed worker's jobs sooner, at the cost of more heartbeat writes.
	LeaseDurationDefault = 60 * time.Second
	// PriorityDefault is DataJoint's jobs.default_priority.
	PriorityDefault = 5
	// PriorityMin and PriorityMax bound a priority: the column is a signed tinyint.
	PriorityMin = -128
	PriorityMax = 127
	// StatementTimeoutDefault bounds each statement (each attempt of a transaction) but a
	// refresh's: MySQL answers these in milliseconds, so a statement still running after this
	// long is stuck behind a partition, a lock or a dead server, and is abandoned.
	StatementTimeoutDefault = 30 * time.Second
	// RefreshIntervalDefault is how often a scheduler refreshes a table from its key source
	// by default: a rescan costs about 2 s of MySQL time per million keys.
	RefreshIntervalDefault = time.Minute
	// RefreshTimeoutDefault bounds each set-based statement of a refresh, which reads the
	// whole key source (about 5 s per million keys on a small server).
	RefreshTimeoutDefault = 10 * time.Minute
)

// maxKeysPerStatement bounds the keys one statement addresses; larger batches are split.
// 1,000 is where batching stops paying (about 50,000 jobs/s on two cores, against 40,000 at 100) and keeps statements far below
// max_allowed_packet and the 65,535 placeholders of a prepared statement.
const maxKeysPerStatement = 1000

// Identity is written into a job at reservation (DataJoint's user, host, pid, version);
// connection_id is taken from the reserving connection.
type Identity struct {
	User    string // "" writes the connection's USER() (user@host), as DataJoint does
	Host    string // "" is filled by New with os.Hostname()
	PID     int    // 0 is filled by New with os.Getpid()
	Version string // at most 64 characters are kept (DataJoint's version[:64])
}

// Options configure a Jobs handle.
type Options struct {
	// KeepCompleted marks a completed job 'success' instead of deleting it, and lets Refresh
	// re-pend success rows whose target row was deleted. Default false, as DataJoint.
	KeepCompleted bool
	// LeaseDuration is the lease length set at reservation and renewed by Heartbeat.
	// Default LeaseDurationDefault.
	LeaseDuration time.Duration
	// Identity is written into reserved jobs.
	Identity Identity
	// DefaultPriority is the priority of the rows Ignore inserts (DataJoint's
	// jobs.default_priority). The zero value means PriorityDefault: an ignored job is never
	// run, so its priority is only shown.
	DefaultPriority int
	// StatementTimeout bounds every statement but a refresh's (and every attempt of a
	// transaction), in addition to the caller's context. Default StatementTimeoutDefault.
	StatementTimeout time.Duration
	// RefreshTimeout bounds each statement of a refresh. Default RefreshTimeoutDefault.
	RefreshTimeout time.Duration
	// Adopted, when not nil, is called with the columns added after a write (Reserve,
	// Heartbeat, Record, RecoverExpired, MarkDispatched, Ignore, RetryErrors) found the jobs
	// table declared by DataJoint, without jetjobs' columns, and adopted it (ALTER TABLE … ADD
	// COLUMN, never a drop). Declare, and Refresh which declares, adopt without calling it:
	// their callers asked for the table to be declared. Default nil: adoption is silent.
	Adopted func(columns []string)
}

// Jobs is the jobs table of one target. It is safe for concurrent use; every method is a
// statement or a short transaction on the pool, and holds nothing between calls.
type Jobs struct {
	db   *sql.DB
	t    *Target
	opts Options

	stmt     *statements // the SQL of this jobs table, built once
	declared atomic.Bool
	// claimIsolation is the isolation level of Claim's transactions.
	claimIsolation claimIsolation
}

// New returns the handle for t's jobs table; it does not touch the database.
func New(db *sql.DB, t *Target, opts Options) *Jobs {
	if opts.LeaseDuration <= 0 {
		opts.LeaseDuration = LeaseDurationDefault
	}
	if opts.DefaultPriority == 0 {
		opts.DefaultPriority = PriorityDefault
	}
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = StatementTimeoutDefault
	}
	if opts.RefreshTimeout <= 0 {
		opts.RefreshTimeout = RefreshTimeoutDefault
	}
	if opts.Identity.Host == "" {
		opts.Identity.Host, _ = os.Hostname()
	}
	if opts.Identity.PID == 0 {
		opts.Identity.PID = os.Getpid()
	}
	opts.Identity.User = clipRunes(opts.Identity.User, 255)
	opts.Identity.Host = clipRunes(opts.Identity.Host, 255)
	opts.Identity.Version = clipRunes(opts.Identity.Version, 64)
	return &Jobs{
		db:   db,
		t:    t,
		opts: opts,
		stmt: newStatements(t),
	}
}

// bounded is ctx bounded by the statement timeout.
func (j *Jobs) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, j.opts.StatementTimeout)
}

// Target returns the target the handle was made for.
func (j *Jobs) Target() *Target { return j.t }

// Options returns the options in effect, defaults filled in.
func (j *Jobs) Options() Options { return j.opts }

func clipRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

// newToken returns a fresh lease token: 32 random hex digits.
func newToken() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// validToken reports whether s looks like a token newToken made; an empty token must never
// address a row, since DataJoint's own reservations have an empty lease_token.
func validToken(s string) bool {
	if len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// chunks splits n items into [lo, hi) ranges of at most size.
func chunks(n, size int) [][2]int {
	var out [][2]int
	for lo := 0; lo < n; lo += size {
		out = append(out, [2]int{lo, min(lo+size, n)})
	}
	return out
}
