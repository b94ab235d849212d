package jobsdb

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"time"
)

// Lease is a reservation held by this process.
type Lease struct {
	Key           Key
	Token         string // lease_token written at reservation
	Attempts      int    // attempts after this reservation (1 for the first)
	Priority      int
	ScheduledTime time.Time
	ReservedTime  time.Time
	// Index is the position of the lease's key in the keys given to Reserve, or -1 when the
	// row matched a key spelled differently (a case-insensitive collation). Heartbeat
	// returns lost leases as they were given, so a caller may number its leases in Index.
	Index int
}

// Reserve reserves the given keys in one guarded statement and returns the leases won; keys
// that are not pending and due are skipped.
//
// One UPDATE … WHERE (key) IN (…) AND status='pending' AND scheduled_time<=NOW(3) per 1,000
// keys gives every row it wins the statement's fresh lease token; one SELECT by key and token
// reads the winners back. Deadlocks are retried. Leases come back in the order of keys;
// repeated keys count once.
func (j *Jobs) Reserve(ctx context.Context, keys []Key) ([]Lease, error) {
	keys, first, err := j.t.checkKeysIndexed(keys)
	if err != nil {
		return nil, fmt.Errorf("jobsdb: reserve: %w", err)
	}
	var leases []Lease
	for _, c := range chunks(len(keys), maxKeysPerStatement) {
		var won []Lease
		err := j.adopting(ctx, func() (err error) {
			won, err = j.reserveChunk(ctx, keys[c[0]:c[1]])
			return err
		})
		if err != nil {
			return leases, fmt.Errorf("jobsdb: reserve %s: %w", j.t.FullName(), j.noJobsTable(err))
		}
		for i := range won {
			if won[i].Index >= 0 {
				won[i].Index = first[c[0]+won[i].Index]
			}
		}
		leases = append(leases, won...)
	}
	return leases, nil
}

// ReserveOne reserves one key; ok is false when it is not pending and due.
func (j *Jobs) ReserveOne(ctx context.Context, key Key) (lease Lease, ok bool, err error) {
	leases, err := j.Reserve(ctx, []Key{key})
	if err != nil || len(leases) == 0 {
		return Lease{}, false, err
	}
	return leases[0], true, nil
}

