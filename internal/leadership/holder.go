package leadership

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Holder is the MySQL connection that holds a lock: for a table's lock (LockName), the
// leading scheduler's dedicated connection.
type Holder struct {
	// ConnectionID is the holder's CONNECTION_ID().
	ConnectionID int64 `json:"connection_id"`
	// User and Host are the holder's account and client address ("host:port") as the process
	// list shows them; empty when the reader may not see other users' connections (MySQL's
	// PROCESS privilege).
	User string `json:"user"`
	Host string `json:"host"`
}

// LockHolder reports who holds the lock name (see LockName): ok is false when nobody does,
// so no scheduler leads the table. It only reads (IS_USED_LOCK and the process list), so
// anyone may ask, from any connection.
func LockHolder(ctx context.Context, db *sql.DB, name string) (h Holder, ok bool, err error) {
	var id sql.NullInt64
	if err := db.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?)", name).Scan(&id); err != nil {
		return Holder{}, false, fmt.Errorf("leadership: holder of %s: %w", name, err)
	}
	if !id.Valid {
		return Holder{}, false, nil
	}
	h.ConnectionID = id.Int64
	err = db.QueryRowContext(ctx, "SELECT `USER`, `HOST` FROM information_schema.`PROCESSLIST` WHERE `ID` = ?", id.Int64).Scan(&h.User, &h.Host)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return h, true, fmt.Errorf("leadership: holder of %s: connection %d: %w", name, id.Int64, err)
	}
	return h, true, nil
}
