// Package notify tells jetjobs' schedulers that keys may be new, so that their jobs reach a
// worker at once instead of at the next periodic refresh (jobs.refresh_interval).
//
// # Subjects
//
// Two core NATS subjects per table, next to the table's stream subjects (which they are not
// captured by), with the table's schema and name escaped as in every subject of jetjobs
// (queue.TableSubject: bytes outside [A-Za-z0-9_] become '-' and two lowercase hex digits):
//
//	<prefix>.<schema>.<table>.notify     keys of the target table's key source may be new
//	<prefix>.<schema>.<table>.inserted   rows with these keys were inserted into the table
//
// The prefix is nats.subject_prefix of the configuration, "jetjobs" by default. A notify of a
// target is taken by the scheduler leading that target: it adds the jobs of the keys that are
// in the key source and have neither a target row nor a job, and publishes them at once. An
// inserted of any table (a manual parent such as a session table, or a computed table whose
// job just completed: workers publish those themselves) is taken by the leader of every
// configured target whose key source depends on the table (its primary parents, read from
// the foreign keys, or the tables a configured key source names in depends_on): the keys are
// renamed along the foreign key and refreshed the same way.
//
// # Payload
//
// A JSON array of objects, each a key: column names to values, some or all of the key
// columns (a partial key stands for every key it matches). Numbers for numeric columns,
// strings for the others (decimal either way; dates "YYYY-MM-DD", datetimes "YYYY-MM-DD
// hh:mm:ss[.ffffff]", binary as base64, binary(16) as a UUID), as the jobs' messages carry
// them. A single object is taken as an array of one.
//
//	[{"subject_id": 1, "session_id": 3}, {"subject_id": 2}]
//
// Only keys travel, never SQL: the scheduler types every value by its column and sends it
// as a placeholder. A payload that is not such an array, or names a column that is not a key
// column, or holds a value its column cannot hold, is refused whole and logged by the
// scheduler with the reason; it changes no row.
//
// # Delivery
//
// Core NATS: at most once, to the schedulers listening at that moment. A notify sent while
// no scheduler runs, or lost on the way, only waits for the periodic refresh, which finds
// every key of the key source (and the refresh a scheduler makes when it takes the lead).
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetjobs/jetjobs/jobsdb"
	"github.com/jetjobs/jetjobs/queue"
)

// The last tokens of the subjects.
const (
	NotifyToken   = queue.NotifyToken
	InsertedToken = queue.InsertedToken
)

// MaxKeysPerMessage is the most keys Keys and Inserted put in one message: longer lists are
// sent in several.
const MaxKeysPerMessage = 1000

// FlushTimeout bounds the wait for the server's answer to the flush when ctx has no deadline.
const FlushTimeout = 10 * time.Second

// ErrBadPayload marks what Decode refuses.
var ErrBadPayload = errors.New("bad notify payload")

// Subject is the notify subject of target table "schema.table" under prefix ("" for the
// default, "jetjobs"): <prefix>.<schema>.<table>.notify.
func Subject(prefix, table string) (string, error) { return subject(prefix, table, NotifyToken) }

// InsertedSubject is the inserted subject of table "schema.table" under prefix ("" for the
// default): <prefix>.<schema>.<table>.inserted.
func InsertedSubject(prefix, table string) (string, error) {
	return subject(prefix, table, InsertedToken)
}

func subject(prefix, table, token string) (string, error) {
	schema, name, err := jobsdb.SplitTableName(table)
	if err != nil {
		return "", fmt.Errorf("notify: %w", err)
	}
	if schema == "" {
		return "", fmt.Errorf("notify: table %q: want schema.table", table)
	}
	base, err := queue.TableSubject(prefix, schema, name)
	if err != nil {
		return "", fmt.Errorf("notify: %w", err)
	}
	return base + "." + token, nil
}

// Keys tells the scheduler leading target table "schema.table" that these keys of its key
// source may be new: it refreshes the table for them at once and publishes their jobs. Each
// key maps some or all key columns to values (see the package doc for their types). prefix is
// the subject prefix ("" for the default). It returns once the server has the messages (a
// flush: within FlushTimeout when ctx has no deadline), or with the error; nobody listening is not an error.
func Keys(ctx context.Context, nc *nats.Conn, prefix, table string, keys ...map[string]any) error {
	subj, err := Subject(prefix, table)
	if err != nil {
		return err
	}
	return publish(ctx, nc, subj, keys)
}