func (j *Jobs) reserveChunk(ctx context.Context, keys []Key) ([]Lease, error) {
	id := j.opts.Identity
	token := newToken()
	args := keyArgs(keys, token, micros(j.opts.LeaseDuration), id.User, id.User, id.Host, id.PID, id.Version)
	q := j.stmt.reserve.sql(len(keys))
	// Run again with the same token, the statement is idempotent: rows it reserved before
	// are no longer pending, and the read-back finds them by the token. So an ambiguous
	// failure (the connection broke after the statement was sent) is settled by running it
	// again and reading back, never by guessing.
	var won int64
	ambiguous := false
	err := retrySettling(ctx, &ambiguous, func() error {
		ctx, cancel := j.bounded(ctx)
		defer cancel()
		res, err := j.db.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		won, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return nil, err
	}
	if won == 0 && !ambiguous {
		return nil, nil
	}
	var leases []Lease
	err = retrySettling(ctx, &ambiguous, func() error {
		ctx, cancel := j.bounded(ctx)
		defer cancel()
		var err error
		leases, err = j.readLeases(ctx, keys, token)
		return err
	})
	return leases, err
}

// readLeases reads back the rows of keys reserved with token, in the order of keys.
func (j *Jobs) readLeases(ctx context.Context, keys []Key, token string) ([]Lease, error) {
	codecs, _ := j.t.keyCodecs()
	args := append(keyArgs(keys), token)
	rows, err := j.db.QueryContext(ctx, j.stmt.readLeases.sql(len(keys)), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	position := make(map[string]int, len(keys))
	for i, k := range keys {
		position[keyID(k)] = i
	}
	var leases []Lease
	for rows.Next() {
		l := Lease{Key: make(Key, len(codecs)), Token: token}
		var scheduled, reserved nullTime
		dst := append(keyScanners(codecs, l.Key), &l.Attempts, &l.Priority, &scheduled, &reserved)
		if err := rows.Scan(dst...); err != nil {
			return nil, err
		}
		l.ScheduledTime, l.ReservedTime = scheduled.Time, reserved.Time
		leases = append(leases, l)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Rows come in primary key order; give them back in the caller's order. A key that matched
	// a row spelled differently (a case-insensitive collation) goes last, with the row's spelling.
	for i := range leases {
		p, ok := position[keyID(leases[i].Key)]
		if !ok {
			p = -1
		}
		leases[i].Index = p
	}
	sort.SliceStable(leases, func(a, b int) bool {
		return uint(leases[a].Index) < uint(leases[b].Index) // -1 sorts last
	})
	return leases, nil
}

// Heartbeat renews the leases and returns those that were lost (taken over or deleted), as
// they were given (every field unchanged), in their order.
//
// One UPDATE by key and token per 1,000 leases; when it changes fewer rows than leases, one
// SELECT tells which are still held.
func (j *Jobs) Heartbeat(ctx context.Context, leases []Lease) (lost []Lease, err error) {
	for _, c := range chunks(len(leases), maxKeysPerStatement) {
		var l []Lease
		err := j.adopting(ctx, func() (err error) {
			l, err = j.heartbeatChunk(ctx, leases[c[0]:c[1]])
			return err
		})
		if err != nil {
			return lost, fmt.Errorf("jobsdb: heartbeat %s: %w", j.t.FullName(), j.noJobsTable(err))
		}
		lost = append(lost, l...)
	}
	return lost, nil
}

func (j *Jobs) heartbeatChunk(ctx context.Context, leases []Lease) ([]Lease, error) {
	keys, tokens, err := j.leaseKeys(leases)
	if err != nil {
		return nil, err
	}
	q, args := j.stmt.heartbeat.sql(keys, tokens, []any{micros(j.opts.LeaseDuration)})
	var renewed int64
	err = retryTransient(ctx, func() error {
		ctx, cancel := j.bounded(ctx)
		defer cancel()
		res, err := j.db.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		renewed, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return nil, err
	}
	if renewed >= int64(len(leases)) {
		return nil, nil
	}
	// Fewer rows changed: some leases are lost, or were renewed twice within a millisecond
	// (no change). Ask which are still held.
	hctx, cancel := j.bounded(ctx)
	defer cancel()
	held, err := j.held(hctx, j.db, keys, tokens, false)
	if err != nil {
		return nil, err
	}
	var lost []Lease
	for i, l := range leases {
		if !held[keyID(keys[i])+tokens[i]] {
			lost = append(lost, l)
		}
	}
	return lost, nil
}

// leaseKeys validates the leases' keys and tokens.
func (j *Jobs) leaseKeys(leases []Lease) ([]Key, []string, error) {
	keys := make([]Key, len(leases))
	tokens := make([]string, len(leases))
	for i, l := range leases {
		k, err := j.t.CheckKey(l.Key)
		if err != nil {
			return nil, nil, err
		}
		if !validToken(l.Token) {
			return nil, nil, fmt.Errorf("lease of %s has no valid token (%q)", j.t.KeyString(k), l.Token)
		}
		keys[i], tokens[i] = k, l.Token
	}
	return keys, tokens, nil
}

// queryer is *sql.DB or *sql.Tx.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// holders locks, in tx, the rows of keys that are reserved and returns their lease tokens by
// keyID; a key whose row is not reserved (or gone) is absent.
func (j *Jobs) holders(ctx context.Context, tx *sql.Tx, keys []Key) (map[string]string, error) {
	codecs, _ := j.t.keyCodecs()
	rows, err := tx.QueryContext(ctx, j.stmt.holders.sql(len(keys)), keyArgs(keys)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	holders := make(map[string]string, len(keys))
	for rows.Next() {
		k := make(Key, len(codecs))
		var token string
		if err := rows.Scan(append(keyScanners(codecs, k), &token)...); err != nil {
			return nil, err
		}
		holders[keyID(k)] = token
	}
	return holders, rows.Err()
}

// held returns the set (keyID+token) of the given leases still reserved with their token,
// locking their rows when forUpdate.
func (j *Jobs) held(ctx context.Context, q queryer, keys []Key, tokens []string, forUpdate bool) (map[string]bool, error) {
	codecs, _ := j.t.keyCodecs()
	held := j.stmt.held
	if forUpdate {
		held = j.stmt.heldLocked
	}
	stmt, args := held.sql(keys, tokens, nil)
	rows, err := q.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	set := make(map[string]bool, len(keys))
	for rows.Next() {
		k := make(Key, len(codecs))
		var token string
		if err := rows.Scan(append(keyScanners(codecs, k), &token)...); err != nil {
			return nil, err
		}
		set[keyID(k)+token] = true
	}
	return set, rows.Err()
}