// Inserted tells the schedulers of every target whose key source depends on table
// "schema.table" that rows with these keys were inserted into it: each refreshes its target
// for the keys, renamed along its foreign key. Workers publish it for the targets they
// complete; call it after inserting into a parent table (say, a new session). It returns as
// Keys does.
func Inserted(ctx context.Context, nc *nats.Conn, prefix, table string, keys ...map[string]any) error {
	subj, err := InsertedSubject(prefix, table)
	if err != nil {
		return err
	}
	return publish(ctx, nc, subj, keys)
}

func publish(ctx context.Context, nc *nats.Conn, subj string, keys []map[string]any) error {
	if len(keys) == 0 {
		return nil
	}
	for start := 0; start < len(keys); start += MaxKeysPerMessage {
		payload, err := Encode(keys[start:min(start+MaxKeysPerMessage, len(keys))])
		if err != nil {
			return err
		}
		if err := nc.Publish(subj, payload); err != nil {
			return fmt.Errorf("notify: publish on %s: %w", subj, err)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, FlushTimeout)
		defer cancel()
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("notify: publish on %s: %w", subj, err)
	}
	return nil
}

// Encode is the payload of keys: a JSON array of objects. A key without a column, or with a
// value that is not a number or a string (or a type that marshals to one), is refused.
func Encode(keys []map[string]any) ([]byte, error) {
	data, err := json.Marshal(keys)
	if err != nil {
		return nil, fmt.Errorf("notify: encode keys: %w", err)
	}
	if _, err := Decode(data); err != nil { // the same rules as the receiving side
		return nil, fmt.Errorf("notify: encode keys: %w", err)
	}
	return data, nil
}

// Decode reads a payload: a JSON array of objects (or one object), each naming at least one
// column, each value a number (as a json.Number) or a string, no column twice. Anything else
// is ErrBadPayload, with what is wrong and where.
func Decode(data []byte) ([]map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, badPayload("not JSON: %v", err)
	}
	var keys []map[string]any
	switch tok {
	case json.Delim('{'):
		k, err := decodeKey(dec, 0)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			tok, err := dec.Token()
			if err != nil {
				return nil, badPayload("key %d: not JSON: %v", i, err)
			}
			if tok != json.Delim('{') {
				return nil, badPayload("key %d: want an object of column names to values, got %s", i, describe(tok))
			}
			k, err := decodeKey(dec, i)
			if err != nil {
				return nil, err
			}
			keys = append(keys, k)
		}
		if _, err := dec.Token(); err != nil { // the closing ]
			return nil, badPayload("not JSON: %v", err)
		}
	default:
		return nil, badPayload("want a JSON array of objects (keys), got %s", describe(tok))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badPayload("unexpected data after the JSON value")
	}
	return keys, nil
}

// decodeKey reads the members of an object whose '{' was read.
func decodeKey(dec *json.Decoder, i int) (map[string]any, error) {
	k := map[string]any{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, badPayload("key %d: not JSON: %v", i, err)
		}
		col := tok.(string) // object keys are strings
		tok, err = dec.Token()
		if err != nil {
			return nil, badPayload("key %d: not JSON: %v", i, err)
		}
		switch tok.(type) {
		case json.Number, string:
		default:
			return nil, badPayload("key %d: column %q: want a number or a string, got %s", i, col, describe(tok))
		}
		if _, dup := k[col]; dup {
			return nil, badPayload("key %d: column %q is given twice", i, col)
		}
		k[col] = tok
	}
	if _, err := dec.Token(); err != nil { // the closing }
		return nil, badPayload("key %d: not JSON: %v", i, err)
	}
	if len(k) == 0 {
		return nil, badPayload("key %d names no column", i)
	}
	return k, nil
}

func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "an array"
	case nil:
		return "null"
	case bool:
		return fmt.Sprintf("%v", v)
	case json.Number:
		return "the number " + v.String()
	case string:
		return "a string"
	}
	return fmt.Sprintf("%v", tok)
}

func badPayload(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadPayload, fmt.Sprintf(format, args...))
}
